"""X2CT-CNN and X2CT-GAN: the baseline every paper compares with.

Ying et al., "X2CT-GAN: Reconstructing CT from Biplanar X-Rays with Generative
Adversarial Networks", CVPR 2019 (facts in docs/methods.md; layer layout
checked against the authors' released code, configuration
``multiview_network_denseUNetFuse_transposed``).

Generator, per view: a 2D DenseNet encoder (7x7 stem with 64 channels, then
at every scale a stride-2 3x3 conv, a dense block [6, 12, 24, 16, 6] with
growth 32 and bottleneck 4, and a 1x1 compression to half the channels; the
last scale is average-pooled). Three connections bring it into 3D:

* A: a fully connected layer from the pooled code to a 4^3 x 256 volume
  (dropout 0.5, ReLU);
* B: at every encoder scale a 1x1 conv, a copy of the 2D features along the
  view's rays (``x2ct.models.lifting``), and a 3x3x3 conv;
* C: the views' 3D features, brought into the CT frame, averaged at every
  decoder scale; the average goes back into each view's decoder and into a
  fused decoder.

Decoders: 256, 128, 64, 32, 16 and 16 channels from 4^3 up to 128^3; each
step merges connection B (3x3x3 conv), runs 3x3x3 convs (2 in a view's decoder,
1 in the fused one) and upsamples with a ConvTranspose3d; InstanceNorm3d and
ReLU throughout; output 7x7x7 conv + ReLU on the fused decoder. With one
view there is no fusion: the view's own decoder produces the volume (the
authors' single-view network).

The GAN variant adds the critic: a conditional 3D PatchGAN (ndf 64, 3 layers)
that sees the volume concatenated with the X-rays lifted into it. Its losses
(10 x MSE + 10 x projection L1 + 0.1 x LSGAN) live in ``x2ct.losses``.

Departures from the released code:

* the view branches work directly in the CT frame: connection B lifts each
  view with ``lift_view`` at its gantry angle, so connection C's permutation
  is built in and any angle works; connection A's volume is laid out in the
  CT frame (the original permutes a view-frame layout, which a fully
  connected layer absorbs);
* each view's finest decoder step and output head, which the fused output
  never uses, are left out, as are conv biases in front of a normalisation
  (they cancel); the two-view paper preset has 61.69M parameters;
* more than two views are accepted (the average of connection C runs over all);
* the critic is MONAI's ``PatchDiscriminator``, whose last conv pads by 1
  instead of 2: 17^3 patch scores at 128^3 instead of 19^3.

None of these loses information at inference: the authors' released
generators (one and two views) import exactly into the paper preset
(``x2ct.published``; ``x2ct catalog import-published``). Their per-view 3D
kernels and connection A's rows are permuted into the CT frame, the biases
an InstanceNorm cancels are dropped, and the biases that reach connection A
through the last average pool are folded into its bias; a test checks our
output against theirs for the same weights.

The dense blocks are MONAI's DenseNet-BC blocks (``densenet._DenseBlock``,
private but unchanged for years; MONAI has no public pre-activation
bottleneck block).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_norm_layer
from monai.networks.nets.densenet import _DenseBlock  # DenseNet-BC block (pre-activation bottleneck layers)
from torch import nn

from x2ct.errors import InputError
from x2ct.models.base import ModelSpec, ReconstructionModel
from x2ct.models.blocks import PatchGANCritic
from x2ct.models.lifting import lift_per_sample
from x2ct.models.registry import register

NORM = "instance"

PRESETS = {
    # 128^2 views -> 128^3, the published network (61.7M parameters with two views). ``n_views`` is a preset
    # argument so that a card or training config may override it (the authors' one-view network: n_views=1).
    "paper": dict(n_views=2, view_size=128, stem=64, dense_blocks=(6, 12, 24, 16, 6), growth=32,
                  decoder_channels=(16, 16, 32, 64, 128, 256)),
    # Same five scales at 128^3, a narrow DenseNet and decoder.
    "small": dict(n_views=2, view_size=128, stem=16, dense_blocks=(2, 4, 6, 4, 2), growth=8,
                  decoder_channels=(4, 4, 8, 16, 32, 64)),
    "tiny": dict(n_views=2, view_size=16, stem=8, dense_blocks=(1, 1), growth=4, decoder_channels=(4, 4, 8)),
}
CRITIC_PRESETS = {
    "paper": dict(channels=64, num_layers=3),
    "small": dict(channels=16, num_layers=3),
    "tiny": dict(channels=4, num_layers=2),
}


def _conv3d(cin: int, cout: int, kernel_size: int = 3) -> Convolution:
    """Conv3d + InstanceNorm3d + ReLU."""
    return Convolution(3, cin, cout, kernel_size=kernel_size, norm=NORM, act="relu", bias=False)


def _up3d(cin: int, cout: int) -> Convolution:
    """ConvTranspose3d (3x3x3, stride 2) + InstanceNorm3d + ReLU: doubles each side."""
    return Convolution(3, cin, cout, strides=2, kernel_size=3, is_transposed=True, norm=NORM, act="relu",
                       bias=False)


def _norm_relu_conv2d(cin: int, cout: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Pre-activation 2D conv, as between DenseNet blocks."""
    return nn.Sequential(get_norm_layer(NORM, spatial_dims=2, channels=cin), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, bias=False))


