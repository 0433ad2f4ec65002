"""DuoLift-CNN and DuoLift-GAN: two branches that lift X-rays and their features into 3D.

Zhang and Ying, "DuoLift-GAN: Reconstructing CT from Single-view and Biplanar
X-Rays with Generative Adversarial Networks" (seed 003). No code is public:
this module is reconstructed from the paper's text. What the text states:

* branch 1: a ResNet-34 2D encoder per view gives features 512 x H/4 x W/4,
  lifted by repeating them D'/4 times along each view's projection direction,
  concatenated (1024 channels with two views), then three ResNet blocks with
  "Upsample Type 2" blocks give f_u21 (256 @ D'/4), f_u22 (128 @ D'/2) and
  f_u23 (64 @ D'); "Upsample Type 1" blocks bring f_u21 and f_u22 to 64 @ D';
* branch 2: the raw X-rays repeated D' times along their projection
  directions, concatenated, one ResNet block -> F_o;
* F_u = [F_o, f_u11, f_u12, f_u23] has 224 channels (so F_o has 32);
  dropout 0.25; a U-Net++ with four encoder layers, four decoder layers, six
  nested dense skip nodes and deep supervision (MONAI ``BasicUNetPlusPlus``
  has exactly this layout); then a U-Net -> the volume;
* the discriminator: four 4x4x4 convolutions with stride 1 and padding 2,
  average pooling 3x3x3 with stride 2 and padding 1, a 5x5x5 output;
* DuoLift-CNN is the same generator trained without the discriminator.

What is reconstructed (not stated in the text):

* ResNet-34 gives 512 channels at H/32; to get the stated H/4 the four
  stages keep stride 1 after the usual stride-4 stem;
* only two upsamplings follow the three ResNet blocks (a third would leave
  D'); Type 2 = transposed conv x2, Type 1 = trilinear upsampling after a 1x1
  conv to 64 channels; the 3D ResNet blocks are MONAI ``ResidualUnit``
  (two conv-instance-norm-ReLU units, 1x1 projection shortcut);
* U-Net++ and U-Net: MONAI ``BasicUNetPlusPlus`` / ``BasicUNet`` with their
  default widths; the four deep-supervision heads are averaged (U-Net++'s
  "accurate mode") and feed the U-Net; output ReLU as in X2CT, whose
  protocol DuoLift follows (the text names no output activation);
* the discriminator: an average pooling before the first convolution, as
  in pix2pixHD's multi-scale discriminator, so that a 128^3 volume gives the
  stated 5^3 (four conv + pool pairs alone give 9^3); widths 64, 128, 256, 1
  with instance norm and LeakyReLU 0.2; it returns logits (the loss applies
  the sigmoid). The paper states no parameter count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from monai.networks.nets import BasicUNet, BasicUNetPlusPlus
from torch import nn

from x2ct.errors import InputError
from x2ct.models.base import ModelSpec, ReconstructionModel
from x2ct.models.blocks import ResNetEncoder2D
from x2ct.models.lifting import lift_per_sample, lift_views_per_sample
from x2ct.models.registry import register

PRESETS = {
    # 128^2 views -> 128^3 (the paper's LIDC setting).
    "paper": dict(view_size=128, resnet_layers=(3, 4, 6, 3), resnet_planes=(64, 128, 256, 512),
                  features_3d=(256, 128, 64), raw_channels=32, unetpp_features=(32, 32, 64, 128, 256, 32),
                  unetpp_out=32, unet_features=(32, 32, 64, 128, 256, 32)),
    # 64^2 views -> 64^3: at 128^3 the full-resolution U-Net++ and U-Net are out of reach on 2 CPU cores.
    "small": dict(view_size=64, resnet_layers=(2, 2, 2, 2), resnet_planes=(16, 32, 64, 128),
                  features_3d=(64, 32, 16), raw_channels=8, unetpp_features=(8, 8, 16, 32, 64, 8),
                  unetpp_out=8, unet_features=(8, 8, 16, 32, 64, 8)),
    # 16^3: the U-Nets' coarsest level is one voxel, where instance norm is undefined, hence group norm.
    "tiny": dict(view_size=16, resnet_layers=(1, 1, 1, 1), resnet_planes=(4, 4, 8, 8),
                 features_3d=(8, 4, 4), raw_channels=4, unetpp_features=(4, 4, 4, 8, 8, 4),
                 unetpp_out=4, unet_features=(4, 4, 4, 8, 8, 4), unet_norm=("group", {"num_groups": 1})),
}
CRITIC_PRESETS = {
    "paper": dict(channels=(64, 128, 256)),
    "small": dict(channels=(16, 32, 64)),
    "tiny": dict(channels=(4, 4, 8)),
}
NORM = "instance"


def _res3d(cin: int, cout: int) -> ResidualUnit:
    return ResidualUnit(3, cin, cout, subunits=2, act="relu", norm=NORM)


class DuoLiftGenerator(ReconstructionModel):
    """DuoLift generator for ``n_views`` views of ``view_size``^2 -> a ``view_size``^3 volume."""

    def __init__(self, spec: ModelSpec, resnet_layers: Sequence[int], resnet_planes: Sequence[int],
                 features_3d: Sequence[int], raw_channels: int, unetpp_features: Sequence[int], unetpp_out: int,
                 unet_features: Sequence[int], unet_norm: str | tuple = ("instance", {"affine": True}),
                 dropout: float = 0.25):
        super().__init__(spec)
        if spec.view_size % 16:
            raise InputError(f"DuoLift needs a view size divisible by 16 (its U-Nets pool 4 times), got "
                             f"{spec.view_size}; choose e.g. {16 * max(1, round(spec.view_size / 16))}.")
        n_views = spec.view_counts[0]
        f1, f2, f3 = features_3d
        self.encoders = nn.ModuleList(ResNetEncoder2D(resnet_layers, resnet_planes, strides=(1, 1, 1, 1),
                                                      stem=resnet_planes[0]) for _ in range(n_views))
        lifted = n_views * self.encoders[0].out_channels
        # Branch 1: ResNet block -> f_u21 (D/4); Type 2 up; block -> f_u22 (D/2); Type 2 up; block -> f_u23 (D).
        self.block1, self.block2, self.block3 = _res3d(lifted, f1), _res3d(f1, f2), _res3d(f2, f3)
        self.up2_1 = UpSample(3, f1, f1, scale_factor=2, mode="deconv")
        self.up2_2 = UpSample(3, f2, f2, scale_factor=2, mode="deconv")
        # Type 1: 1x1 conv to the full-resolution width, then trilinear upsampling.
        self.up1_1 = UpSample(3, f1, f3, scale_factor=4, mode="nontrainable", interp_mode="trilinear")
        self.up1_2 = UpSample(3, f2, f3, scale_factor=2, mode="nontrainable", interp_mode="trilinear")
        # Branch 2: the raw views lifted to D, one ResNet block.
        self.raw_block = _res3d(n_views, raw_channels)
        self.dropout = nn.Dropout(dropout)
        self.unetpp = BasicUNetPlusPlus(3, 3 * f3 + raw_channels, unetpp_out, features=tuple(unetpp_features),
                                        deep_supervision=True, norm=unet_norm)
        self.unet = BasicUNet(3, unetpp_out, 1, features=tuple(unet_features), norm=unet_norm)
        self.activation = nn.ReLU()

    def reconstruct(self, views: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        depth = self.spec.volume_size
        features = [encoder(views[:, i : i + 1]) for i, encoder in enumerate(self.encoders)]
        lifted = torch.cat([lift_per_sample(f, angles[:, i], f.shape[-1]) for i, f in enumerate(features)], dim=1)
        f_u21 = self.block1(lifted)
        f_u22 = self.block2(self.up2_1(f_u21))
        f_u23 = self.block3(self.up2_2(f_u22))
        f_o = self.raw_block(lift_views_per_sample(views, angles, depth))
        f_u = self.dropout(torch.cat([f_o, self.up1_1(f_u21), self.up1_2(f_u22), f_u23], dim=1))
        fused = torch.stack(self.unetpp(f_u)).mean(dim=0)  # average of the deep-supervision heads
        return self.activation(self.unet(fused))


class DuoLiftCritic(nn.Module):
    """DuoLift's discriminator: volume (B, 1, D, D, D) -> logits (B, 1, 5, 5, 5) at D = 128."""

    def __init__(self, channels: Sequence[int] = (64, 128, 256), negative_slope: float = 0.2):
        super().__init__()
        act = ("leakyrelu", {"negative_slope": negative_slope})
        widths = [1, *channels]
        layers: list[nn.Module] = [self._pool()]
        for k, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [Convolution(3, cin, cout, kernel_size=4, padding=2, act=act, norm=NORM if k else None),
                       self._pool()]
        layers += [nn.Conv3d(widths[-1], 1, kernel_size=4, padding=2), self._pool()]
        self.net = nn.Sequential(*layers)

    @staticmethod
    def _pool() -> nn.AvgPool3d:
        return nn.AvgPool3d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, volume: torch.Tensor, views: torch.Tensor | None = None,
                angles: torch.Tensor | None = None) -> torch.Tensor:
        """Unconditional: ``views``/``angles`` are accepted for a uniform critic call and ignored."""
        return self.net(volume)


