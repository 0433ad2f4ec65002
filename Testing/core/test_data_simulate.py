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

    patient = simulate.pseudo_patient(2, PROTOCOL)
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
        if patient.parameters["patient"] == "chest-ct":  # patient 2's own organs are unlabelled (lungs only)
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


def test_every_split_holds_both_patients_and_one_patient_can_be_kept():
    for split in ("train", "validation", "test"):
        chosen = simulate.seeds(split)[:4]
        assert {simulate.patient_of(seed) for seed in chosen} == set(simulate.PATIENTS)
    assert simulate.pseudo_patient(5, PROTOCOL).parameters["patient"] == "chest-ct-2"
    only_first = simulate.Settings(patients=("chest-ct",))
    assert simulate.pseudo_patient(5, PROTOCOL, only_first).parameters["patient"] == "chest-ct"
    with pytest.raises(InputError, match="Unknown simulator patient"):
        simulate.load_template(PROTOCOL.size, patient="chest-ct-3")


def test_second_patient_is_top_aligned_and_continued_below_its_scan():
    """Patient 2's 240 mm scan sits at the top of the cube; below it the body goes on (lower chest, abdomen)."""
    from x2ct import sampledata
    from x2ct.io import read_ct

    template = simulate.load_template(PROTOCOL.size, patient="chest-ct-2")
    grid = PROTOCOL.output_grid(read_ct(sampledata.path("chest-ct-2")))
    shift = np.asarray(template.grid.origin) - np.asarray(grid.origin)
    np.testing.assert_allclose(shift, [0.0, 0.0, -40.0], atol=1e-6)  # (320 - 240) / 2 mm towards the feet
    m, n = template.margin, template.grid.n
    hu = template.hu[m:m + n, m:m + n, m:m + n]
    body_rows = (hu > -500).mean(axis=(1, 2))
    assert body_rows[n // 8:].min() > 0.1  # body in every row below the neck: no flat cut at 240 mm
    lungs = np.isin(template.labels[m:m + n, m:m + n, m:m + n], template.lung_labels)
    right, left = lungs[..., : n // 2].sum(), lungs[..., n // 2:].sum()
    assert min(right, left) > 0.6 * max(right, left)  # two lungs, right and left
    assert -950 < np.median(hu[lungs]) < -700
    pasted = template.hu[int(0.8 * (m + n)):]
    blood = np.isin(template.labels[int(0.8 * (m + n)):], template.blood_labels)
    assert not blood.any() or np.percentile(pasted[blood], 95) < 100  # non-contrast, as patient 2


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
