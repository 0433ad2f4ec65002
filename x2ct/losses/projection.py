"""Losses that compare volumes through their projections.

* ``x2ct_projection_loss``: X2CT-GAN's projection loss (Ying et al. 2019,
  methods.md, weight 10): L1 between the mean-absolute-value projections of
  prediction and ground truth along each of the three array axes, averaged
  over the axes.
* ``beer_lambert_loss``: MSE between the transmitted intensities
  ``exp(-line integral)`` of prediction and ground truth, the physical X-ray
  image formation (Beer-Lambert), at the given view angles.
* ``view_consistency_loss``: MSE between the input views and the volume's
  line integrals normalised like the X2CT DRRs (each image by its own
  maximum), the projection-consistency term of the self-supervised models
  (seed 001); it needs no CT ground truth.

Line integrals are parallel-beam ray sums through the cube, computed by the
project's differentiable projector (``x2ct.physics.projector``) with a
detector of one pixel per voxel, so they follow the same view convention as
``x2ct.models.lifting``: lifting a view and projecting it back at a multiple
of 90 degrees returns the view times the cube's side. The DRRs of the
papers are cone-beam; this parallel-beam approximation ignores the
divergence, as the lifting does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from x2ct.errors import InputError
from x2ct.physics.geometry import DRRGeometry
from x2ct.physics.projector import project


def _check_volume(volume: torch.Tensor, what: str) -> int:
    if not isinstance(volume, torch.Tensor) or volume.ndim != 5 or volume.shape[1] != 1 \
            or len(set(volume.shape[2:])) != 1:
        shape = tuple(volume.shape) if isinstance(volume, torch.Tensor) else type(volume).__name__
        raise InputError(f"{what} takes cubic volumes (B, 1, D, D, D), got {shape}.")
    return volume.shape[-1]


def mean_abs_projections(volume: torch.Tensor) -> list[torch.Tensor]:
    """Mean of |v| along array axes 0, 1 and 2 of volumes (B, C, D, H, W)."""
    return [volume.abs().mean(dim=axis) for axis in (2, 3, 4)]


def x2ct_projection_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the three axes of L1(mean |pred| projection, mean |target| projection)."""
    if pred.shape != target.shape or pred.ndim != 5:
        raise InputError(f"x2ct_projection_loss compares volumes (B, C, D, H, W) of one shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}.")
    pairs = zip(mean_abs_projections(pred), mean_abs_projections(target))
    return sum(F.l1_loss(p, t) for p, t in pairs) / 3


def line_integrals(volume: torch.Tensor, angles, voxel_attenuation: float = 1.0) -> torch.Tensor:
    """Parallel-beam ray sums of ``volume * voxel_attenuation`` -> images (B, V, D, D).

    ``voxel_attenuation`` is the attenuation (mu times voxel length) of one
    voxel of value 1; ``angles`` in degrees, (V,) or (B, V).
    """
    side = _check_volume(volume, "line_integrals")
    geometry = DRRGeometry(beam="parallel", detector_mm=(side, side), pixels=(side, side))
    return project(volume * voxel_attenuation, (1.0, 1.0, 1.0), angles, geometry)


def beer_lambert_loss(pred: torch.Tensor, target: torch.Tensor, angles, path_attenuation: float = 4.0) -> torch.Tensor:
    """MSE between exp(-line integral) of prediction and ground truth at ``angles``.

    ``path_attenuation`` is the line integral of a ray crossing the whole cube
    through value 1 (about 4 for 30 cm of water): the voxel attenuation is
    ``path_attenuation / D``, so the loss does not depend on the grid size.
    """
    side = _check_volume(pred, "beer_lambert_loss")
    if pred.shape != target.shape:
        raise InputError(f"beer_lambert_loss compares volumes of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}.")
    scale = path_attenuation / side
    return F.mse_loss(torch.exp(-line_integrals(pred, angles, scale)),
                      torch.exp(-line_integrals(target, angles, scale)))


def view_consistency_loss(volume: torch.Tensor, views: torch.Tensor, angles, eps: float = 1e-6) -> torch.Tensor:
    """MSE between input views (B, V, S, S) in [0, 1] and the volume's max-normalised line integrals."""
    _check_volume(volume, "view_consistency_loss")
    if views.ndim != 4 or views.shape[0] != volume.shape[0]:
        raise InputError(f"view_consistency_loss takes views (B={volume.shape[0]}, V, S, S), got "
                         f"{tuple(views.shape)}.")
    images = line_integrals(volume, angles)
    if images.shape[1] != views.shape[1]:
        raise InputError(f"{views.shape[1]} views but {images.shape[1]} angles: give one angle per view.")
    images = images / (images.amax(dim=(-2, -1), keepdim=True) + eps)
    if images.shape[-2:] != views.shape[-2:]:
        images = F.interpolate(images, size=views.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(images, views)
