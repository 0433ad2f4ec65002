"""Repeat and Concatenate: X-rays repeated into volumes, then 3D-to-3D translation.

Corona-Figueroa, Shum and Willcocks, "Repeat and Concatenate: 2D to 3D Image
Translation with 3D to 3D Generative Modeling" (seed 000; facts in
docs/methods.md, details checked against the authors' released code and its
``experiments/2v.yaml``).

Each view is repeated along its own rays into a volume (``lift_views``: the
frontal view along axis 1, the lateral along axis 2, an oblique view along its
rotated direction), the N view-volumes are stacked as N channels, and MONAI's
Swin UNETR (``in_channels=N, out_channels=1``, feature size 48: 62.2M
parameters) maps them to the CT. One network is trained per number of views
(1, 2, 4 or 8 in the paper); the architecture does not change with N.

Training (``x2ct.losses.optimal_transport``): neural optimal transport, the
de-biased Sinkhorn divergence between features of a frozen random 3D CNN plus
0.1 x the critic's score; the critic is this module's ``ResNetCritic``.

Faithful to the released code:

* intensities: the Durham protocol (HU clipped to [-1000, 1000], each CT
  min-max normalised to [0, 1]); ``protocol="x2ct"`` trains it on X2CT's;
* no output activation: the network's raw output trains against CT in
  [0, 1], and predictions are clipped to [0, 1] for evaluation; so this
  model clips in eval mode and returns the raw output in training mode;
* the released size is 64^3 volumes (``image_size: 64``), with the views
  resized to the volume's side before repeating; ``paper`` and ``small`` take
  the project's 128^2 views and resize them to 64^2 (antialiased bilinear).
  ``volume_size=128`` gives the 128^3 protocol of the other papers.

Departures:

* orientation: the public code's alignment test ``if v == 2 or 6`` is always
  true, so every view is repeated in the same orientation. We lift each view
  along its true rays (the paper's intent: perpendicular views transposed);
  ``same_orientation_bug=True`` reproduces the code for comparison. Oblique
  views are lifted along their rotated rays, which the paper's Fig. 6 calls
  "coarse alignment" and found worse than leaving them unaligned on its 4
  oblique views (PSNR 22.5 vs 24.1 dB); with the bug flag they stay unaligned;
* the ``tiny`` preset (tests only) uses group instead of instance norm,
  because at 32^3 Swin UNETR's bottleneck is 1 voxel, which instance norm
  refuses in training mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, SABlock
from monai.networks.nets import SwinUNETR
from torch import nn

from x2ct.errors import InputError
from x2ct.models.base import ModelSpec, ReconstructionModel
from x2ct.models.lifting import lift_views_per_sample
from x2ct.models.registry import register

SWIN = dict(depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), norm_name="instance")

PRESETS = {
    # The released configuration: 64^3, feature size 48 (62.2M parameters with two views).
    "paper": dict(view_size=128, volume_size=64, feature_size=48, **SWIN),
    # Feature size 12 (4.1M parameters), same depths; 64^3 so it trains on a CPU.
    "small": dict(view_size=128, volume_size=64, feature_size=12, **SWIN),
    "tiny": dict(view_size=32, volume_size=32, feature_size=12, depths=(1, 1, 1, 1), num_heads=(3, 6, 12, 24),
                 norm_name=("group", {"num_groups": 3})),
}
CRITIC_PRESETS = {
    "paper": dict(volume_size=64, filters=32),
    "small": dict(volume_size=64, filters=8),
    "tiny": dict(volume_size=32, filters=4),
}

#: The paper's view sets (8 DRRs 45 degrees apart; views 0 and 2 for two views, 0, 2, 4, 6 for four).
PAPER_ANGLES = {1: (0.0,), 2: (0.0, 90.0), 4: (0.0, 90.0, 180.0, 270.0), 8: tuple(45.0 * i for i in range(8))}

LEAKY = ("leakyrelu", {"negative_slope": 0.2})


def _swin_unetr(**kwargs) -> SwinUNETR:
    """MONAI's SwinUNETR calls ``.item()`` while it builds, which the meta device refuses: build on the CPU."""
    device = torch.get_default_device()
    if device.type != "meta":
        return SwinUNETR(**kwargs)
    with torch.device("cpu"):
        net = SwinUNETR(**kwargs)
    return net.to(device)


