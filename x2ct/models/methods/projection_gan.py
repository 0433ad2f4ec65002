"""projection-gan: X2CT's generator trained from X-rays alone (u-X2CTGAN, seed 001).

"3D Reconstruction of 2D Medical Images using Unsupervised GANs" (seed 001)
trains the X2CT-GAN generator without CT ground truth. The generator loss is

    L_G = w_proj * L_proj + w_shape * L_shape + w_adv * L_adv

* L_proj: MSE between each input view and the projection of the generated
  volume (sum along depth for the frontal view, along width for the lateral
  one): ``project`` below;
* L_shape: total variation of the volume (``x2ct.losses``);
* L_adv: BCE of a 2D discriminator on the projections, real = the input
  X-rays: ``build_critic`` (a 2D PatchGAN scoring every view on its own);
* dynamic weights w = (1, 0.1, 1) / (L + eps), normalised to sum to one,
  recomputed every iteration: ``dynamic_weights``.

Departures from the seed: the projection is parallel-beam along the view's
rays for any gantry angle (the exact adjoint of ``lift_view``, so 0 and 90
degrees are the seed's sums along depth and width) and each projection is
divided by its own maximum, as the DRRs of the X2CT data protocol are, so that
it is on the scale of the [0, 1] input views (the seed does not say how it
matched the scales); projections stay at the volume's resolution instead of
being resized to 512^2; the seed's discriminator architecture is not
described, so it is X2CT's 2D PatchGAN (ndf 64, 3 layers); the seed's extra
L2 weight penalty is left to the optimiser's weight decay. The seed reports
that this training collapses (PSNR 10.9 dB): it is a fine-tuning mode and a
consistency regulariser, not a replacement for paired training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from x2ct.models.blocks import PatchGANCritic
from x2ct.models.lifting import lift_view
from x2ct.models.methods.x2ct_gan import PRESETS, X2CTGenerator, build_generator
from x2ct.models.registry import register

#: Numerators of the seed's dynamic weights, in the order (projection, shape/TV, adversarial).
SEED_NUMERATORS = (1.0, 0.1, 1.0)

CRITIC_PRESETS = {
    "paper": dict(channels=64, num_layers=3),
    "small": dict(channels=16, num_layers=3),
    "tiny": dict(channels=4, num_layers=2),
}


def project(volume: torch.Tensor, angles: torch.Tensor, normalise: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Parallel projections of volumes (B, 1, D, D, D) at angles (B, V) degrees -> images (B, V, D, D).

    The adjoint of ``lift_view`` (what lifting spreads along a ray, projection
    sums back), so the two share one convention: 0 degrees sums over axis 1
    (frontal), 90 over axis 2 (lateral). ``normalise`` divides each image by
    its maximum (the X2CT DRR protocol); gradients flow through both.
    """
    if volume.ndim != 5 or volume.shape[1] != 1 or len(set(volume.shape[2:])) != 1:
        raise ValueError(f"project expects cubic volumes (B, 1, D, D, D), got {tuple(volume.shape)}")
    if angles.ndim != 2 or angles.shape[0] != volume.shape[0]:
        raise ValueError(f"project expects angles (B, V) with B = {volume.shape[0]}, got {tuple(angles.shape)}")
    images = torch.stack([_project_column(volume, angles[:, j]) for j in range(angles.shape[1])], dim=1)
    if normalise:
        images = images / images.amax(dim=(-2, -1), keepdim=True).clamp_min(eps)
    return images


def _project_column(volume: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """One view per sample, angles (B,) -> (B, D, D); one adjoint call when the batch shares its angle."""
    values = [float(a) for a in angles.detach().cpu()]
    if all(v == values[0] for v in values):
        return _adjoint_of_lifting(volume, values[0])
    return torch.cat([_adjoint_of_lifting(volume[i : i + 1], v) for i, v in enumerate(values)])


def _adjoint_of_lifting(volume: torch.Tensor, angle: float) -> torch.Tensor:
    b, _, d, _, _ = volume.shape
    _, adjoint = torch.func.vjp(lambda view: lift_view(view, angle, d), volume.new_zeros(b, 1, d, d))
    return adjoint(volume)[0][:, 0]


def dynamic_weights(losses: Sequence[torch.Tensor], numerators: Sequence[float] = SEED_NUMERATORS,
                    eps: float = 1e-8) -> torch.Tensor:
    """Seed 001's weights: numerator / (loss + eps), normalised to sum to 1, detached.

    Detached because the weights only rebalance the terms: a weight that
    carried gradient would cancel its own term (w * L is nearly constant).
    """
    if len(losses) != len(numerators):
        raise ValueError(f"{len(losses)} losses but {len(numerators)} numerators")
    values = torch.stack([loss.detach().reshape(()) for loss in losses])
    raw = torch.as_tensor(numerators, dtype=values.dtype, device=values.device) / (values + eps)
    return raw / raw.sum()


def weighted_sum(losses: Sequence[torch.Tensor], numerators: Sequence[float] = SEED_NUMERATORS) -> torch.Tensor:
    """The seed's generator objective: sum of the losses with their dynamic weights."""
    weights = dynamic_weights(losses, numerators)
    return sum(w * loss for w, loss in zip(weights, losses))


def build_critic(preset: str, channels: int = 64, num_layers: int = 3) -> PatchGANCritic:
    """2D PatchGAN scoring projections or real X-rays, (B, V, H, W) -> (B, V, h, w) logits."""
    return PatchGANCritic(spatial_dims=2, channels=channels, num_layers=num_layers)


@register("projection-gan", presets=PRESETS,
          summary="X2CT generator trained without CT: projection consistency + TV + 2D projection critic",
          paper="seed 001: u-X2CTGAN, 3D Reconstruction of 2D Medical Images using Unsupervised GANs",
          critic=build_critic, critic_presets=CRITIC_PRESETS)
def build(preset: str, **kwargs) -> X2CTGenerator:
    return build_generator("projection-gan", preset, **kwargs)
