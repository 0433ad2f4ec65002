"""Score a CT against a ground truth on another grid: the ground truth resampled with the centres aligned.

A CT reconstructed from radiographs is centred on the X-rays' isocentre and
knows nothing of the scanner's coordinates, and the models' protocols crop
the training CTs about their centre. So the ground truth is resampled onto the
prediction's grid (SimpleITK, linear, ``OUTSIDE_HU`` outside its field) with
the two volumes' centres made to coincide, and scored there with
``evaluate_volumes``. ``x2ct evaluate --align-centres`` and the Slicer module's
Compare button both call ``compare_centred``, so they report the same numbers.
"""

from __future__ import annotations

import numpy as np

from x2ct.image import Volume, volume_from_sitk, volume_to_sitk
from x2ct.metrics.evaluation import evaluate_volumes

#: HU given to ground-truth voxels outside its field.
OUTSIDE_HU = -1000.0
#: How the ground truth is placed on the prediction's grid (recorded with the metrics).
ALIGNMENT = "ground truth resampled onto the prediction grid (linear), volume centres aligned"


def centre(volume: Volume) -> np.ndarray:
    """Physical (LPS) centre of a volume's voxel grid."""
    half = (np.asarray(volume.array.shape[::-1]) - 1) / 2.0 * np.asarray(volume.spacing)
    return np.asarray(volume.origin) + np.asarray(volume.direction) @ half


def resample_centred(gt: Volume, reference: Volume) -> Volume:
    """``gt`` resampled onto ``reference``'s grid, the centres made to coincide (see the module docstring)."""
    import SimpleITK as sitk

    shift = sitk.TranslationTransform(3, tuple(float(v) for v in centre(gt) - centre(reference)))
    reference_image = volume_to_sitk(reference.with_array(np.zeros(reference.array.shape, np.float32)))
    image = sitk.Cast(volume_to_sitk(gt), sitk.sitkFloat32)
    resampled = sitk.Resample(image, reference_image, shift, sitk.sitkLinear, OUTSIDE_HU, sitk.sitkFloat32)
    return volume_from_sitk(resampled)


def compare_centred(pred: Volume, gt: Volume, **evaluate_options) -> tuple[Volume, Volume, dict]:
    """(GT on the prediction's grid, difference pred - GT in HU, metrics of every convention).

    ``evaluate_options`` go to ``evaluate_volumes`` (``hu_range``...).
    """
    aligned = resample_centred(gt, pred)
    difference = pred.with_array(np.asarray(pred.array, np.float32) - aligned.array)
    return aligned, difference, evaluate_volumes(pred, aligned, **evaluate_options)
