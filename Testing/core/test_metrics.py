"""Metric conventions against skimage (PSNR, SSIM) and their published scale facts."""

import json
import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from x2ct.errors import InputError
from x2ct.metrics import (honest_metrics, json_ready, ncc, repeat_concatenate_metrics, ssim_3d, ssim_by_slice,
                          x2ct_metrics)

SHAPE = (14, 17, 20)  # distinct sides, so a swapped axis cannot pass


def _pair(shape=SHAPE, noise=0.1, seed=0):
    """A smooth ground truth in [0, 1] and a noisy prediction that leaves [0, 1] in places."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    gt = (0.5 + 0.4 * np.sin(3 * grids[0] + 2 * grids[1]) * np.cos(4 * grids[2])).astype(np.float32)
    pred = (gt + noise * rng.standard_normal(shape)).astype(np.float32)
    return pred, gt


def _skimage_slices(pred, gt, axis):
    return np.array([structural_similarity(np.take(pred, i, axis), np.take(gt, i, axis), win_size=7,
                                           data_range=1.0, gaussian_weights=False)
                     for i in range(pred.shape[axis])])


def _mid_bins(shape, scale, seed):
    """Values at the middle of integer bins, so truncation is exact: (k + 0.5) / scale."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, scale, size=shape) + 0.5) / scale


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_ssim_by_slice_equals_skimage_on_every_slice(axis):
    pred, gt = _pair()
    ours = ssim_by_slice(pred.astype(np.float64), gt.astype(np.float64), axis)
    reference = _skimage_slices(pred.astype(np.float64), gt.astype(np.float64), axis)
    assert ours.shape == (SHAPE[axis],)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)


def test_x2ct_ssim_averages_planes_of_the_clipped_prediction():
    pred, gt = _pair()
    clipped = np.clip(pred, 0, 1).astype(np.float64)
    planes = [_skimage_slices(clipped, gt.astype(np.float64), axis).mean() for axis in range(3)]
    result = x2ct_metrics(pred, gt)
    assert result["ssim_2d_by_plane"] == pytest.approx(dict(zip(("axial", "coronal", "sagittal"), planes)),
                                                       abs=1e-12)
    assert result["ssim_2d"] == pytest.approx(np.mean(planes), abs=1e-12)


def test_x2ct_psnr_is_unit_psnr_plus_4_29_db_without_rounding():
    gt, pred = _mid_bins(SHAPE, 2500, 1), _mid_bins(SHAPE, 2500, 2)
    result = x2ct_metrics(pred, gt)
    unit_psnr = peak_signal_noise_ratio(gt, pred, data_range=1.0)
    assert 20 * math.log10(4095 / 2500) == pytest.approx(4.29, abs=5e-3)
    assert result["psnr_3d_db"] == pytest.approx(unit_psnr + 20 * math.log10(4095 / 2500), abs=1e-9)
    assert result["mae_2500"] == pytest.approx(2500 * result["mae"], rel=1e-9)
    assert result["mse_2500"] == pytest.approx(2500 ** 2 * result["mse"], rel=1e-9)


def test_x2ct_2d_psnr_is_the_mean_of_per_slice_skimage_psnr_on_integers():
    gt, pred = _mid_bins(SHAPE, 2500, 3), _mid_bins(SHAPE, 2500, 4)
    gi, pi = np.trunc(gt * 2500), np.trunc(pred * 2500)
    planes = [np.mean([peak_signal_noise_ratio(np.take(gi, i, axis), np.take(pi, i, axis), data_range=4095)
                       for i in range(SHAPE[axis])]) for axis in range(3)]
    result = x2ct_metrics(pred, gt)
    assert list(result["psnr_2d_db_by_plane"].values()) == pytest.approx(planes, abs=1e-9)
    assert result["psnr_2d_db"] == pytest.approx(np.mean(planes), abs=1e-9)


def test_x2ct_truncates_to_integers_like_the_reference_code():
    gt = np.zeros(SHAPE)
    below_one_unit = np.full(SHAPE, 0.9 / 2500)  # int32(0.9) == 0: no error left
    assert x2ct_metrics(below_one_unit, gt)["psnr_3d_db"] == 100.0
    one_unit = np.full(SHAPE, 1.2 / 2500)  # int32(1.2) == 1: an error of one unit everywhere
    assert x2ct_metrics(one_unit, gt)["psnr_3d_db"] == pytest.approx(20 * math.log10(4095), abs=1e-9)
    # the honest convention sees the sub-unit error
    assert honest_metrics(below_one_unit, gt)["psnr_db"] == pytest.approx(-20 * math.log10(0.9 / 2500))


def test_x2ct_scores_a_slice_without_error_as_100_db():
    pred, gt = _pair(noise=0.05)
    pred = np.clip(pred, 0, 1)
    pred[3] = gt[3]  # one exact axial slice
    gi, pi = np.trunc(gt * 2500), np.trunc(pred * 2500)
    axial = [100.0 if i == 3 else peak_signal_noise_ratio(gi[i], pi[i], data_range=4095) for i in range(SHAPE[0])]
    assert x2ct_metrics(pred, gt)["psnr_2d_db_by_plane"]["axial"] == pytest.approx(np.mean(axial), abs=1e-9)


