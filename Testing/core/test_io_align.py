"""Registration of a prepared film to the mean training DRR: known zooms and shifts are undone, nothing is forced."""

import numpy as np
import pytest
from scipy import ndimage

from x2ct.image import XRay
from x2ct.io import align, prepare


def mean_drr(side: int) -> np.ndarray:
    """The shipped mean training DRR (frontal) at ``side`` pixels: a chest exactly as the training views frame it."""
    mean = np.asarray(prepare.reference_for(0.0)["mean_view"], dtype=np.float32)
    return ndimage.zoom(mean, side / mean.shape[0], order=1)


def framed(chest: np.ndarray, zoom: float, shift_rc: tuple[int, int], canvas: int) -> np.ndarray:
    """The chest shrunk by ``zoom`` on an air canvas, off centre by ``shift_rc`` pixels, as stored integers."""
    small = ndimage.zoom(chest, zoom, order=1)
    out = np.zeros((canvas, canvas), np.float32)
    top = (canvas - small.shape[0]) // 2 + shift_rc[0]
    left = (canvas - small.shape[1]) // 2 + shift_rc[1]
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.round(out * 4000.0)


def picture(image, spacing=None) -> XRay:
    source = "file" if spacing else "assumed 1 mm"
    return XRay(image, spacing or (1.0, 1.0), "frontal",
                metadata={"source": "film.png", "pixel_spacing_source": source, "PhotometricInterpretation": "MONOCHROME2"})


def step(prepared, name):
    (record,) = [s for s in prepared.steps if s["step"] == name]
    return record


def test_ncc_matches_numpy_and_is_zero_for_a_flat_image():
    rng = np.random.default_rng(0)
    a, b = rng.random((16, 16)), rng.random((16, 16))
    assert align.ncc(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert align.ncc(a, np.ones_like(a)) == 0.0


@pytest.mark.parametrize("zoom, shift", [(0.6, (20, -30)), (0.8, (-25, 15))])
def test_a_chest_of_unknown_size_and_place_is_framed_as_the_training_drrs(zoom, shift):
    chest = mean_drr(256)
    prepared = prepare.prepare(picture(framed(chest, zoom, shift, 320)), 64, "film")
    record = step(prepared, "align")
    assert record["aligned"] and record["ncc_mean_drr_after"] > 0.97
    assert align.ncc(prepared.view, mean_drr(64)) > 0.97
    assert "zoom" in record["how"] and any("registration to the mean training DRR" in n for n in prepared.notes)


def test_known_spacing_only_moves_the_window():
    chest = mean_drr(256)
    film = framed(chest, 1.0, (12, -9), 300)  # the chest at the training scale, off centre on a larger film
    prepared = prepare.prepare(picture(film, (500.0 / 256,) * 2), 64, "film")
    record = step(prepared, "align")
    assert record["how"].endswith("shift only)")
    field = step(prepared, "field")["crop_rows_cols"]
    if record["aligned"]:
        assert record["scale"] == 1.0 and record["crop_rows_cols"][2:] == field[2:]
    assert align.ncc(prepared.view, mean_drr(64)) > 0.95


def test_the_window_is_kept_when_registration_finds_nothing_better():
    mean = mean_drr(64)
    window = ((32.0, 32.0), (64.0, 64.0))
    flat = lambda centre, size: np.ones((64, 64), np.float32)  # noqa: E731 - nothing to register
    kept, record = align.refine_window(flat, [window], mean, scale=True)
    assert kept == window and record == {**record, "aligned": False}
    assert record["ncc_mean_drr_before"] == record["ncc_mean_drr_after"] == 0.0


def test_out_of_range_registrations_are_refused():
    window = ((50.0, 50.0), (100.0, 100.0))
    assert align._moved(window, (3.0, 0.0, 0.0), 64, window) is None
    assert align._moved(window, (1.0, 40.0, 0.0), 64, window) is None
    assert align._moved(window, (0.8, 6.4, -3.2), 64, window) == ((60.0, 45.0), (80.0, 80.0))
    zoomed = ((50.0, 50.0), (60.0, 60.0))  # a second round may not compound past the range of the first start
    assert align._moved(zoomed, (0.75, 0.0, 0.0), 64, window) is None
