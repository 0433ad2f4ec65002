"""Novel views (x2ct.novelviews, ``x2ct render``): stereo disparity, turntable frames, the CLI."""

import numpy as np
import pytest

from x2ct import io
from x2ct.cli import main
from x2ct.errors import InputError
from x2ct.image import CANONICAL_DIRECTION, Volume
from x2ct.novelviews import anaglyph, stereo_anaglyph, turntable, turntable_angles
from x2ct.physics import X2CT_GEOMETRY, DRRGeometry, drr

SPACING = 2.0  # mm
PARALLEL = DRRGeometry(beam="parallel", detector_mm=(128.0, 128.0), pixels=(64, 64))  # 2 mm pixels
ANTERIOR_MM = 40.0


def _phantom() -> Volume:
    """Air with two bone balls in the canonical frame: one 40 mm anterior (upper), one at the isocentre (lower)."""
    n = 64
    k, j, i = np.meshgrid(*(np.arange(n) - (n - 1) / 2,) * 3, indexing="ij")
    array = np.full((n, n, n), -1000.0, dtype=np.float32)
    array[(k + 12) ** 2 + (j + ANTERIOR_MM / SPACING) ** 2 + i**2 <= 9] = 1000.0
    array[(k - 12) ** 2 + j**2 + i**2 <= 9] = 1000.0
    return Volume(array, spacing=(SPACING,) * 3, direction=CANONICAL_DIRECTION)


def _column_centroid(channel: np.ndarray, rows: slice) -> float:
    band = channel[rows].astype(np.float64)
    band = np.where(band > band.max() / 2, band, 0.0)
    return float((band.sum(axis=0) * np.arange(band.shape[1])).sum() / band.sum())


def test_anaglyph_channels_are_shifted_by_the_expected_disparity():
    half = 10.0
    image = np.asarray(stereo_anaglyph(_phantom(), "frontal", half, PARALLEL))
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    assert np.array_equal(green, blue) and not np.array_equal(red, green)
    upper, lower = slice(0, 32), slice(32, 64)
    # A point at depth y (mm along axis 1, + posterior) moves by y*sin(angle) along the columns:
    # right eye (+half) minus left eye (-half) = 2 y sin(half); the anterior ball (y = -40 mm) comes forward.
    expected = 2 * -ANTERIOR_MM * np.sin(np.radians(half)) / SPACING
    disparity = _column_centroid(green, upper) - _column_centroid(red, upper)
    assert disparity == pytest.approx(expected, abs=0.35), (disparity, expected)
    assert _column_centroid(green, lower) - _column_centroid(red, lower) == pytest.approx(0.0, abs=0.2)


def test_anaglyph_is_red_left_cyan_right():
    left, right = np.zeros((4, 4)), np.ones((4, 4))
    left[0, 0] = 1.0
    pixels = np.asarray(anaglyph(left, right))
    assert pixels[0, 0, 0] == 255 and pixels[1, 1, 0] == 0 and (pixels[1, 1, 1:] == 255).all()
    with pytest.raises(InputError, match="differ in size"):
        anaglyph(left, np.ones((4, 5)))


def test_turntable_frame_0_is_the_pa_drr_and_frame_90_the_lateral():
    volume = _phantom()
    frames = turntable(volume, 4, X2CT_GEOMETRY)
    assert [f.view for f in frames] == ["frontal", "lateral", 180.0, 270.0]
    assert np.array_equal(frames[0].image, drr(volume, "frontal").image)
    assert np.array_equal(frames[1].image, drr(volume, "lateral").image)
    assert not np.allclose(frames[0].image, frames[1].image)


def test_parallel_turntable_half_turn_mirrors_the_first_frame():
    frames = turntable(_phantom(), 2, PARALLEL)
    np.testing.assert_allclose(frames[1].image, frames[0].image[:, ::-1], atol=1e-3 * frames[0].image.max())


@pytest.mark.parametrize("count", [0, -3, 2.5])
def test_turntable_refuses_a_bad_frame_count(count):
    with pytest.raises(InputError, match="whole number of frames"):
        turntable_angles(count)


def test_render_command_writes_anaglyph_frames_and_lateral(tmp_path, capsys):
    ct = io.write_volume(_phantom(), tmp_path / "ct.nrrd")
    anaglyph_png, frames, lateral = tmp_path / "stereo.png", tmp_path / "turn", tmp_path / "lateral.nrrd"
    args = ["render", str(ct), "--anaglyph", str(anaglyph_png), "--turntable", "4", "--out", str(frames),
            "--lateral", str(lateral)]
    assert main(args) == 0
    assert anaglyph_png.is_file() and len(list(frames.glob("frame_*.png"))) == 4
    assert np.allclose(io.read_xray(lateral).image, drr(_phantom(), "lateral").image, atol=1e-4)
    before = anaglyph_png.stat().st_mtime_ns
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert anaglyph_png.stat().st_mtime_ns == before
    assert main(["render", str(ct)]) == 2 and "Nothing to render" in capsys.readouterr().err
    assert main(["render", str(ct), "--turntable", "3"]) == 2 and "--out FOLDER" in capsys.readouterr().err
