"""Lung masks by threshold and lung Dice, on a phantom with known lungs."""

import math

import numpy as np
import pytest

from x2ct.errors import InputError
from x2ct.metrics import dice, lung_dice, lung_label_ids, lung_mask

SHAPE = (24, 28, 32)  # canonical (superior->inferior, anterior->posterior, right->left)


def _ellipsoid(centre, radii, shape=SHAPE):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1


def _chest(lung_shift=0):
    """Air, a soft-tissue trunk, a table below it, two lungs and a small gas bubble; returns (HU, lungs)."""
    hu = np.full(SHAPE, -1000.0)
    trunk = _ellipsoid((12, 13, 16), (30, 10, 14))
    hu[trunk] = 40.0
    hu[:, 25:27, 4:28] = 200.0  # the table, not touching the trunk
    lungs = (_ellipsoid((10 + lung_shift, 12, 10), (7, 6, 4))
             | _ellipsoid((10 + lung_shift, 12, 22), (7, 6, 4)))
    hu[lungs] = -800.0
    hu[_ellipsoid((21, 14, 16), (1, 1, 1))] = -700.0  # bowel gas: far smaller than a lung
    return hu, lungs


def test_lung_mask_finds_exactly_the_lungs():
    hu, lungs = _chest()
    mask = lung_mask(hu)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, lungs)


def test_outside_air_and_the_table_never_count_as_lung():
    hu, _ = _chest()
    hu[hu == -1000.0] = -700.0  # air outside the body in the lung window
    hu[:, 25:27, 4:28] = -700.0  # a table made of lung-like values
    _, lungs = _chest()
    np.testing.assert_array_equal(lung_mask(hu), lungs)


def test_lung_dice_is_one_for_the_same_lungs_and_the_overlap_for_shifted_ones():
    gt, gt_lungs = _chest()
    assert lung_dice(gt, gt) == {"threshold": 1.0}
    pred, pred_lungs = _chest(lung_shift=2)
    expected = 2 * (gt_lungs & pred_lungs).sum() / (gt_lungs.sum() + pred_lungs.sum())
    assert lung_dice(pred, gt)["threshold"] == pytest.approx(expected)
    assert 0.5 < expected < 0.95


def test_lung_dice_is_undefined_without_lungs_in_the_ground_truth():
    gt, _ = _chest()
    gt[gt == -800.0] = 40.0
    pred, _ = _chest()
    assert math.isnan(lung_dice(pred, gt)["threshold"])


def test_lung_dice_by_label():
    gt, lungs = _chest()
    labels = np.zeros(SHAPE, np.uint8)
    labels[lungs & (np.arange(SHAPE[2]) < 16)] = 12  # right lung
    labels[lungs & (np.arange(SHAPE[2]) >= 16)] = 10  # left lung
    labels[gt == 200.0] = 3  # something else
    result = lung_dice(gt, gt, labels=labels, lung_ids=[10, 12])
    assert result == {"threshold": 1.0, "label": 1.0, "gt_threshold_vs_label": 1.0}
    half = lung_dice(gt, gt, labels=np.where(labels == 12, 0, labels), lung_ids=[10, 12])
    assert half["label"] == pytest.approx(2 * 0.5 / 1.5, abs=0.02)


def test_label_map_errors():
    gt, _ = _chest()
    with pytest.raises(InputError, match="lung_ids"):
        lung_dice(gt, gt, labels=np.zeros(SHAPE))
    with pytest.raises(InputError, match="differ in shape"):
        lung_dice(gt, gt, labels=np.zeros((2, 2, 2)), lung_ids=[1])


def test_dice_of_masks():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2], b[1:3] = True, True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


def test_lung_label_ids_reads_lobes_by_name(tmp_path):
    table = tmp_path / "structures.csv"
    table.write_text("group,original_idx,structure,id\norgans,5,liver,5\norgans,10,lung_upper_lobe_left,31\n"
                     "organs,14,lung_lower_lobe_right,35\norgans,16,trachea,16\n")
    assert lung_label_ids(table) == [31, 35]
    table.write_text("id,structure\n1,liver\n")
    with pytest.raises(InputError, match="no lung lobe"):
        lung_label_ids(table)
    table.write_text("value,name\n1,lung_upper_lobe_left\n")
    with pytest.raises(InputError, match="columns 'id' and 'structure'"):
        lung_label_ids(table)
    with pytest.raises(InputError, match="Cannot read"):
        lung_label_ids(tmp_path / "missing.csv")


def test_lung_dice_needs_two_volumes_of_one_shape():
    gt, _ = _chest()
    with pytest.raises(InputError, match="differ in shape"):
        lung_dice(gt[:-1], gt)
