"""Real-film preparation on synthetic films with known borders, inversions and spacings; provenance of each step."""

import numpy as np
import pytest
from scipy import ndimage

from x2ct.errors import InputError
from x2ct.image import XRay
from x2ct.io import prepare

SIDE = 360  # pixels of the synthetic film at 1 mm


def chest_film(side: int = SIDE, spacing: float = 1.0) -> np.ndarray:
    """A chest film (larger = more attenuation) of a 360 mm field: soft tissue everywhere (with a gentle
    texture), two lung fields, a spine column and a diaphragm; ``spacing`` mm per pixel."""
    mm = (np.mgrid[0:side, 0:side] + 0.5) * spacing
    rows, cols = mm
    film = 0.55 + 0.03 * np.sin(rows / 7.0) * np.cos(cols / 11.0)
    for centre in (120.0, 240.0):
        lung = ((rows - 150) / 100) ** 2 + ((cols - centre) / 48) ** 2 <= 1
        film[lung] = 0.2 + 0.02 * np.sin(rows[lung] / 5.0)
    film[np.abs(cols - 180) <= 12] = 0.9
    film[rows > 255] = np.maximum(film[rows > 255], 0.7)  # below the diaphragm
    return film.astype(np.float32)


def picture(image, spacing=None, **metadata) -> XRay:
    """An X-ray as a picture would give it (no photometric information); spacing known when given."""
    source = {"pixel_spacing_source": "file"} if spacing else {"pixel_spacing_source": "assumed 1 mm"}
    return XRay(image, spacing or (1.0, 1.0), "frontal", metadata={"source": "film.png", **source, **metadata})


def step(prepared, name):
    (record,) = [s for s in prepared.steps if s["step"] == name]
    return record


def test_borders_and_black_bands_are_found_and_cropped():
    film = chest_film()
    framed = np.pad(film, ((30, 0), (22, 0)), constant_values=1.0)  # unexposed: white, top and left
    framed = np.pad(framed, ((0, 18), (0, 0)), constant_values=0.0)  # a black band at the bottom
    framed[5:12, 40:52] = 0.3  # burned-in text on the collimated border
    widths = prepare.border_widths(prepare._unit(framed))
    assert widths == {"top": 30, "bottom": 18, "left": 22, "right": 0}
    clean = prepare.prepare(picture(film), 64, "film")
    prepared = prepare.prepare(picture(framed), 64, "film")
    assert step(prepared, "borders")["cropped_pixels"] == widths
    assert any("borders or black bands cropped" in note for note in prepared.notes)
    assert np.abs(prepared.view - clean.view).mean() < 0.02  # as if the borders had never been there
    assert prepare.border_widths(prepare._unit(film)) == {"top": 0, "bottom": 0, "left": 0, "right": 0}


def test_negative_picture_is_inverted_but_a_dicom_header_is_trusted():
    film = chest_film()
    negative = film.max() + film.min() - film
    clean = prepare.prepare(picture(film), 64, "film")
    fixed = prepare.prepare(picture(negative), 64, "film")
    assert step(fixed, "polarity")["inverted"] and not step(clean, "polarity")["inverted"]
    assert np.abs(fixed.view - clean.view).mean() < 0.01
    trusted = prepare.prepare(picture(film, PhotometricInterpretation="MONOCHROME2"), 64, "film")
    assert not [s for s in trusted.steps if s["step"] == "polarity"]
    assert step(trusted, "decode")["PhotometricInterpretation"] == "MONOCHROME2"


