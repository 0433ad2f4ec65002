"""One call that scores a predicted CT against the ground truth in every convention.

``evaluate`` takes protocol-normalised arrays; ``evaluate_volumes`` takes HU
volumes as read from files: it checks that both lie on the same grid,
reorients them to the canonical frame and normalises them first.
"""

from __future__ import annotations

import math

import numpy as np

from x2ct.errors import InputError
from x2ct.image import Volume, to_canonical
from x2ct.metrics.conventions import (DEFAULT_HU_RANGE, SSIM3D_WINDOW, honest_metrics, repeat_concatenate_metrics,
                                      x2ct_metrics)
from x2ct.metrics.core import volume_pair
from x2ct.metrics.lung import lung_dice

#: One line per section of ``evaluate``'s result, for reports.
CONVENTIONS = {
    "x2ct": "X2CT convention (the LIDC tables): prediction clipped to [0,1]; PSNR on the [0,2500] integer "
            "scale with peak 4095 (+4.29 dB); 2D slice SSIM, uniform 7x7, mean of 3 planes",
    "repeat_concatenate": "Repeat-and-Concatenate code: PSNR on [0,2000] integers, peak 4095 (+6.22 dB); "
                          "2D SSIM without axial slices, (coronal + 2 x sagittal) / 3",
    "honest": "Honest: prediction as given; PSNR on [0,1] with peak 1; 3D SSIM, Gaussian window "
              "(11, sigma 1.5); MAE in HU",
    "lung_dice": "Lung Dice: masks by threshold (-950 < HU < -400 inside the body) on both volumes; "
                 "'label' against the ground truth's lung labels",
}


def _hu_range(hu_range) -> tuple[float, float]:
    low, high = (float(v) for v in hu_range)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise InputError(f"The HU range ({low}, {high}) is not a window: give finite hu_min < hu_max.")
    return low, high


def normalise_hu(hu, hu_range=DEFAULT_HU_RANGE) -> np.ndarray:
    """HU -> [0, 1] as the protocol does: clip to the window, scale; float32 like the papers' tensors."""
    low, high = _hu_range(hu_range)
    values = np.asarray(hu, np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def evaluate(pred, gt, *, hu_range=DEFAULT_HU_RANGE, labels=None, lung_ids=None) -> dict:
    """Every metric of a (D, H, W) prediction against the ground truth, both in [0, 1], canonical frame.

    ``hu_range`` is the HU window the [0, 1] values stand for (for MAE in HU
    and the lung thresholds). ``labels`` is an optional organ-id map on the
    ground-truth grid and ``lung_ids`` its lung label values. Returns
    ``{"x2ct": ..., "repeat_concatenate": ..., "honest": ..., "lung_dice": ...}``
    (see ``CONVENTIONS``); an undefined value (PSNR of identical volumes in
    the honest convention, Dice without lungs) is ``inf`` or ``nan``.
    """
    low, high = _hu_range(hu_range)
    p, g = volume_pair(pred, gt, min_side=SSIM3D_WINDOW)
    return {
        "x2ct": x2ct_metrics(p, g),
        "repeat_concatenate": repeat_concatenate_metrics(p, g),
        "honest": honest_metrics(p, g, (low, high)),
        "lung_dice": lung_dice(p * (high - low) + low, g * (high - low) + low, labels, lung_ids),
    }


def evaluate_volumes(pred: Volume, gt: Volume, *, hu_range=DEFAULT_HU_RANGE, labels: Volume | None = None,
                     lung_ids=None) -> dict:
    """``evaluate`` for HU volumes with geometry (e.g. from ``x2ct.io.read_ct``).

    Both are reoriented to the canonical frame and must then share shape and
    spacing; a prediction on another grid is refused rather than resampled,
    so that the score is of the reconstruction, not of an interpolation. The
    origin is not compared: a reconstruction from X-rays does not know the
    scanner's origin. ``labels`` must lie on the ground truth's grid. Both
    volumes are clipped to the HU window by the normalisation, so here the
    honest convention, too, sees the prediction within the window.
    """
    p, g = to_canonical(pred.check_finite()), to_canonical(gt.check_finite())
    _same_grid(p, g, "prediction")
    label_array = None
    if labels is not None:
        canonical_labels = to_canonical(labels)
        _same_grid(canonical_labels, g, "label map")
        label_array = canonical_labels.array
    return evaluate(normalise_hu(p.array, hu_range), normalise_hu(g.array, hu_range), hu_range=hu_range,
                    labels=label_array, lung_ids=lung_ids)


def _same_grid(volume: Volume, gt: Volume, what: str) -> None:
    if volume.shape != gt.shape or not np.allclose(volume.spacing, gt.spacing, rtol=1e-3, atol=1e-4):
        spacing = ", ".join(f"{s:.4g}" for s in volume.spacing)
        gt_spacing = ", ".join(f"{s:.4g}" for s in gt.spacing)
        raise InputError(
            f"The {what} grid (shape {volume.shape}, spacing {spacing} mm) differs from the ground truth's "
            f"(shape {gt.shape}, spacing {gt_spacing} mm); resample the {what} onto the ground-truth grid "
            "first (e.g. SimpleITK.Resample(image, reference))."
        )


def json_ready(result):
    """A copy of a result with every non-finite number as None, so that it is valid JSON."""
    if isinstance(result, dict):
        return {key: json_ready(value) for key, value in result.items()}
    if isinstance(result, (list, tuple)):
        return [json_ready(value) for value in result]
    if isinstance(result, float) and not math.isfinite(result):
        return None
    return result
