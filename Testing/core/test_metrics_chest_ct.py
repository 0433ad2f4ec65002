"""Metrics on the real chest CT (downsampled to 67x64x64) against skimage and its organ labels."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from x2ct import sampledata
from x2ct.cli import main
from x2ct.image import Volume, to_canonical, volume_from_sitk, volume_to_sitk
from x2ct.metrics import dice, evaluate, honest_metrics, lung_label_ids, lung_mask, normalise_hu, x2ct_metrics

pytestmark = pytest.mark.sampledata


@pytest.fixture(scope="module")
def chest():
    """Canonical HU volume and label map, every 2nd axial slice and every 8th row and column."""
    files = sampledata.fetch("chest-ct")
    ct, labels = (to_canonical(volume_from_sitk(sitk.ReadImage(str(files[name]))))
                  for name in ("chest-ct.nii.gz", "chest-ct-labels.nii.gz"))
    step = np.array([8, 8, 2])  # (i, j, k)
    small = {name: Volume(np.ascontiguousarray(volume.array[::2, ::8, ::8]), tuple(step * volume.spacing),
                          volume.origin, volume.direction) for name, volume in (("ct", ct), ("labels", labels))}
    small["lung_ids"] = lung_label_ids(files["chest-ct-structures.csv"])
    small["structures"] = files["chest-ct-structures.csv"]
    return small


def _prediction(gt, blur=0.8, noise=0.03):
    rng = np.random.default_rng(0)
    return (ndimage.gaussian_filter(gt, blur) + noise * rng.standard_normal(gt.shape)).astype(np.float32)


def test_real_volume_matches_skimage(chest):
    gt = normalise_hu(chest["ct"].array)
    pred = _prediction(gt)
    clipped, g = np.clip(pred, 0, 1).astype(np.float64), gt.astype(np.float64)
    x2ct = x2ct_metrics(pred, gt)
    for axis, plane in enumerate(("axial", "coronal", "sagittal")):
        slices = [structural_similarity(np.take(clipped, i, axis), np.take(g, i, axis), win_size=7,
                                        data_range=1.0, gaussian_weights=False) for i in range(gt.shape[axis])]
        assert x2ct["ssim_2d_by_plane"][plane] == pytest.approx(np.mean(slices), abs=1e-12)
    honest = honest_metrics(pred, gt)
    assert honest["psnr_db"] == pytest.approx(peak_signal_noise_ratio(g, pred.astype(np.float64), data_range=1))
    reference = structural_similarity(g, pred.astype(np.float64), data_range=1.0, gaussian_weights=True,
                                      sigma=1.5, use_sample_covariance=False)
    assert honest["ssim_3d"] == pytest.approx(reference, abs=1e-5)  # MONAI runs in float32


def test_threshold_lungs_agree_with_the_labelled_lobes(chest):
    labelled = np.isin(chest["labels"].array, chest["lung_ids"])
    assert chest["lung_ids"] == [10, 11, 12, 13, 14]
    assert dice(lung_mask(chest["ct"].array), labelled) > 0.93  # 0.964 measured


def test_blurrier_reconstructions_score_lower(chest):
    gt = normalise_hu(chest["ct"].array)
    labels = dict(labels=chest["labels"].array, lung_ids=chest["lung_ids"])
    sharp = evaluate(_prediction(gt, blur=0.5), gt, **labels)
    blurred = evaluate(_prediction(gt, blur=2.0), gt, **labels)
    for section, key in (("x2ct", "psnr_3d_db"), ("x2ct", "ssim_2d"), ("repeat_concatenate", "ssim_2d"),
                         ("honest", "ssim_3d"), ("lung_dice", "threshold"), ("lung_dice", "label")):
        assert sharp[section][key] > blurred[section][key], (section, key)
    assert sharp["lung_dice"]["gt_threshold_vs_label"] == blurred["lung_dice"]["gt_threshold_vs_label"] > 0.93


def test_cli_on_the_chest_ct_with_labels(chest, tmp_path, capsys):
    paths = {}
    for name, array in (("gt", chest["ct"].array), ("pred", ndimage.gaussian_filter(chest["ct"].array, 1.0)),
                        ("labels", chest["labels"].array)):
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        sitk.WriteImage(volume_to_sitk(chest["ct"].with_array(array)), paths[name])
    assert main(["evaluate", "--pred", paths["pred"], "--gt", paths["gt"], "--labels", paths["labels"],
                 "--structures", str(chest["structures"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lung_dice"]["gt_threshold_vs_label"] > 0.93
    assert 0 < result["honest"]["ssim_3d"] < 1 and result["x2ct"]["psnr_3d_db"] > result["honest"]["psnr_db"]