class RepeatConcat(ReconstructionModel):
    """Views lifted along their rays, stacked as channels, Swin UNETR to a volume (see module docstring)."""

    def __init__(self, spec: ModelSpec, feature_size: int, depths, num_heads, norm_name,
                 same_orientation_bug: bool = False):
        super().__init__(spec)
        self.same_orientation_bug = same_orientation_bug
        self.net = _swin_unetr(in_channels=spec.view_counts[0], out_channels=1, feature_size=feature_size,
                               depths=tuple(depths), num_heads=tuple(num_heads), norm_name=norm_name)

    def lift(self, views: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Views (B, V, S, S) -> the network's input (B, V, D, D, D)."""
        side = self.spec.volume_size
        if views.shape[-1] != side:
            views = F.interpolate(views, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        if self.same_orientation_bug:
            angles = torch.zeros_like(angles)
        return lift_views_per_sample(views, angles, side)

    def reconstruct(self, views: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        volume = self.net(self.lift(views, angles))
        return volume if self.training else volume.clamp(0.0, 1.0)


class _ResidualBlock(nn.Module):
    """``LeakyReLU(shortcut(x) + 0.1 * conv(LeakyReLU(conv(x))))``: the WGAN-QC critic block, in 3D, no norm."""

    def __init__(self, c_in: int, c_out: int, res_ratio: float):
        super().__init__()
        hidden = min(c_in, c_out)
        self.residual = nn.Sequential(
            Convolution(3, c_in, hidden, kernel_size=3, act=LEAKY, norm=None),
            Convolution(3, hidden, c_out, kernel_size=3, conv_only=True))
        self.shortcut = (nn.Identity() if c_in == c_out
                         else Convolution(3, c_in, c_out, kernel_size=1, conv_only=True, bias=False))
        self.res_ratio = res_ratio
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.res_ratio * self.residual(x))


class _SelfAttention3D(nn.Module):
    """Group norm, single-head self-attention over all voxels (MONAI ``SABlock``), residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(32 if channels > 32 and channels % 32 == 0 else 1, channels, eps=1e-6)
        self.attention = SABlock(channels, num_heads=1, qkv_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, voxels, C)
        return x + self.attention(tokens).transpose(1, 2).reshape(x.shape)


class ResNetCritic(nn.Module):
    """The neural-OT critic (potential) of seed 000: a residual 3D CNN with self-attention.

    Layout of the released code (its ``ResNet_D3D``, after WGAN-QC's ResNet
    discriminator): 3x3x3 stem with ``filters`` channels, two residual blocks,
    then per level a 3x3x3 stride-2 average pool and two residual blocks
    (channels doubling, at most ``max_filters``) down to 4^3, self-attention at
    the last level, and a linear layer to one score per volume. No norm
    layers, no gradient penalty. Scores are unbounded (a potential, not a
    probability).
    """

    def __init__(self, volume_size: int = 64, in_channels: int = 1, filters: int = 32, max_filters: int = 512,
                 attention: bool = True, res_ratio: float = 0.1):
        super().__init__()
        levels = math.log2(volume_size / 4)
        if volume_size < 4 or levels != int(levels):
            raise InputError(f"The repeat-concat critic needs a volume side of 4 x a power of two, got {volume_size}.")
        self.volume_size, self.in_channels = volume_size, in_channels
        width = [min(filters * 2 ** i, max_filters) for i in range(int(levels) + 2)]
        layers = [Convolution(3, in_channels, width[0], kernel_size=3, act=LEAKY, norm=None),
                  _ResidualBlock(width[0], width[0], res_ratio), _ResidualBlock(width[0], width[1], res_ratio)]
        for i in range(1, int(levels) + 1):
            layers += [nn.AvgPool3d(3, stride=2, padding=1),
                       _ResidualBlock(width[i], width[i], res_ratio), _ResidualBlock(width[i], width[i + 1], res_ratio)]
        if attention:
            layers.append(_SelfAttention3D(width[-1]))
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(width[-1] * 4 ** 3, 1)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Volumes (B, C, D, D, D) -> scores (B, 1)."""
        side, c = self.volume_size, self.in_channels
        if volume.ndim != 5 or tuple(volume.shape[1:]) != (c, side, side, side):
            raise InputError(f"The repeat-concat critic scores volumes (B, {c}, {side}, {side}, {side}), got "
                             f"{tuple(volume.shape)}; build it with volume_size matching the model.")
        return self.score(self.features(volume).flatten(1))


def build_critic(preset: str = "small", **kwargs) -> ResNetCritic:
    """The critic for ``preset`` (pass ``volume_size`` when the model's was overridden)."""
    return ResNetCritic(**kwargs)


@register("repeat-concat", presets=PRESETS, critic_presets=CRITIC_PRESETS,
          summary="X-rays repeated along their rays, concatenated, Swin UNETR 3D-to-3D (neural OT training)",
          paper="seed 000: Corona-Figueroa et al., Repeat and Concatenate: 2D to 3D Image Translation with "
                "3D to 3D Generative Modeling",
          critic=build_critic)
def build(preset: str = "small", *, view_size: int, volume_size: int, feature_size: int, depths, num_heads,
          norm_name, n_views: int = 2, same_orientation_bug: bool = False, protocol: str = "durham") -> RepeatConcat:
    """One network for ``n_views`` views (the paper trains one per view count)."""
    if volume_size % 32:
        raise InputError(f"repeat-concat needs a volume side divisible by 32 (Swin UNETR), got {volume_size}.")
    if n_views < 1:
        raise InputError(f"repeat-concat needs at least one view, got n_views={n_views}.")
    spec = ModelSpec(name="repeat-concat", preset=preset, view_counts=(n_views,), view_size=view_size,
                     volume_size=volume_size, protocol=protocol,
                     default_angles=PAPER_ANGLES.get(n_views, tuple(180.0 * i / n_views for i in range(n_views))))
    return RepeatConcat(spec, feature_size, depths, num_heads, norm_name, same_orientation_bug)