class DenseViewEncoder(nn.Module):
    """One view's 2D DenseNet encoder; returns the feature map of every scale and the pooled code."""

    def __init__(self, stem: int, dense_blocks: Sequence[int], growth: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 7, padding=3, padding_mode="reflect", bias=False),
                                  get_norm_layer(NORM, spatial_dims=2, channels=stem), nn.ReLU(inplace=True))
        self.channels = [stem]  # channels of each scale's output, finest first; the last is the code
        stages, c = [], stem
        for k, n_layers in enumerate(dense_blocks):
            layers = [_norm_relu_conv2d(c, c, 3, stride=2),
                      _DenseBlock(2, n_layers, c, bn_size=4, growth_rate=growth, dropout_prob=0.0, norm=NORM)]
            c += n_layers * growth
            if k < len(dense_blocks) - 1:
                layers.append(_norm_relu_conv2d(c, c // 2, 1))
                c //= 2
            else:
                layers.append(nn.AdaptiveAvgPool2d(1))
            stages.append(nn.Sequential(*layers))
            self.channels.append(c)
        self.stages = nn.ModuleList(stages)

    def forward(self, view: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(view)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


class ConnectionB(nn.Module):
    """1x1 conv, copy along the view's rays into a cube, 3x3x3 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.compress = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False),
                                      get_norm_layer(NORM, spatial_dims=2, channels=cout), nn.ReLU(inplace=True))
        self.conv = _conv3d(cout, cout)

    def forward(self, features: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        return self.conv(lift_per_sample(self.compress(features), angles, features.shape[-1]))


class ViewBranch(nn.Module):
    """Encoder, connections A and B, and the view's own decoder steps (coarse to fine)."""

    def __init__(self, view_size: int, stem: int, dense_blocks: Sequence[int], growth: int,
                 decoder_channels: Sequence[int], convs_per_step: Sequence[int], last_step: bool):
        super().__init__()
        levels = len(dense_blocks)
        self.begin = view_size // 2**levels
        self.decoder_channels = tuple(decoder_channels)
        self.encoder = DenseViewEncoder(stem, dense_blocks, growth)
        d = self.decoder_channels
        self.connection_a = nn.Sequential(nn.Flatten(), nn.Linear(self.encoder.channels[-1], self.begin**3 * d[-1]),
                                          nn.Dropout(0.5), nn.ReLU(inplace=True))
        self.connection_b = nn.ModuleList(ConnectionB(self.encoder.channels[k], d[k]) for k in range(levels))
        # Scale k (0 = finest) merges connection B (k < levels), runs convs, then upsamples (k > 0).
        # A fused model has no use for the finest step of a view: the fused decoder ends there.
        self.merge = nn.ModuleList(_conv3d(2 * d[k], d[k]) for k in range(levels))
        self.steps = nn.ModuleDict({
            str(k): nn.Sequential(*[_conv3d(d[k], d[k]) for _ in range(convs_per_step[k])],
                                  *([_up3d(d[k], d[k - 1])] if k > 0 else []))
            for k in range(0 if last_step else 1, levels + 1)})

    def encode(self, view: torch.Tensor, angles: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """View (B, 1, S, S) -> connection A cube and connection B cubes (finest first)."""
        features = self.encoder(view)
        top = self.connection_a(features[-1]).reshape(view.shape[0], self.decoder_channels[-1], *(self.begin,) * 3)
        return top, [link(f, angles) for link, f in zip(self.connection_b, features[:-1])]

    def step(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return self.steps[str(k)](x)


class X2CTGenerator(ReconstructionModel):
    """X2CT-GAN's generator for ``n_views`` views of ``view_size``^2 -> a ``view_size``^3 volume."""

    def __init__(self, spec: ModelSpec, stem: int, dense_blocks: Sequence[int], growth: int,
                 decoder_channels: Sequence[int]):
        super().__init__(spec)
        levels, n_views, d = len(dense_blocks), spec.view_counts[0], tuple(decoder_channels)
        if len(d) != levels + 1:
            raise InputError(f"X2CT needs {levels + 1} decoder channels for {levels} dense blocks, got {len(d)}.")
        if spec.view_size % 2**levels or spec.view_size // 2**levels < 2:
            raise InputError(f"X2CT with {levels} dense blocks needs a view size that is a multiple of {2**levels} "
                             f"and at least {2 ** (levels + 1)}, got {spec.view_size}; change the size or the blocks.")
        self.fused = n_views > 1
        view_convs = (1,) + (2,) * (levels - 1) + (0,)  # convs per decoder step, finest first
        self.branches = nn.ModuleList(
            ViewBranch(spec.view_size, stem, dense_blocks, growth, d, view_convs, last_step=not self.fused)
            for _ in range(n_views))
        if self.fused:
            self.fused_merge = nn.ModuleList(_conv3d(2 * d[k], d[k]) for k in range(levels))
            self.fused_steps = nn.ModuleList(
                nn.Sequential(*[_conv3d(d[k], d[k]) for _ in range(1 if k < levels else 0)],
                              *([_up3d(d[k], d[k - 1])] if k > 0 else []))
                for k in range(levels + 1))
        self.head = nn.Sequential(nn.Conv3d(d[0], 1, kernel_size=7, padding=3), nn.ReLU())
        self.levels = levels

    def reconstruct(self, views: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        encoded = [branch.encode(views[:, i : i + 1], angles[:, i]) for i, branch in enumerate(self.branches)]
        per_view = [top for top, _ in encoded]
        fused = None
        for k in range(self.levels, -1, -1):  # coarsest (connection A) to finest
            if k < self.levels:  # merge each view's decoder state with its connection B
                per_view = [branch.merge[k](torch.cat([x, links[k]], dim=1))
                            for branch, x, (_, links) in zip(self.branches, per_view, encoded)]
            average = torch.stack(per_view).mean(dim=0)  # connection C
            if self.fused:
                merged = average if fused is None else self.fused_merge[k](torch.cat([average, fused], dim=1))
                fused = self.fused_steps[k](merged)
                if k == 0:
                    break
            per_view = [branch.step(k, average) for branch in self.branches]
        return self.head(fused if self.fused else per_view[0])


def _spec(name: str, preset: str, n_views: int, view_size: int) -> ModelSpec:
    return ModelSpec(name=name, preset=preset, view_counts=(n_views,), view_size=view_size, volume_size=view_size,
                     protocol="x2ct", default_angles=(0.0, 90.0))


def build_generator(name: str, preset: str, n_views: int = 2, view_size: int = 128, stem: int = 64,
                    dense_blocks: Sequence[int] = (6, 12, 24, 16, 6), growth: int = 32,
                    decoder_channels: Sequence[int] = (16, 16, 32, 64, 128, 256)) -> X2CTGenerator:
    """The generator under a registry name (x2ct-cnn, x2ct-gan and projection-gan share it).

    ``decoder_channels`` run from the finest scale (the volume) to the
    coarsest (connection A), one more than there are dense blocks.
    """
    return X2CTGenerator(_spec(name, preset, n_views, view_size), stem, tuple(dense_blocks), growth,
                         tuple(decoder_channels))


def build_critic(preset: str, n_views: int = 2, channels: int = 64, num_layers: int = 3) -> PatchGANCritic:
    """X2CT-GAN's conditional 3D PatchGAN: volume + views lifted into it -> patch scores."""
    return PatchGANCritic(spatial_dims=3, channels=channels, num_layers=num_layers, conditional=True,
                          n_views=n_views)


@register("x2ct-cnn", presets=PRESETS, summary="X2CT generator trained without a critic (MSE + projection loss)",
          paper="Ying et al., X2CT-GAN, CVPR 2019 (CNN variant)")
def build_cnn(preset: str, **kwargs) -> X2CTGenerator:
    return build_generator("x2ct-cnn", preset, **kwargs)


@register("x2ct-gan", presets=PRESETS, summary="X2CT-GAN: DenseNet view encoders, 2D-to-3D connections, 3D decoder",
          paper="Ying et al., X2CT-GAN, CVPR 2019", critic=build_critic, critic_presets=CRITIC_PRESETS)
def build_gan(preset: str, **kwargs) -> X2CTGenerator:
    return build_generator("x2ct-gan", preset, **kwargs)
