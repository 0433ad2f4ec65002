"""``evaluate``, HU volumes from files, re-projection consistency and the ``x2ct evaluate`` command."""

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from x2ct.cli import main
from x2ct.errors import InputError
from x2ct.image import CANONICAL_DIRECTION, Volume, XRay, volume_to_sitk
from x2ct.io import read_ct
from x2ct.metrics import (CONVENTIONS, alignment, evaluate, evaluate_volumes, honest_metrics, json_ready, normalise_hu,
                          reprojection_consistency, x2ct_metrics)

SHAPE = (14, 16, 18)


def _hu_pair(seed=0):
    """A ground-truth HU volume (air, a trunk, two lungs) and a noisy prediction of it."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    gt = np.full(SHAPE, -1000.0, np.float32)
    trunk = ((grids[1] - 8) / 6) ** 2 + ((grids[2] - 9) / 8) ** 2 <= 1
    gt[trunk] = 40.0
    for centre in (5, 13):
        gt[trunk & (((grids[1] - 8) / 3) ** 2 + ((grids[2] - centre) / 2.5) ** 2 <= 1)] = -800.0
    pred = (gt + rng.normal(0, 60, SHAPE)).astype(np.float32)
    return pred, gt


def test_evaluate_returns_every_labelled_convention():
    pred_hu, gt_hu = _hu_pair()
    pred, gt = normalise_hu(pred_hu), normalise_hu(gt_hu)
    result = evaluate(pred, gt)
    assert list(result) == list(CONVENTIONS) == ["x2ct", "repeat_concatenate", "honest", "lung_dice"]
    assert result["x2ct"] == x2ct_metrics(pred, gt)
    assert result["honest"] == honest_metrics(pred, gt)
    assert 0.5 < result["lung_dice"]["threshold"] <= 1.0


def test_normalise_hu_clips_to_the_window():
    values = normalise_hu(np.array([-2000.0, -1024.0, 226.0, 1476.0, 3000.0]))
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, [0, 0, 0.5, 1, 1])
    with pytest.raises(InputError, match="hu_min < hu_max"):
        normalise_hu(np.zeros(3), (100, -100))


def test_evaluate_volumes_reorients_before_comparing():
    pred_hu, gt_hu = _hu_pair()
    gt = Volume(gt_hu, (0.8, 0.9, 1.1), (0, 0, 0), CANONICAL_DIRECTION)
    canonical_pred = Volume(pred_hu, gt.spacing, (0, 0, 0), CANONICAL_DIRECTION)
    # the same prediction stored with k running superior (direction +z), as many files are
    flipped = Volume(pred_hu[::-1].copy(), gt.spacing, (0, 0, -1.1 * (SHAPE[0] - 1)), np.eye(3))
    expected = evaluate(normalise_hu(pred_hu), normalise_hu(gt_hu))
    assert evaluate_volumes(canonical_pred, gt) == expected
    assert evaluate_volumes(flipped, gt) == expected


def test_evaluate_volumes_refuses_another_grid():
    pred_hu, gt_hu = _hu_pair()
    gt = Volume(gt_hu, (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="resample the prediction onto the ground-truth grid"):
        evaluate_volumes(Volume(pred_hu, (1.0, 1.0, 2.0)), gt)
    with pytest.raises(InputError, match="differs from the ground truth"):
        evaluate_volumes(Volume(pred_hu[:, :, :-1], (1.0, 1.0, 1.0)), gt)
    with pytest.raises(InputError, match="label map grid"):
        evaluate_volumes(Volume(pred_hu), gt, labels=Volume(np.zeros((2, 2, 2))), lung_ids=[1])
    with pytest.raises(InputError, match="NaN"):
        evaluate_volumes(Volume(np.full(SHAPE, np.nan, np.float32)), gt)


def test_json_ready_turns_undefined_values_into_null():
    data = {"a": math.inf, "b": [1.0, math.nan], "c": {"d": 2.5, "e": -math.inf}, "f": "text"}
    assert json_ready(data) == {"a": None, "b": [1.0, None], "c": {"d": 2.5, "e": None}, "f": "text"}


def test_reprojection_consistency_per_view():
    rng = np.random.default_rng(0)
    xrays = rng.random((2, 12, 10))
    # a DRR in other units (gain and offset) is the same image: NCC 1, PSNR inf after min-max scaling
    same = reprojection_consistency(xrays, [3 * xrays[0] + 7, 0.5 * xrays[1]])
    assert same["ncc_by_view"] == pytest.approx([1.0, 1.0])
    assert same["psnr_db"] == math.inf
    noisy = xrays + 0.1 * rng.standard_normal(xrays.shape)
    result = reprojection_consistency([XRay(x) for x in xrays], list(noisy))
    expected_ncc = [np.corrcoef(x.ravel(), n.ravel())[0, 1] for x, n in zip(xrays, noisy)]
    assert result["ncc_by_view"] == pytest.approx(expected_ncc, abs=1e-12)
    assert result["ncc"] == pytest.approx(np.mean(expected_ncc))
    scaled = [(n - n.min()) / (n.max() - n.min()) for n in noisy]
    expected_psnr = [10 * np.log10(1 / np.mean(((x - x.min()) / (x.max() - x.min()) - s) ** 2))
                     for x, s in zip(xrays, scaled)]
    assert result["psnr_db_by_view"] == pytest.approx(expected_psnr)


def test_reprojection_consistency_errors():
    image = np.zeros((8, 8))
    with pytest.raises(InputError, match="one DRR per X-ray"):
        reprojection_consistency([image, image], [image])
    with pytest.raises(InputError, match="render the DRR at the X-ray's size"):
        reprojection_consistency(image, np.zeros((8, 9)))
    with pytest.raises(InputError, match="2D image"):
        reprojection_consistency([np.zeros(8)], [np.zeros(8)])


def _write(path, array, spacing=(1.0, 1.0, 1.0)):
    sitk.WriteImage(volume_to_sitk(Volume(array, spacing, (0, 0, 0), CANONICAL_DIRECTION)), str(path))
    return str(path)


def test_cli_prints_json_and_a_table(tmp_path, capsys):
    pred_hu, gt_hu = _hu_pair()
    pred, gt = _write(tmp_path / "pred.mha", pred_hu), _write(tmp_path / "gt.mha", gt_hu)
    assert main(["evaluate", "--pred", pred, "--gt", gt, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = evaluate_volumes(read_ct(pred), read_ct(gt))
    assert printed["x2ct"]["psnr_3d_db"] == pytest.approx(expected["x2ct"]["psnr_3d_db"])
    assert printed["honest"]["ssim_3d"] == pytest.approx(expected["honest"]["ssim_3d"])
    assert main(["evaluate", "--pred", gt, "--gt", gt, "--json"]) == 0
    identical = json.loads(capsys.readouterr().out)
    assert identical["honest"]["psnr_db"] is None and identical["x2ct"]["psnr_3d_db"] == 100.0
    assert main(["evaluate", "--pred", pred, "--gt", gt, "--hu-min", "-1000", "--hu-max", "1000"]) == 0
    table = capsys.readouterr().out
    assert "HU window [-1000, 1000]" in table
    for section in CONVENTIONS:
        assert f"{section}: " in table
    assert "psnr_3d_db" in table and "axial" in table


def test_cli_labels_need_their_structures_table(tmp_path, capsys):
    pred_hu, gt_hu = _hu_pair()
    pred, gt = _write(tmp_path / "pred.mha", pred_hu), _write(tmp_path / "gt.mha", gt_hu)
    labels = _write(tmp_path / "labels.mha", np.where(gt_hu == -800.0, 11, 0).astype(np.uint8))
    table = tmp_path / "structures.csv"
    table.write_text("id,structure\n11,lung_lower_lobe_left\n")
    assert main(["evaluate", "--pred", pred, "--gt", gt, "--labels", labels, "--structures", str(table),
                 "--json"]) == 0
    lung = json.loads(capsys.readouterr().out)["lung_dice"]
    assert lung["gt_threshold_vs_label"] == 1.0 and 0.5 < lung["label"] <= 1.0
    assert main(["evaluate", "--pred", pred, "--gt", gt, "--labels", labels]) == 2
    assert "--labels and --structures go together" in capsys.readouterr().err


def test_cli_reports_a_grid_mismatch_in_one_line(tmp_path, capsys):
    pred_hu, gt_hu = _hu_pair()
    pred = _write(tmp_path / "pred.mha", pred_hu, spacing=(2.0, 2.0, 2.0))
    gt = _write(tmp_path / "gt.mha", gt_hu)
    assert main(["evaluate", "--pred", pred, "--gt", gt]) == 2
    error = capsys.readouterr().err
    assert error.startswith("x2ct evaluate: error:") and "resample the prediction" in error
    assert len(error.strip().splitlines()) == 1


def test_aligned_comparison_reports_the_ground_truths_coverage_and_refuses_almost_none(tmp_path, capsys):
    pred_hu, gt_hu = _hu_pair()
    pred = Volume(pred_hu, (2.0, 2.0, 2.0), (-50.0, 20.0, 300.0), CANONICAL_DIRECTION.copy())
    whole = Volume(gt_hu, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), CANONICAL_DIRECTION.copy())
    assert alignment.compare_centred(pred, whole)[2]["alignment"] == {"ground_truth_coverage": 1.0}
    half = Volume(np.ascontiguousarray(gt_hu[3:10]), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), CANONICAL_DIRECTION.copy())
    aligned, _, metrics = alignment.compare_centred(pred, half)  # a scan of half the height: 7 of 14 slices
    assert metrics["alignment"]["ground_truth_coverage"] == pytest.approx(0.5)
    assert np.all(aligned.array[:3] == alignment.OUTSIDE_HU) and np.all(aligned.array[-4:] == alignment.OUTSIDE_HU)
    tiny = Volume(np.zeros((2, 2, 2), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), CANONICAL_DIRECTION.copy())
    with pytest.raises(InputError, match=r"covers only 0% of the prediction's grid \(36x32x28 mm\)"):
        alignment.compare_centred(pred, tiny)

    paths = [_write(tmp_path / name, volume.array) for name, volume in (("pred.mha", pred), ("half.mha", half))]
    assert main(["evaluate", "--pred", paths[0], "--gt", paths[1], "--align-centres"]) == 0
    table = capsys.readouterr().out
    assert f"alignment: {alignment.COVERAGE_DEFINITION}" in table and "ground_truth_coverage    0.5" in table
