"""Input likeness: held-out chest DRRs and the real chest film pass; non-chest images made here are warned about."""

import numpy as np
import pytest

from x2ct import inference, likeness
from x2ct.image import CANONICAL_DIRECTION, Volume, XRay

pytestmark = pytest.mark.sampledata


def score(xray: XRay) -> likeness.Likeness:
    view, record, notes = inference.prepared_input(xray, 128)
    result = likeness.score(view, xray_angle(xray))
    assert record["likeness"] == result.as_dict()
    assert any(("WARNING" in n) != result.like_training for n in notes if "input-likeness" in n)
    return result


def xray_angle(xray):
    from x2ct.image import view_angle

    return view_angle(xray.view)


def drr_of(volume: Volume, view="frontal") -> XRay:
    from x2ct.physics import drr

    return drr(volume, view, mode="x2ct", x2ct_size=128)


def test_held_out_pseudo_patients_of_both_ct_pass():
    from x2ct.data import simulate
    from x2ct.data.protocol import X2CT

    patients = set()
    for seed in simulate.seeds("test")[:2]:
        patient = simulate.pseudo_patient(seed, X2CT)
        patients.add(patient.parameters["patient"])
        for view in ("frontal", "lateral"):
            result = score(drr_of(patient.ct, view))
            assert result.like_training, (seed, view, result)
    assert patients == set(simulate.PATIENTS)


def test_real_chest_radiograph_passes_without_warning():
    from x2ct import sampledata
    from x2ct.io import read_xray

    result = score(read_xray(sampledata.path("chest-xray")))
    assert result.like_training, result


def test_non_chest_images_are_warned_about():
    from x2ct import sampledata
    from x2ct.io import read_ct

    atlas = read_ct(sampledata.path("head-ct"))  # a skull-stripped brain on a background of 0 HU, not air
    head = atlas.with_array(np.where(atlas.array <= 0, -1000.0, atlas.array).astype(np.float32))
    limb = np.full((96, 96, 96), -1000.0, np.float32)  # a forearm-like phantom: soft tissue around two bones
    k, j, i = np.mgrid[0:96, 0:96, 0:96]
    limb[(j - 48) ** 2 + (i - 48) ** 2 <= 24 ** 2] = 40.0
    for centre in (40, 57):
        limb[(j - 48) ** 2 + (i - centre) ** 2 <= 5 ** 2] = 1200.0
    limb_ct = Volume(limb, (1.5, 1.5, 3.0), (0.0, 0.0, 0.0), CANONICAL_DIRECTION.copy())
    rng = np.random.default_rng(0)
    spectrum = np.fft.fft2(rng.standard_normal((256, 256)))
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256)))
    pink = np.real(np.fft.ifft2(spectrum / np.maximum(frequency, 1 / 256)))  # natural-image-like 1/f noise
    chest = read_ct(sampledata.path("chest-ct"))
    ct_slice = np.asarray(chest.array[chest.shape[0] // 2], np.float32)  # an axial CT slice given as an X-ray
    cases = {"head CT DRR": drr_of(head), "head atlas as shipped (0 HU around it)": drr_of(atlas),
             "limb phantom DRR": drr_of(limb_ct),
             "1/f noise picture": XRay(pink, metadata={"pixel_spacing_source": "assumed", "source": "noise.png"}),
             "CT slice as X-ray": XRay(np.maximum(ct_slice, -1024), (0.7, 0.7),
                                       metadata={"pixel_spacing_source": "file", "source": "slice.png"})}
    for name, xray in cases.items():
        result = score(xray)
        assert not result.like_training, (name, result)


def test_reconstruction_records_the_score_and_warns():
    rng = np.random.default_rng(1)
    noise = XRay(rng.integers(0, 256, (200, 200)).astype(np.float32),
                 metadata={"pixel_spacing_source": "assumed", "source": "noise.png"})
    result = inference.reconstruct([noise], "back-projection", device="cpu")
    (record,) = result.preparation
    assert record["likeness"]["like_training"] is False and record["kind"] == "film"
    assert [s["step"] for s in record["steps"]][0] == "decode"
    assert any(note.startswith("WARNING noise.png") for note in result.notes)
