"""Single-image tomography (Henzler, Rasche, Ropinski, Ritschel 2018; seed 004).

A 2D encoder-decoder with skip connections and residual blocks maps one
X-ray to a density volume whose depth is encoded as feature channels: the
last layer has one output channel per slice along the view's rays. Trained
with an L2 loss on the voxels. The paper's second stage, fusion with the
X-ray, is ``x2ct.models.fusion.beer_lambert_fusion`` and applies to any
model's output, so it is not part of this network.

No code is public; reconstructed from the paper's text (Sec. 4.1, Fig. 4):

* basic block = conv + batch norm + ReLU; a "3-residual block" = three basic
  blocks with an identity shortcut (a projection convolution where the
  shape changes) -> MONAI
  ``ResidualUnit(subunits=3, norm=BATCH, act=RELU)``;
* residual blocks at the input resolution before any downsampling, then the
  encoder halves the resolution per level down to a minimal 8x8 (the paper's
  best trade-off) while the channels grow to 256; the decoder upsamples by
  deconvolution without reducing the channel count, with skip connections
  from the encoder level of the same resolution, and a last convolution
  turns the features into one channel per output slice (256^2 in -> 128^3
  out in the paper, 128 channels = 128 slices).
* ``norm="instance"`` (ours, a departure): per-image normalisation with the
  same learnt scale and shift in place of batch norm. A batch norm trained on
  batches of one normalises each image by its own statistics, but at
  inference uses running averages that this network does not tolerate
  (henzler-1v, trained at batch 1 with batch norm, scored 18.6 dB with the
  running averages and 20.5 dB with each image's own statistics on the
  quality benchmark's held-out cases). Instance norm computes in training
  exactly what batch norm does at batch 1, and the same at inference.
* Not stated in the paper, so ours: the encoder's channel schedule
  (32, 64, 128, 256, 256, 256 for 256^2 input), strided residual blocks for
  downsampling, skips merged by concatenation, a 3x3 output convolution and
  a sigmoid output (the paper gives no output activation; densities must be
  >= 0 for fusion and our protocol is [0, 1]).

Orientation (x2ct.models.lifting convention): the network predicts the
volume in the view's own frame (rows = axis 0, channels = depth along the
ray, away from the detector, columns = the view's columns), which is then
rotated into the canonical frame. For a frontal view (0 degrees) the channels
become axis 1 (anterior -> posterior) and columns axis 2, so a prediction
that is constant along the channels equals ``lift_view(view, 0)``; at
90 degrees channels run along -axis 2 (patient left -> right). Henzler et al.
trained on views from random directions and predicted view-aligned volumes;
any angle works here (multiples of 90 degrees exactly, others by bilinear
resampling in the axial plane).

Ours, not the paper's: two (or more) views are reconstructed one by one by
the same network and the canonical volumes averaged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from torch import nn

from x2ct.errors import InputError
from x2ct.models.base import ModelSpec, ReconstructionModel
from x2ct.models.registry import register

PRESETS = {
    # Paper: 256^2 X-ray -> 128^3 volume, minimal resolution 8, 256 channels.
    "paper": dict(view_size=256, volume_size=128, min_size=8, channels=(32, 64, 128, 256, 256, 256), width=256,
                  norm="batch"),
    # <= 8M parameters, 128^2 views -> 128^3.
    "small": dict(view_size=128, volume_size=128, min_size=8, channels=(16, 32, 64, 128, 128), width=128,
                  norm="batch"),
    "tiny": dict(view_size=16, volume_size=16, min_size=4, channels=(8, 16, 16), width=16, norm="batch"),
}


NORMS = {"batch": "BATCH", "instance": ("INSTANCE", {"affine": True})}


def _block(in_channels: int, out_channels: int, norm: str, stride: int = 1) -> ResidualUnit:
    """The paper's "3-residual block": three conv + norm (the paper's: batch) + ReLU with a shortcut."""
    return ResidualUnit(2, in_channels, out_channels, strides=stride, subunits=3, act="RELU", norm=NORMS[norm])


class SliceChannelNet(nn.Module):
    """2D encoder-decoder: (N, 1, S, S) X-rays -> (N, D, D, D) with channels = slices along the ray."""

    def __init__(self, view_size: int, volume_size: int, min_size: int, channels, width: int, norm: str):
        super().__init__()
        if norm not in NORMS:
            raise InputError(f"Unknown norm {norm!r} for henzler; choose one of {', '.join(NORMS)}.")
        levels = len(channels)
        if view_size != min_size * 2 ** (levels - 1):
            raise ValueError(f"{levels} encoder levels take {view_size} down to {view_size >> (levels - 1)}, "
                             f"not to min_size {min_size}")
        ups = int(math.log2(volume_size // min_size))
        if volume_size != min_size * 2**ups or volume_size > view_size:
            raise ValueError(f"volume_size {volume_size} must be min_size {min_size} times a power of two "
                             f"and at most view_size {view_size}")
        self.encoder = nn.ModuleList(
            [_block(1, channels[0], norm)] + [_block(channels[i - 1], channels[i], norm, 2) for i in range(1, levels)])
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        previous = channels[-1]
        for i in range(ups):
            skip = channels[levels - 2 - i]  # encoder level with the resolution reached by this upsampling
            self.up.append(UpSample(2, previous, width, scale_factor=2, mode="deconv"))
            self.merge.append(_block(width + skip, width, norm))
            previous = width
        self.head = Convolution(2, previous, volume_size, kernel_size=3, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck itself
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return torch.sigmoid(self.head(x))


def view_frame_to_canonical(volume: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """Rotate (N, rows, depth, cols) volumes in a view's frame into the canonical frame (N, rows, D, D).

    Depth index 0 is nearest the detector; the view's column direction is
    cos(theta) e2 + sin(theta) e1 and its depth direction cos(theta) e1 -
    sin(theta) e2 (both as in ``x2ct.models.lifting``).
    """
    angle = float(angle_deg) % 360.0
    quarter = round(angle / 90.0)
    if math.isclose(angle, 90.0 * quarter, abs_tol=1e-6):
        quarter %= 4
        if quarter == 0:
            return volume
        if quarter == 1:
            return volume.transpose(2, 3).flip(3)
        if quarter == 2:
            return volume.flip(2, 3)
        return volume.transpose(2, 3).flip(2)
    n, _, depth, cols = volume.shape
    if depth != cols:
        raise ValueError("oblique views need a square (depth, cols) cross-section")
    theta = math.radians(angle)
    coords = torch.linspace(-1 + 1 / depth, 1 - 1 / depth, depth, device=volume.device, dtype=volume.dtype)
    a1, a2 = torch.meshgrid(coords, coords, indexing="ij")  # axis 1 and axis 2 positions
    column = math.cos(theta) * a2 + math.sin(theta) * a1
    along_ray = math.cos(theta) * a1 - math.sin(theta) * a2
    grid = torch.stack([column, along_ray], dim=-1).expand(n, -1, -1, -1)  # x = column, y = depth
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Henzler(ReconstructionModel):
    """Henzler et al.'s single-image tomography network (one view; two views averaged, ours)."""

    def __init__(self, spec: ModelSpec, net: SliceChannelNet):
        super().__init__(spec)
        self.net = net

    def reconstruct(self, views: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        b, v, s, _ = views.shape
        frames = self.net(views.reshape(b * v, 1, s, s)).transpose(1, 2)  # (B*V, rows, depth, cols)
        frames = frames.reshape(b, v, *frames.shape[1:])
        volumes = [torch.cat([view_frame_to_canonical(frames[i, j : j + 1], float(angles[i, j]))
                              for j in range(v)]).mean(dim=0) for i in range(b)]
        return torch.stack(volumes).unsqueeze(1)

    @staticmethod
    def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The paper's training loss: L2 (mean squared error) between the voxels."""
        return F.mse_loss(prediction, target)


@register("henzler", presets=PRESETS,
          summary="2D encoder-decoder with depth as channels, one X-ray -> volume (two views averaged)",
          paper="seed 004: Henzler et al., Single-image Tomography: 3D Volumes from 2D Cranial X-Rays, 2018")
def build(preset: str, view_size: int, volume_size: int, min_size: int, channels, width: int, norm: str,
          view_counts=(1, 2)) -> Henzler:
    spec = ModelSpec(name="henzler", preset=preset, view_counts=tuple(view_counts), view_size=view_size,
                     volume_size=volume_size, protocol="x2ct")
    return Henzler(spec, SliceChannelNet(view_size, volume_size, min_size, tuple(channels), width, norm))
