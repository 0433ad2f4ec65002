"""Building blocks shared by the X2CT, DuoLift and projection-GAN models.

* ``ResNetEncoder2D``: a ResNet-34 style 2D encoder built from MONAI's
  ``ResNetBlock`` whose stage strides are a parameter, because DuoLift needs
  512-channel features at H/4 rather than torchvision's H/32;
* ``PatchGANCritic``: the pix2pix PatchGAN (MONAI ``PatchDiscriminator``) in 2D
  or 3D, optionally conditioned on the input X-rays lifted into the volume.

Critics return raw scores (logits); the GAN losses in ``x2ct.losses`` apply
the sigmoid (BCE) or compare with 0/1 (LSGAN) themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_norm_layer
from monai.networks.nets import PatchDiscriminator
from monai.networks.nets.resnet import ResNetBlock
from torch import nn

from x2ct.models.lifting import lift_views_per_sample


class ResNetEncoder2D(nn.Module):
    """ResNet-34 layout for one grey-level view: 7x7/2 stem, 3x3/2 max pool, four stages of basic blocks.

    ``strides`` are the four stages' strides: torchvision's ResNet-34 uses
    (1, 2, 2, 2) (512 channels at H/32); (1, 1, 1, 1) keeps H/4 (DuoLift).
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), planes: Sequence[int] = (64, 128, 256, 512),
                 strides: Sequence[int] = (1, 1, 1, 1), in_channels: int = 1, stem: int = 64,
                 norm: str | tuple = "batch"):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False),
            get_norm_layer(norm, spatial_dims=2, channels=stem),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        if not len(layers) == len(planes) == len(strides):  # zip(strict=True) needs Python 3.10; Slicer 5.8 has 3.9
            raise ValueError(f"layers, planes and strides differ in length: {layers}, {planes}, {strides}")
        stages, channels = [], stem
        for n_blocks, width, stride in zip(layers, planes, strides):
            shortcut = None
            if stride != 1 or channels != width:  # ResNet shortcut type B: 1x1 projection
                shortcut = nn.Sequential(Conv[Conv.CONV, 2](channels, width, kernel_size=1, stride=stride, bias=False),
                                         get_norm_layer(norm, spatial_dims=2, channels=width))
            blocks = [ResNetBlock(channels, width, spatial_dims=2, stride=stride, downsample=shortcut, norm=norm)]
            blocks += [ResNetBlock(width, width, spatial_dims=2, norm=norm) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(image))


class PatchGANCritic(nn.Module):
    """pix2pix PatchGAN critic (MONAI ``PatchDiscriminator``): one score per receptive-field patch.

    3D and ``conditional``: the volume is concatenated with the input views
    lifted along their rays (X2CT-GAN's conditional discriminator), so the
    critic judges whether the volume fits these X-rays. 2D: each image of a
    (B, V, H, W) stack is scored on its own (projection-GAN's critic).
    """

    def __init__(self, spatial_dims: int = 3, channels: int = 64, num_layers: int = 3, conditional: bool = False,
                 n_views: int = 2, norm: str | tuple = "instance"):
        super().__init__()
        if conditional and spatial_dims != 3:
            raise ValueError("only the 3D critic is conditioned on lifted views")
        self.spatial_dims = spatial_dims
        self.conditional = conditional
        in_channels = 1 + (n_views if conditional else 0)
        # pix2pix: kernel 4, padding 2 (ceil((4 - 1) / 2)), LeakyReLU 0.2, no norm on the first layer.
        self.net = PatchDiscriminator(spatial_dims=spatial_dims, channels=channels, in_channels=in_channels,
                                      num_layers_d=num_layers, kernel_size=4, padding=2, norm=norm, bias=True)

    def forward(self, x: torch.Tensor, views: torch.Tensor | None = None,
                angles: torch.Tensor | None = None) -> torch.Tensor:
        """3D: volume (B, 1, D, D, D) [+ views (B, V, S, S), angles (B, V)] -> (B, 1, d, d, d).

        2D: images (B, V, H, W) -> scores (B, V, h, w).
        """
        if self.spatial_dims == 2:
            b, v, h, w = x.shape
            scores = self.net(x.reshape(b * v, 1, h, w))[-1]
            return scores.reshape(b, v, *scores.shape[-2:])
        if self.conditional:
            if views is None or angles is None:
                raise ValueError("the conditional critic needs the input views and their angles")
            depth = x.shape[-1]
            if views.shape[-2:] != (depth, depth):
                views = F.interpolate(views, size=(depth, depth), mode="bilinear", align_corners=False)
            x = torch.cat([x, lift_views_per_sample(views, angles, depth)], dim=1)
        return self.net(x)[-1]