def test_known_spacing_sets_the_scale_whatever_the_pixel_size():
    fine = prepare.prepare(picture(chest_film(), (1.0, 1.0)), 64, "film")
    coarse_image = chest_film(SIDE // 2, 2.0)
    coarse = prepare.prepare(picture(coarse_image, (2.0, 2.0)), 64, "film")
    assert step(fine, "field")["scale"] == step(coarse, "field")["scale"] == "from the pixel spacing"
    assert step(fine, "field")["field_mm"] == 500.0  # no SID/SAD: the X2CT magnification, said so
    assert any("X2CT magnification" in note for note in fine.notes)
    assert np.abs(fine.view - coarse.view).mean() < 0.03


@pytest.mark.parametrize("wrong", [1e-9, 0.01, 50.0])
def test_a_spacing_no_radiograph_has_is_ignored_and_said(wrong):
    """1e-9 mm asked for a 5e11-pixel window (numpy: array too big); such a tag is set aside, with a note."""
    film = chest_film()
    prepared = prepare.prepare(picture(film, (wrong, wrong)), 64, "film")
    unknown = prepare.prepare(picture(film), 64, "film")
    assert step(prepared, "field")["scale"] == "from the detected lung field (pixel spacing unknown)"
    assert any("spacing was ignored" in note for note in prepared.notes)
    np.testing.assert_array_equal(prepared.view, unknown.view)
    believed = prepare.prepare(picture(film, (1.0, 1.0)), 64, "film")  # 360 mm: a chest film's size
    assert not any("spacing was ignored" in note for note in believed.notes)


def test_unknown_spacing_scales_from_the_lung_field():
    film = chest_film()
    zoomed = ndimage.zoom(film, 1.5, order=1)  # the same chest on a finer, unknown pixel grid
    small = prepare.prepare(picture(film), 64, "film")
    large = prepare.prepare(picture(zoomed), 64, "film")
    for prepared in (small, large):
        assert step(prepared, "field")["scale"] == "from the detected lung field (pixel spacing unknown)"
    top, centre, height, width = prepare.lung_field(film)
    assert width == pytest.approx((288 - 72) / SIDE, abs=0.03) and centre == pytest.approx(0.5, abs=0.02)
    assert top == pytest.approx(50 / SIDE, abs=0.03)
    small_window, large_window = (np.array(step(p, "field")["crop_rows_cols"]) for p in (small, large))
    np.testing.assert_allclose(large_window, 1.5 * small_window, rtol=0.05, atol=2.0)  # the same field on both grids
    reference = prepare.reference_for(0.0)["lung_field"]
    # the field is as much wider than the lungs as in the training DRRs (the align step then refines it)
    assert small_window[3] == pytest.approx(width * SIDE / reference[3], rel=0.02)


def test_intensities_are_matched_to_the_training_drrs():
    reference = np.asarray(prepare.reference_for(0.0)["quantiles"])
    levels = np.linspace(0, 1, len(reference))
    ramp = np.linspace(0, 1, 128 * 128).reshape(128, 128) ** 3  # every value distinct: an exact match is possible
    matched = prepare._match_intensity(ramp, 0.0, [], [], "ramp")
    assert np.abs(np.quantile(matched, levels) - reference).max() <= 1.0 / 255 + 1e-6
    prepared = prepare.prepare(picture(chest_film() ** 2.2), 128, "film")  # flat regions: ties keep one level
    assert step(prepared, "intensity")["matched"]
    assert np.median(prepared.view) == pytest.approx(np.interp(0.5, levels, reference), abs=0.05)
    np.testing.assert_allclose(prepared.view * 255, np.round(prepared.view * 255), atol=1e-4)


def test_drrs_made_by_x2ct_keep_the_geometric_preparation_only():
    from x2ct.physics import drr

    rng = np.random.default_rng(0)
    image = drr(_phantom_ct(), "frontal", mode="x2ct", x2ct_size=64)
    assert image.metadata["source"] == "x2ct drr"
    prepared = prepare.prepare(image, 64)
    assert prepared.kind == "drr"
    assert [s["step"] for s in prepared.steps] == ["decode", "field", "normalise"]
    assert prepare.prepare(picture(rng.integers(0, 4096, (32, 32))), 16).kind == "film"
    with pytest.raises(InputError, match="Unknown input kind"):
        prepare.prepare(image, 64, "photo")
    with pytest.raises(InputError, match="blank"):
        prepare.prepare(picture(np.ones((32, 32))), 16)
    with pytest.raises(InputError, match="only 4x6 pixels.*full-resolution"):
        prepare.prepare(picture(rng.integers(0, 4096, (6, 4))), 16)


def test_a_drr_read_back_from_a_file_is_still_a_drr(tmp_path):
    """Slicer and the demo hand DRRs over as files: their [0, 1] range says what they are, a film's values do not."""
    from x2ct.io import read_xray, write_xray
    from x2ct.physics import drr

    written = write_xray(drr(_phantom_ct(), "frontal", mode="x2ct", x2ct_size=64), tmp_path / "drr.nrrd")
    assert prepare.prepare(read_xray(written), 64).kind == "drr"
    film = XRay(np.round(chest_film() * 3000.0), (1.0, 1.0), "frontal")  # stored integers, as decoded films
    assert prepare.prepare(read_xray(write_xray(film, tmp_path / "film.nrrd")), 64).kind == "film"


def _phantom_ct():
    from x2ct.image import CANONICAL_DIRECTION, Volume

    array = np.full((32, 32, 32), -1000.0, np.float32)
    array[4:28, 8:24, 6:26] = 40.0
    return Volume(array, (5.0, 5.0, 5.0), (0.0, 0.0, 0.0), CANONICAL_DIRECTION.copy())


@pytest.mark.sampledata
def test_real_radiograph_provenance_records_every_step():
    from x2ct import sampledata
    from x2ct.io import read_xray

    prepared = prepare.prepare(read_xray(sampledata.path("chest-xray")), 128)
    names = [s["step"] for s in prepared.steps]
    assert names == ["decode", "working copy", "borders", "field", "align", "normalise", "intensity"]
    assert prepared.kind == "film" and step(prepared, "decode")["inverted"].startswith("MONOCHROME1")
    assert step(prepared, "field")["scale"].startswith("from the detected lung field")
    assert step(prepared, "intensity")["matched"]


@pytest.mark.sampledata
def test_real_radiograph_handed_on_as_a_file_is_prepared_as_the_original(tmp_path):
    # the Slicer module writes the loaded film to NRRD for its background run; the CLI reads the DICOM itself
    from x2ct import sampledata
    from x2ct.io import read_xray, write_xray

    original = read_xray(sampledata.path("chest-xray"))
    handed_on = read_xray(write_xray(original, tmp_path / "view0-frontal.nrrd"))
    direct, via_file = prepare.prepare(original, 128), prepare.prepare(handed_on, 128)
    assert step(via_file, "field")["scale"] == step(direct, "field")["scale"]
    np.testing.assert_allclose(via_file.view, direct.view, atol=1e-5)
