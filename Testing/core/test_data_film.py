"""Film simulation: seeded, every effect measurable on a synthetic chest view, wired into augmentation."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from x2ct.data import film
from x2ct.errors import InputError

S = 128


def chest_view() -> np.ndarray:
    """A frontal-view phantom: an elliptic body (0.5), two lungs (0.2), a spine column (1.0); air 0."""
    rows, cols = np.mgrid[0:S, 0:S].astype(float)
    view = np.zeros((S, S))
    body = ((rows - 64) / 56) ** 2 + ((cols - 64) / 48) ** 2 <= 1
    view[body] = 0.5
    for centre in (40, 88):
        view[((rows - 60) / 34) ** 2 + ((cols - centre) / 16) ** 2 <= 1] = 0.2
    view[(np.abs(cols - 64) <= 4) & body] = 1.0
    return view


def run(settings, seed=0, view=None):
    return film.simulate(chest_view() if view is None else view, np.random.default_rng(seed), settings)


def test_same_seed_same_film_other_seed_other_film():
    first, drawn = run(film.DEFAULT_FILM, 3)
    again, drawn_again = run(film.DEFAULT_FILM, 3)
    other, _ = run(film.DEFAULT_FILM, 4)
    np.testing.assert_array_equal(first, again)
    assert drawn == drawn_again
    assert np.abs(first - other).mean() > 0.02
    assert first.dtype == np.float32 and first.min() >= 0 and first.max() == 1.0
    np.testing.assert_allclose(first * 255, np.round(first * 255), atol=1e-4)  # 8-bit levels, as the DRRs


def test_rotation_tilts_the_spine_by_the_drawn_angle():
    settings = film.FilmSettings.only("geometry", magnification=(1.0, 1.0), offset=0.0)
    for seed in range(3):
        out, drawn = run(settings, seed)
        spine = out > 0.8
        top, bottom = (ndimage.center_of_mass(spine[r - 5:r + 5])[1] for r in (30, 98))
        tilt = np.degrees(np.arctan2(bottom - top, 68.0))  # counter-clockwise as displayed is positive
        assert abs(tilt - drawn["rotation_deg"]) < 0.5, (tilt, drawn)
        assert abs(drawn["rotation_deg"]) <= 5.0


def test_magnification_and_offset_move_and_scale_the_body():
    settings = film.FilmSettings.only("geometry", rotation_deg=0.0, magnification=(1.1, 1.1), offset=0.06)
    out, drawn = run(settings, 1)
    before, after = chest_view() > 0.1, out > 0.1
    width = lambda mask: np.ptp(np.nonzero(mask.any(axis=0))[0]) + 1  # noqa: E731
    assert width(after) / width(before) == pytest.approx(1.1, abs=0.03)
    shift = np.subtract(ndimage.center_of_mass(after), ndimage.center_of_mass(before))
    np.testing.assert_allclose(shift, drawn["offset_px"], atol=0.6)


def test_scatter_is_a_smooth_term_that_lowers_contrast():
    view = chest_view()
    clean, _ = run(film.FilmSettings.only())
    out, drawn = run(film.FilmSettings.only("scatter", scatter_ratio=(0.8, 0.8)))
    lung, spine = (60, 40), (60, 64)  # (row, column)
    assert out[lung] / out[spine] > 1.2 * clean[lung] / clean[spine]  # lungs greyer next to the spine
    difference = out - clean
    inside = ndimage.binary_erosion(view > 0, iterations=6)  # away from the body's outline (log of a sum)
    smooth = ndimage.gaussian_filter(difference, 3)
    assert np.abs(difference - smooth)[inside].mean() < 0.25 * np.abs(difference[inside]).mean()
    assert drawn["scatter_ratio"] == 0.8


def test_blur_removes_fine_detail_and_noise_adds_it():
    clean, _ = run(film.FilmSettings.only())
    blurred, _ = run(film.FilmSettings.only("blur", blur_px=(1.2, 1.2)))
    noisy, drawn = run(film.FilmSettings.only("noise", noise=(0.03, 0.03)))
    detail = lambda image: ndimage.laplace(image.astype(float)).var()  # noqa: E731
    assert detail(blurred) < 0.5 * detail(clean)
    flat = (slice(100, 110), slice(50, 56))  # uniform soft tissue
    assert noisy[flat].std() > clean[flat].std() + 0.005 and drawn["noise"] == 0.03


def test_grey_curve_gamma_and_unsharp_masking():
    plain = dict(window_low=(0.0, 0.0), window_high=(1.0, 1.0), lut_p=0.0, unsharp_p=0.0)
    clean, _ = run(film.FilmSettings.only())
    curved, _ = run(film.FilmSettings.only("grey", gamma=(1.4, 1.4), **plain))
    np.testing.assert_allclose(curved, np.floor(clean.astype(float) ** 1.4 * 255) / 255, atol=2 / 255)
    sharp, drawn = run(film.FilmSettings.only("grey", gamma=(1.0, 1.0), **{**plain, "unsharp_p": 1.0}))
    assert "unsharp" in drawn
    edge = (60, slice(55, 60))  # lung next to the spine: darker beside a bright edge (undershoot)
    assert sharp[edge].min() < clean[edge].min() - 0.02


def test_collimation_band_and_markers_are_burned_in():
    out, drawn = run(film.FilmSettings.only("collimation", collimation_p=1.0, collimation_width=(0.05, 0.05)))
    assert set(drawn["collimation_px"]) == {"top", "bottom", "left", "right"}
    for edge in (out[:6], out[-6:], out[:, :6], out[:, -6:]):
        assert edge.min() >= 0.85  # unexposed: white
    out, drawn = run(film.FilmSettings.only("bands", band_p=1.0, band_width=(0.08, 0.08)))
    band = film._edge(out, drawn["band"]["side"], drawn["band"]["pixels"])
    assert drawn["band"]["pixels"] == 10 and band.max() == 0.0
    out, drawn = run(film.FilmSettings.only("markers", markers=(3, 3)), view=np.zeros((S, S)) + 0.01)
    assert len(drawn["markers"]) == 3 and (out > 0.5).sum() > 20  # white glyphs on a dark film


def test_bad_input_and_unknown_effect_are_refused():
    with pytest.raises(InputError, match="one square view"):
        film.simulate(np.zeros((10, 20)), np.random.default_rng(0))
    with pytest.raises(InputError, match="Unknown film effect 'glare'"):
        film.FilmSettings.only("glare")


def test_batch_and_training_augmentation_option():
    from x2ct.training.augment import augment
    from x2ct.training.config import AugmentConfig

    views = torch.from_numpy(np.stack([chest_view(), chest_view()])).float()[None]  # (1, 2, S, S)
    ct = torch.rand(1, 1, 8, 8, 8)
    angles = torch.tensor([[0.0, 90.0]])
    assert torch.equal(film.simulate_batch(views, 0.0, seed=1), views)
    filmed = film.simulate_batch(views, 1.0, seed=1)
    assert torch.equal(filmed, film.simulate_batch(views, 1.0, seed=1)) and not torch.equal(filmed, views)

    off = AugmentConfig()
    assert off.film_p == 0.0  # existing configs: no film, and no draw taken from the generator
    same, same_ct = augment(views, ct, angles, off, torch.Generator().manual_seed(5))
    assert torch.equal(same, views) and torch.equal(same_ct, ct)
    on = dataclasses.replace(off, film_p=1.0)
    first = augment(views, ct, angles, on, torch.Generator().manual_seed(5))[0]
    again, again_ct = augment(views, ct, angles, on, torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and torch.equal(again_ct, ct) and not torch.equal(first, views)


def test_films_can_be_prepared_as_at_inference():
    """``film_prepare``: each film goes on through x2ct.io.prepare as a picture would (seeded: same film, same view)."""
    from x2ct.image import XRay
    from x2ct.io.prepare import prepare
    from x2ct.training.augment import augment
    from x2ct.training.config import AugmentConfig

    views = torch.from_numpy(np.stack([chest_view(), chest_view()])).float()[None]  # (1, 2, S, S)
    angles = torch.tensor([[0.0, 90.0]])
    prepared = film.simulate_batch(views, 1.0, seed=3, angles=angles)
    raw = film.simulate_batch(views, 1.0, seed=3)
    for index, angle in enumerate((0.0, 90.0)):
        picture = XRay(raw[0, index].numpy(), (1.0, 1.0), angle, metadata={
            "pixel_spacing_source": "assumed", "PhotometricInterpretation": "MONOCHROME2"})
        expected = prepare(picture, views.shape[-1], "film").view
        np.testing.assert_array_equal(prepared[0, index].numpy(), expected)
    setting = AugmentConfig(film_p=1.0, film_prepare=True)
    first = augment(views, torch.zeros(1, 1, 8, 8, 8), angles, setting, torch.Generator().manual_seed(5))[0]
    assert torch.equal(first, augment(views, torch.zeros(1, 1, 8, 8, 8), angles, setting,
                                      torch.Generator().manual_seed(5))[0])
    assert not torch.equal(first, augment(views, torch.zeros(1, 1, 8, 8, 8), angles,
                                          AugmentConfig(film_p=1.0), torch.Generator().manual_seed(5))[0])
