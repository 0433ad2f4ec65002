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

from x2ct.errors import InputError
from x2ct.image import Volume, volume_from_sitk, volume_to_sitk
from x2ct.metrics.evaluation import CONVENTIONS, evaluate_volumes

#: HU given to ground-truth voxels outside its field.
OUTSIDE_HU = -1000.0
#: How the ground truth is placed on the prediction's grid (recorded with the metrics).
ALIGNMENT = "ground truth resampled onto the prediction grid (linear), volume centres aligned"
#: A comparison is refused when less of the prediction's grid than this lies inside the ground truth's field (the
#: coverage is reported either way): its metrics would mostly score the prediction against the padding.
MIN_COVERAGE = 0.05  # a 118 mm cube of a 320 mm grid: no chest CT is smaller
#: The metrics section compare_centred adds, and what it holds.
COVERAGE_SECTION = "alignment"
COVERAGE_DEFINITION = (f"ground_truth_coverage: share of the prediction's grid inside the ground truth's field "
                       f"(the rest is compared with {OUTSIDE_HU:g} HU)")
#: What each section of compare_centred's metrics holds: the metric conventions, and the coverage.
SECTION_DEFINITIONS = {**CONVENTIONS, COVERAGE_SECTION: COVERAGE_DEFINITION}


def centre(volume: Volume) -> np.ndarray:
    """Physical (LPS) centre of a volume's voxel grid."""
    half = (np.asarray(volume.array.shape[::-1]) - 1) / 2.0 * np.asarray(volume.spacing)
    return np.asarray(volume.origin) + np.asarray(volume.direction) @ half


def resample_centred(gt: Volume, reference: Volume, outside: float = OUTSIDE_HU, nearest: bool = False) -> Volume:
    """``gt`` resampled onto ``reference``'s grid, the centres made to coincide (see the module docstring)."""
    import SimpleITK as sitk

    shift = sitk.TranslationTransform(3, tuple(float(v) for v in centre(gt) - centre(reference)))
    reference_image = volume_to_sitk(reference.with_array(np.zeros(reference.array.shape, np.float32)))
    image = sitk.Cast(volume_to_sitk(gt), sitk.sitkFloat32)
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    resampled = sitk.Resample(image, reference_image, shift, interpolator, float(outside), sitk.sitkFloat32)
    return volume_from_sitk(resampled)


def coverage(gt: Volume, reference: Volume) -> float:
    """Share of ``reference``'s voxels whose centres lie inside ``gt``'s field, the centres aligned."""
    inside = resample_centred(gt.with_array(np.ones(gt.array.shape, np.float32)), reference, 0.0, nearest=True)
    return float(inside.array.mean())


def compare_centred(pred: Volume, gt: Volume, **evaluate_options) -> tuple[Volume, Volume, dict]:
    """(GT on the prediction's grid, difference pred - GT in HU, metrics of every convention).

    The metrics also hold the ground truth's coverage of the prediction's grid
    (COVERAGE_SECTION); below MIN_COVERAGE the comparison is refused.
    ``evaluate_options`` go to ``evaluate_volumes`` (``hu_range``...).
    """
    covered = coverage(gt, pred)
    if covered < MIN_COVERAGE:
        sizes = ["x".join(f"{n * s:.0f}" for n, s in zip(v.array.shape[::-1], v.spacing)) for v in (gt, pred)]
        raise InputError(f"The ground truth ({sizes[0]} mm) covers only {covered:.0%} of the prediction's grid "
                         f"({sizes[1]} mm) with their centres aligned, so the metrics would mostly score the "
                         f"padding. Give a ground-truth CT of the same region (at least {MIN_COVERAGE:.0%}).")
    aligned = resample_centred(gt, pred)
    difference = pred.with_array(np.asarray(pred.array, np.float32) - aligned.array)
    metrics = evaluate_volumes(pred, aligned, **evaluate_options)
    metrics[COVERAGE_SECTION] = {"ground_truth_coverage": covered}
    return aligned, difference, metrics
