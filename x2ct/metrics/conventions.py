"""The three labelled ways papers score a reconstruction (methods.md, "Metrics: two conventions").

Inputs are (D, H, W) volumes normalised to [0, 1] by the protocol, in the
canonical model frame (``x2ct.image.to_canonical``): slices perpendicular to
axis 0 are axial, to axis 1 coronal, to axis 2 sagittal.

- ``x2ct_metrics``: what the LIDC tables report, reproduced from the X2CT
  evaluation code. The prediction is clipped to [0, 1]; PSNR is taken on the
  [0, 2500] integer scale with a peak of 4095, which adds
  20*log10(4095/2500) = 4.29 dB to PSNR on [0, 1]. The integers come from
  truncation (X2CT cast ``value * 2500`` to int32), not rounding, done in the
  input's own float type as X2CT did. Zero error (whole volume, or one slice
  for the 2D PSNR) scores 100 dB, as in that code. SSIM is 2D, per slice,
  uniform 7x7 window, data range 1, averaged over the slices perpendicular to
  each axis and then over the three axes.
- ``repeat_concatenate_metrics``: the Repeat-and-Concatenate code's variant:
  PSNR on the [0, 2000] integer scale with peak 4095 (+6.22 dB), and an SSIM
  whose three calls never use axial slices: one averages coronal slices and
  two average sagittal slices, so SSIM = (coronal + 2 * sagittal) / 3. (Read
  from its released ``Structural_Similarity``, assuming its volumes are in
  X2CT's (z, y, x) order after its transpose.)
- ``honest_metrics``: the prediction as given (no clipping), PSNR on [0, 1]
  with peak 1, 3D SSIM with a Gaussian window, MAE/MSE on [0, 1] and MAE in HU.
  Identical volumes give PSNR = inf.
"""

from __future__ import annotations

import numpy as np

from x2ct.errors import InputError
from x2ct.metrics.core import (cosine_similarity, mae, mse, psnr, psnr_by_slice, ssim_3d, ssim_by_slice,
                               volume_pair)

#: Names of the slice planes perpendicular to axes 0, 1, 2 of the canonical frame.
SLICE_PLANES = ("axial", "coronal", "sagittal")
#: Peak value both papers' code used for PSNR (a 12-bit CT range).
PEAK = 4095.0
#: What both papers' code reported for a zero error.
IDENTICAL_DB = 100.0
X2CT_SCALE = 2500
REPEAT_CONCATENATE_SCALE = 2000
SSIM_WINDOW = 7
SSIM3D_WINDOW = 11
#: The X2CT protocol's HU window: stored HU + 1024 clipped to [0, 2500].
DEFAULT_HU_RANGE = (-1024.0, 1476.0)


def _unit_range_gt(gt: np.ndarray) -> None:
    low, high = float(gt.min()), float(gt.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise InputError(f"The ground truth spans [{low:.4g}, {high:.4g}], not [0, 1]; normalise it by the "
                         "protocol first (x2ct.metrics.normalise_hu clips HU to the range and scales to [0, 1]).")


def _integers(unit: np.ndarray, scale: int) -> np.ndarray:
    """Protocol value -> integer scale, truncating like the papers' int32 cast."""
    return np.trunc(unit * scale)


def x2ct_metrics(pred, gt) -> dict:
    """Metrics exactly as the X2CT evaluation computed them (see the module docstring)."""
    p, g = volume_pair(pred, gt, min_side=SSIM_WINDOW)
    _unit_range_gt(g)
    p = np.clip(p, 0, 1)
    pi, gi = _integers(p, X2CT_SCALE), _integers(g, X2CT_SCALE)
    psnr_planes = [float(psnr_by_slice(pi, gi, axis, PEAK, IDENTICAL_DB).mean()) for axis in range(3)]
    ssim_planes = [float(ssim_by_slice(p, g, axis, win_size=SSIM_WINDOW).mean()) for axis in range(3)]
    return {
        "psnr_3d_db": psnr(mse(pi, gi), PEAK, IDENTICAL_DB),
        "psnr_2d_db": float(np.mean(psnr_planes)),
        "psnr_2d_db_by_plane": dict(zip(SLICE_PLANES, psnr_planes)),
        "ssim_2d": float(np.mean(ssim_planes)),
        "ssim_2d_by_plane": dict(zip(SLICE_PLANES, ssim_planes)),
        "mae": mae(p, g),
        "mse": mse(p, g),
        "mae_2500": mae(pi, gi),
        "mse_2500": mse(pi, gi),
        "cosine_similarity": cosine_similarity(p, g),
    }


def repeat_concatenate_metrics(pred, gt) -> dict:
    """PSNR and SSIM as the Repeat-and-Concatenate code computed them (see the module docstring)."""
    p, g = volume_pair(pred, gt, min_side=SSIM_WINDOW)
    _unit_range_gt(g)
    p = np.clip(p, 0, 1)
    pi, gi = _integers(p, REPEAT_CONCATENATE_SCALE), _integers(g, REPEAT_CONCATENATE_SCALE)
    coronal, sagittal = (float(ssim_by_slice(p, g, axis, win_size=SSIM_WINDOW).mean()) for axis in (1, 2))
    return {
        "psnr_3d_db": psnr(mse(pi, gi), PEAK, IDENTICAL_DB),
        "ssim_2d": (coronal + 2 * sagittal) / 3,
    }


def honest_metrics(pred, gt, hu_range: tuple[float, float] = DEFAULT_HU_RANGE) -> dict:
    """Scale-free metrics of the prediction as given (see the module docstring).

    ``hu_range`` is the protocol's HU window that [0, 1] stands for; it only
    converts the MAE to HU.
    """
    p, g = volume_pair(pred, gt, min_side=SSIM3D_WINDOW)
    error = mse(p, g)
    absolute = mae(p, g)
    return {
        "psnr_db": psnr(error, 1.0),
        "ssim_3d": ssim_3d(p, g, data_range=1.0, win_size=SSIM3D_WINDOW, sigma=1.5),
        "mae": absolute,
        "mse": error,
        "mae_hu": absolute * (float(hu_range[1]) - float(hu_range[0])),
    }