def test_x2ct_clips_the_prediction_and_honest_does_not():
    pred, gt = _pair(noise=0.2)
    assert pred.min() < 0 and pred.max() > 1
    assert x2ct_metrics(pred, gt) == x2ct_metrics(np.clip(pred, 0, 1), gt)
    assert honest_metrics(pred, gt)["mse"] > honest_metrics(np.clip(pred, 0, 1), gt)["mse"]


def test_x2ct_cosine_similarity_and_unit_errors():
    pred, gt = _pair()
    clipped = np.clip(pred, 0, 1).astype(np.float64)
    g = gt.astype(np.float64)
    result = x2ct_metrics(pred, gt)
    assert result["cosine_similarity"] == pytest.approx(np.dot(clipped.ravel(), g.ravel())
                                                        / np.linalg.norm(clipped) / np.linalg.norm(g))
    assert result["mae"] == pytest.approx(np.abs(clipped - g).mean())
    assert result["mse"] == pytest.approx(np.square(clipped - g).mean())


def test_repeat_concatenate_psnr_on_2000_and_ssim_without_axial_slices():
    gt, pred = _mid_bins(SHAPE, 2000, 5), _mid_bins(SHAPE, 2000, 6)
    result = repeat_concatenate_metrics(pred, gt)
    unit_psnr = peak_signal_noise_ratio(gt, pred, data_range=1.0)
    assert result["psnr_3d_db"] == pytest.approx(unit_psnr + 20 * math.log10(4095 / 2000), abs=1e-9)
    coronal, sagittal = (_skimage_slices(pred, gt, axis).mean() for axis in (1, 2))
    assert result["ssim_2d"] == pytest.approx((coronal + 2 * sagittal) / 3, abs=1e-12)


def test_honest_metrics_match_skimage_psnr_and_3d_gaussian_ssim():
    pred, gt = _pair(shape=(20, 23, 26), noise=0.08)
    result = honest_metrics(pred, gt, hu_range=(-1000, 1000))
    p, g = pred.astype(np.float64), gt.astype(np.float64)
    assert result["psnr_db"] == pytest.approx(peak_signal_noise_ratio(g, p, data_range=1.0), abs=1e-9)
    reference = structural_similarity(g, p, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert result["ssim_3d"] == pytest.approx(reference, abs=1e-5)  # MONAI runs in float32
    assert result["mae_hu"] == pytest.approx(2000 * np.abs(p - g).mean())


def test_identical_volumes_score_perfectly_and_serialise_as_valid_json():
    _, gt = _pair()
    x2ct, honest = x2ct_metrics(gt, gt), honest_metrics(gt, gt)
    assert x2ct["psnr_3d_db"] == x2ct["psnr_2d_db"] == 100.0
    assert x2ct["ssim_2d"] == pytest.approx(1.0) and honest["ssim_3d"] == pytest.approx(1.0, abs=1e-6)
    assert honest["psnr_db"] == math.inf and honest["mae"] == 0.0
    assert json.loads(json.dumps(json_ready(honest), allow_nan=False))["psnr_db"] is None


def test_torch_tensors_give_the_numpy_result():
    pred, gt = _pair()
    assert x2ct_metrics(torch.from_numpy(pred), torch.from_numpy(gt)) == x2ct_metrics(pred, gt)


def test_worse_predictions_score_worse_in_every_convention():
    _, gt = _pair()
    good, bad = _pair(noise=0.03, seed=1)[0], _pair(noise=0.15, seed=1)[0]
    for metrics, keys in ((x2ct_metrics, ("psnr_3d_db", "psnr_2d_db", "ssim_2d")),
                          (repeat_concatenate_metrics, ("psnr_3d_db", "ssim_2d")),
                          (honest_metrics, ("psnr_db", "ssim_3d"))):
        good_result, bad_result = metrics(good, gt), metrics(bad, gt)
        assert all(good_result[key] > bad_result[key] for key in keys)


@pytest.mark.parametrize("pred,gt,message", [
    (np.zeros((12, 12, 12)), np.zeros((12, 12, 13)), "differ in shape"),
    (np.zeros((12, 12)), np.zeros((12, 12)), "3D volume"),
    (np.full((12, 12, 12), np.nan), np.zeros((12, 12, 12)), "NaN"),
    (np.zeros((12, 12, 12)), np.full((12, 12, 12), np.inf), "NaN or infinite"),
    (np.zeros((12, 12, 5)), np.zeros((12, 12, 5)), "too small"),
    (np.zeros((12, 12, 12)), np.full((12, 12, 12), -1024.0), "not \\[0, 1\\]"),
])
def test_unusable_inputs_raise_input_errors(pred, gt, message):
    with pytest.raises(InputError, match=message):
        x2ct_metrics(pred, gt)


def test_honest_ssim_needs_the_11_voxel_window():
    with pytest.raises(InputError, match="at least 11"):
        honest_metrics(np.zeros((10, 12, 12)), np.zeros((10, 12, 12)))
    with pytest.raises(InputError, match="window"):
        ssim_3d(np.zeros((10, 12, 12)), np.zeros((10, 12, 12)))


def test_ncc_is_pearson_correlation_and_ignores_gain_and_offset():
    rng = np.random.default_rng(0)
    a = rng.random((9, 11))
    b = a + 0.3 * rng.random((9, 11))
    assert ncc(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-12)
    assert ncc(a, 5 * a + 2) == pytest.approx(1.0)
    assert ncc(a, -a) == pytest.approx(-1.0)
    assert math.isnan(ncc(a, np.ones_like(a)))
    with pytest.raises(InputError, match="same shape"):
        ncc(a, a.T)
