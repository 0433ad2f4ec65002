"""Pseudo-patient simulator: deterministic, varied, chest-like, nodules inside the lungs, disjoint seed splits."""

import json

import numpy as np
import pytest
from scipy import ndimage

from x2ct.cli import main
from x2ct.data import simulate
from x2ct.data.protocol import X2CT
from x2ct.errors import InputError

pytestmark = pytest.mark.sampledata

#: 64^3 at 5 mm keeps each pseudo-patient well under a second here.
PROTOCOL = X2CT.with_size(64)


@pytest.fixture(scope="module")
def template():
    return simulate.load_template(PROTOCOL.size)


def _lungs(patient, template):
    return np.isin(patient.labels.array, template.lung_labels)


def test_same_seed_same_patient_and_seeds_differ():
    first = simulate.pseudo_patient(7, PROTOCOL)
    again = simulate.pseudo_patient(7, PROTOCOL)
    other = simulate.pseudo_patient(8, PROTOCOL)
    np.testing.assert_array_equal(first.ct.array, again.ct.array)
    np.testing.assert_array_equal(first.labels.array, again.labels.array)
    assert first.parameters == again.parameters
    assert np.abs(first.ct.array - other.ct.array).mean() > 20.0
    assert first.parameters["scale_si_ap_lr"] != other.parameters["scale_si_ap_lr"]


def test_geometry_is_the_protocol_grid_of_the_template():
    from x2ct import sampledata
    from x2ct.io import read_ct

    patient = simulate.pseudo_patient(3, PROTOCOL)
    grid = PROTOCOL.output_grid(read_ct(sampledata.path("chest-ct")))
    assert patient.ct.shape == patient.labels.shape == (64, 64, 64)
    assert patient.ct.spacing == (grid.spacing,) * 3 == (5.0, 5.0, 5.0)
    assert np.allclose(patient.ct.origin, grid.origin) and patient.labels.origin == patient.ct.origin
    assert patient.ct.array.dtype == np.float32 and patient.labels.array.dtype == np.uint8


def test_intensities_and_lung_volume_are_chest_like(template):
    for seed in range(6):
        patient = simulate.pseudo_patient(seed, PROTOCOL)
        hu, labels = patient.ct.array, patient.labels.array
        lungs = _lungs(patient, template)
        assert hu.min() >= -1024.0 and hu.max() <= simulate.MAX_HU
        assert np.median(hu[:, :3, :3]) < -950  # air in the cube's anterior-right corner
        assert -930 < np.median(hu[lungs]) < -700, seed
        heart = labels == 51  # "heart" in chest-ct-structures.csv
        assert 0 < np.median(hu[heart]) < 400, seed
        spine = np.isin(labels, range(29, 44))  # vertebrae L3..T1
        assert np.median(hu[spine]) > 150, seed
        litres = lungs.sum() * np.prod(patient.ct.spacing) / 1e6
        assert 2.0 < litres < 7.0, (seed, litres)  # adult lungs at CT inspiration: roughly 3-6 L


def test_labels_are_nearest_neighbour(template):
    patient = simulate.pseudo_patient(4, PROTOCOL)
    allowed = set(np.unique(template.labels).tolist()) | {simulate.NODULE_LABEL}
    assert set(np.unique(patient.labels.array).tolist()) <= allowed


def test_nodules_lie_inside_the_lungs(template):
    found = 0
    for seed in range(12):
        patient = simulate.pseudo_patient(seed, PROTOCOL)
        nodules = patient.labels.array == simulate.NODULE_LABEL
        recorded = patient.parameters["nodules"]
        if not recorded:
            assert not nodules.any()
            continue
        found += len(recorded)
        ring = ndimage.binary_dilation(nodules) & ~nodules
        assert _lungs(patient, template)[ring].all(), seed  # every nodule is wrapped in lung
        components, count = ndimage.label(nodules)
        assert 1 <= count <= len(recorded)  # nodules never overlap; the smallest may vanish at 5 mm voxels
        peaks = ndimage.maximum(patient.ct.array, components, range(1, count + 1))
        assert min(peaks) > -150, seed  # soft tissue inside, not lung
    assert found > 0


def test_seed_ranges_are_disjoint():
    ranges = [set(simulate.seeds(name)) for name in ("train", "validation", "test")]
    assert all(not (a & b) for n, a in enumerate(ranges) for b in ranges[n + 1:])
    assert len(ranges[0]) == 10000 and len(ranges[1]) == len(ranges[2]) == 1000
    with pytest.raises(InputError, match="Unknown split"):
        simulate.seeds("holdout")
    with pytest.raises(InputError, match="non-negative"):
        simulate.pseudo_patient(-1, PROTOCOL)


def test_cli_writes_cts_labels_parameters_and_preview(tmp_path, capsys):
    from PIL import Image

    from x2ct.io import read_ct

    assert main(["simulate", "--seed", "20000", "--count", "2", "--size", "64", "--out", str(tmp_path),
                 "--png"]) == 0
    for seed in (20000, 20001):
        ct = read_ct(tmp_path / f"sim-{seed}.nii.gz")
        labels = read_ct(tmp_path / f"sim-{seed}-labels.nii.gz")
        assert ct.shape == labels.shape == (64, 64, 64) and ct.spacing == pytest.approx((5.0, 5.0, 5.0))
        expected = simulate.pseudo_patient(seed, PROTOCOL).ct.array
        np.testing.assert_allclose(ct.array, expected, atol=1e-3)
        assert json.loads((tmp_path / f"sim-{seed}.json").read_text())["seed"] == seed
    with Image.open(tmp_path / "preview.png") as preview:
        assert preview.height > 2 * 150 and preview.width > 4 * 150  # two rows of four panels
    assert main(["simulate", "--seed", "0", "--count", "0", "--out", str(tmp_path)]) == 2
    assert "--count" in capsys.readouterr().err
