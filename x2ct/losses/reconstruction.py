"""Voxel-space losses: errors inside a region, and smoothness.

* ``masked_mse`` / ``masked_l1``: DuoLift (seed 003) adds ``MSE + L1``
  inside a lung mask to the whole-volume ``MSE + L1`` so the reconstruction
  is pushed hardest where the clinical detail is. The mean is taken over the
  masked voxels only; an empty mask gives 0 (with a gradient path, so a batch
  without lungs does not break training).
* ``total_variation``: u-X2CTGAN's shape-coherence loss (seed 001),
  ``mean |dx| + mean |dy| + mean |dz|`` over neighbouring voxels.
"""

from __future__ import annotations

import torch

from x2ct.errors import InputError


def _masked_mean(error: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    try:
        weights = torch.broadcast_to(mask.to(error.dtype), error.shape)
    except RuntimeError:
        raise InputError(f"The mask {tuple(mask.shape)} does not broadcast to the volumes "
                         f"{tuple(error.shape)}; give one mask voxel per volume voxel.") from None
    return (error * weights).sum() / weights.sum().clamp_min(1.0)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the voxels where ``mask`` is true (or weighted by a soft mask)."""
    return _masked_mean((pred - target).square(), mask)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the voxels where ``mask`` is true (or weighted by a soft mask)."""
    return _masked_mean((pred - target).abs(), mask)


def total_variation(volume: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of volumes (B, C, D, H, W): sum over the 3 axes of the mean |difference|."""
    if volume.ndim != 5:
        raise InputError(f"total_variation takes volumes (B, C, D, H, W), got {tuple(volume.shape)}.")
    return sum(volume.diff(dim=axis).abs().mean() for axis in (2, 3, 4))
