"""Lung Dice: does the reconstruction put the lungs where the ground truth has them?

Lung masks come from HU thresholds, applied the same way to both volumes, so
the score needs no segmentation model: voxels with -950 < HU < -400 inside
the body, keeping the two largest connected pieces (left and right lung; one
piece when they touch). The body is the largest connected region above
-500 HU with its holes (lungs, airways) filled slice by slice in the axial
plane (axis 0 of the canonical frame), because airways open the 3D hole to
the outside at the top of the volume. Pieces smaller than a tenth of the
largest or than 0.1% of the volume (bowel or stomach gas, noise) are dropped,
so a volume without lungs gets an empty mask. When an organ label map of the
ground truth is given, the lungs it labels give a second, independent
reference mask.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from x2ct.errors import InputError
from x2ct.metrics.core import volume_pair

LUNG_HU = (-950.0, -400.0)
BODY_HU = -500.0
MIN_PIECE_FRACTION = 0.1  # of the largest piece
MIN_PIECE_VOLUME_FRACTION = 0.001  # of the whole volume


def _largest_pieces(mask: np.ndarray, count: int, min_fraction: float = 0.0, min_size: int = 0) -> np.ndarray:
    """The ``count`` largest connected pieces of at least ``min_fraction`` of the largest and ``min_size``."""
    from scipy import ndimage  # here, not at import: the CLI and Slicer import x2ct.metrics at start-up

    labels, found = ndimage.label(mask)
    if found == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:count]
    keep = [index + 1 for index in order if sizes[index] >= max(min_fraction * sizes[order[0]], min_size)]
    return np.isin(labels, keep)


def body_mask(hu: np.ndarray, body_hu: float = BODY_HU) -> np.ndarray:
    """Largest connected region above ``body_hu``, holes filled in each axial slice."""
    from scipy import ndimage

    body = _largest_pieces(hu > body_hu, 1)
    return np.stack([ndimage.binary_fill_holes(plane) for plane in body])


def lung_mask(hu, lung_hu: tuple[float, float] = LUNG_HU, body_hu: float = BODY_HU) -> np.ndarray:
    """Boolean lung mask of a (D, H, W) HU volume in the canonical frame (see the module docstring)."""
    hu = np.asarray(hu)
    candidates = (hu > lung_hu[0]) & (hu < lung_hu[1]) & body_mask(hu, body_hu)
    return _largest_pieces(candidates, 2, MIN_PIECE_FRACTION, int(MIN_PIECE_VOLUME_FRACTION * hu.size))


def lung_label_ids(structures_csv) -> list[int]:
    """Label ids of the lung lobes in a structures table (columns ``id`` and ``structure``).

    Lobes are the structures named ``lung_*lobe*`` (TotalSegmentator's names,
    as in the chest CT sample's ``chest-ct-structures.csv``).
    """
    path = Path(structures_csv)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: Excel's byte-order mark
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise InputError(f"Cannot read the structures table {path}: {error.strerror}.") from None
    except (UnicodeDecodeError, csv.Error):
        raise InputError(f"The structures table {path} is not a UTF-8 CSV file; save it as CSV UTF-8 "
                         "(columns 'id' and 'structure').") from None
    if not rows or not {"id", "structure"} <= set(rows[0]):
        raise InputError(f"The structures table {path} needs the columns 'id' and 'structure' "
                         "(one row per label value).")
    lobes = [row for row in rows if str(row["structure"] or "").strip().lower().startswith("lung_")
             and "lobe" in str(row["structure"]).lower()]
    ids = []
    for row in lobes:
        try:
            ids.append(int(str(row["id"]).strip()))
        except ValueError:
            raise InputError(f"The structures table {path} has the id {row['id']!r}, not a whole number; ids are "
                             "the label map's values.") from None
    if not ids:
        raise InputError(f"The structures table {path} names no lung lobe (lung_*lobe*); "
                         "pass a table of the label map's lung labels.")
    return ids


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (MONAI); NaN when the second (reference) mask is empty."""
    import torch
    from monai.metrics import compute_dice

    x = torch.as_tensor(np.asarray(a, bool))[None, None]
    y = torch.as_tensor(np.asarray(b, bool))[None, None]
    return float(compute_dice(x, y, include_background=True, ignore_empty=True)[0, 0])


def lung_dice(pred_hu, gt_hu, labels=None, lung_ids=None) -> dict:
    """Lung Dice of two HU volumes; with ``labels`` (an id map on the ground-truth grid), also by label.

    Returns ``threshold`` (prediction mask vs ground-truth mask, both by
    threshold) and, with labels, ``label`` (prediction mask vs the labelled
    lungs) and ``gt_threshold_vs_label`` (how well the threshold finds the
    labelled lungs on the ground truth itself: the scale to read ``label``
    against; not a strict ceiling, a smooth prediction can match slightly
    better).
    """
    pred_hu, gt_hu = volume_pair(pred_hu, gt_hu)
    predicted = lung_mask(pred_hu)
    reference = lung_mask(gt_hu)
    result = {"threshold": dice(predicted, reference)}
    if labels is not None:
        if lung_ids is None:
            raise InputError("A label map needs the label values that mark lung (lung_ids); read them from "
                             "its structures table with x2ct.metrics.lung_label_ids.")
        labels = np.asarray(labels)
        if labels.shape != reference.shape:
            raise InputError(f"The label map {labels.shape} and the ground truth {reference.shape} differ in "
                             "shape; give the label map of the ground-truth CT, on its grid.")
        labelled = np.isin(np.rint(labels).astype(np.int64), list(lung_ids))
        result["label"] = dice(predicted, labelled)
        result["gt_threshold_vs_label"] = dice(reference, labelled)
    return result