def build_generator(name: str, preset: str, n_views: int = 2, view_size: int = 128, **kwargs) -> DuoLiftGenerator:
    spec = ModelSpec(name=name, preset=preset, view_counts=(n_views,), view_size=view_size, volume_size=view_size,
                     protocol="x2ct", default_angles=(0.0, 90.0))
    return DuoLiftGenerator(spec, **kwargs)


def build_critic(preset: str, channels: Sequence[int] = (64, 128, 256)) -> DuoLiftCritic:
    return DuoLiftCritic(tuple(channels))


@register("duolift-cnn", presets=PRESETS, summary="DuoLift generator (feature + image lifting, U-Net++), no critic",
          paper="seed 003: Zhang and Ying, DuoLift-GAN (CNN variant); reconstructed from the text")
def build_cnn(preset: str, **kwargs) -> DuoLiftGenerator:
    return build_generator("duolift-cnn", preset, **kwargs)


@register("duolift-gan", presets=PRESETS, summary="DuoLift-GAN: dual lifting branches, U-Net++ and U-Net, 3D critic",
          paper="seed 003: Zhang and Ying, DuoLift-GAN; reconstructed from the text",
          critic=build_critic, critic_presets=CRITIC_PRESETS)
def build_gan(preset: str, **kwargs) -> DuoLiftGenerator:
    return build_generator("duolift-gan", preset, **kwargs)
