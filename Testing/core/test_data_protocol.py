"""The preprocessing protocol: X2CT geometry (1 mm, crop/pad, resize), intensities, and the way back to HU."""

import json

import numpy as np
import pytest
from skimage.transform import resize

from x2ct.data.protocol import DURHAM, X2CT, Protocol, ProtocolState, get_protocol, to_hu
from x2ct.errors import InputError
from x2ct.image import CANONICAL_DIRECTION, Volume

#: A small version of the X2CT protocol: 1 mm, crop to 32 mm, resize to 16 voxels.
SMALL = Protocol(size=16, crop_mm=32.0)


def _canonical(array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    return Volume(np.asarray(array, np.float32), spacing, origin, CANONICAL_DIRECTION.copy())


def test_x2ct_numbers():
    assert X2CT.crop_voxels == 320 and X2CT.size == 128 and X2CT.output_spacing == 2.5
    assert X2CT.with_size(64).output_spacing == 5.0
    assert get_protocol("durham", 32).size == 32 and get_protocol("durham").window == (-1000.0, 1000.0)
    with pytest.raises(InputError, match="Unknown protocol"):
        get_protocol("nope")
    with pytest.raises(InputError, match="size"):
        Protocol(size=1)


def test_crop_keeps_superior_slices_and_centre_like_x2ct():
    """A 1 mm canonical volume larger than the cube is cropped exactly as X2CT's crop_to_standard."""
    rng = np.random.default_rng(1)
    array = rng.uniform(-1000, 1000, size=(40, 36, 35)).astype(np.float32)  # (S->I, A->P, R->L)
    volume = _canonical(array, origin=(5.0, -3.0, 12.0))
    cube = Protocol(size=32, crop_mm=32.0).resample(volume)
    # X2CT keeps the last 32 slices of an inferior->superior stack = the first 32 here; centres y and x.
    expected = array[:32, 2:34, 1:33]
    np.testing.assert_allclose(cube.array, expected, atol=1e-3)
    assert cube.spacing == (1.0, 1.0, 1.0)
    assert np.allclose(cube.origin, (5.0 + 1, -3.0 + 2, 12.0))
    assert np.allclose(cube.direction, CANONICAL_DIRECTION)


def test_pads_small_volume_with_air_evenly():
    array = np.full((20, 28, 30), 100.0, np.float32)
    cube = Protocol(size=32, crop_mm=32.0).resample(_canonical(array)).array
    inside = cube > 0
    # body axis: 12 slices missing, 6 above (X2CT pads the superior side with the larger half when odd) and 6 below
    assert np.flatnonzero(inside.any(axis=(1, 2))).tolist() == list(range(6, 26))
    assert np.flatnonzero(inside.any(axis=(0, 2))).tolist() == list(range(2, 30))
    assert np.flatnonzero(inside.any(axis=(0, 1))).tolist() == list(range(1, 31))
    assert cube[~inside].max() == -1024.0


def test_resize_matches_linear_resize_with_pixel_centres():
    """The cube -> size step is linear interpolation with aligned voxel faces (skimage as reference)."""
    rng = np.random.default_rng(2)
    array = rng.uniform(-1000, 1000, size=(32, 32, 32)).astype(np.float32)
    out = SMALL.resample(_canonical(array))
    reference = resize(array, (16, 16, 16), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(out.array, reference, atol=1e-3)
    assert out.spacing == (2.0, 2.0, 2.0)
    assert np.allclose(out.origin, CANONICAL_DIRECTION @ np.full(3, 0.5))  # centres of 2x2x2 blocks


def test_any_orientation_and_spacing_lands_in_place():
    """An anisotropic LPS-ordered volume: a bright marker keeps its physical position through the protocol."""
    array = np.full((12, 40, 30), -1000.0, np.float32)  # (k, j, i), k = slices 3 mm apart
    array[4:6, 20:23, 6:9] = 1000.0
    volume = Volume(array, spacing=(1.2, 0.9, 3.0), origin=(-10.0, 20.0, -50.0),
                    direction=np.diag([1.0, -1.0, 1.0]))  # j runs anterior, k superior: not canonical
    marker = np.asarray(volume.origin) + volume.direction @ (np.array([7.0, 21.0, 4.5]) * volume.spacing)
    normalised, state = SMALL.apply(volume)
    hu = to_hu(normalised, state)
    peak = np.array(np.unravel_index(np.argmax(hu.array), hu.shape), dtype=float)  # (k, j, i)
    position = np.asarray(hu.origin) + hu.direction @ (peak[::-1] * np.asarray(hu.spacing))
    assert np.linalg.norm(position - marker) < 2.5  # within about one output voxel (2 mm)
    assert np.allclose(hu.direction, CANONICAL_DIRECTION)


def test_x2ct_intensity_and_round_trip():
    array = np.array([-3000.0, -1024.0, 226.0, 1476.0, 3000.0], np.float32)
    cube = _canonical(np.resize(array, (16, 16, 16)))
    normalised, state = SMALL.normalise(cube)
    assert normalised.dtype == np.float32
    np.testing.assert_allclose(normalised.ravel()[:5], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert (state.hu_low, state.hu_high) == (-1024.0, 1476.0)
    back = to_hu(normalised[None, None], state)  # model outputs have batch and channel axes
    np.testing.assert_allclose(back.array, np.clip(cube.array, -1024, 1476), atol=1e-3)
    assert back.spacing == cube.spacing and back.origin == cube.origin


def test_durham_min_max_is_stored_and_inverted():
    rng = np.random.default_rng(3)
    cube = _canonical(rng.uniform(-900, 700, size=(16, 16, 16)))
    normalised, state = DURHAM.with_size(16).normalise(cube)
    assert normalised.min() == 0.0 and normalised.max() == 1.0
    assert state.hu_low == pytest.approx(cube.array.min()) and state.hu_high == pytest.approx(cube.array.max())
    np.testing.assert_allclose(to_hu(normalised, state).array, cube.array, atol=1e-3)
    with pytest.raises(InputError, match="constant"):
        DURHAM.normalise(_canonical(np.full((4, 4, 4), -2000.0)))


def test_state_travels_as_json():
    _, state = SMALL.apply(_canonical(np.zeros((20, 20, 20))))
    again = ProtocolState.from_dict(json.loads(json.dumps(state.as_dict())))
    assert again == state
    with pytest.raises(InputError, match="protocol state"):
        ProtocolState.from_dict({"size": 3})
    with pytest.raises(InputError, match="does not fit"):
        to_hu(np.zeros((8, 8, 8)), state)


def test_bad_inputs():
    with pytest.raises(InputError, match="at least 2 voxels"):
        SMALL.apply(_canonical(np.zeros((1, 20, 20))))
    bad = _canonical(np.zeros((4, 4, 4)))
    bad.array[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        SMALL.apply(bad)
    with pytest.raises(InputError, match="x2ct.image.Volume"):
        SMALL.apply(np.zeros((4, 4, 4)))


@pytest.mark.sampledata
def test_real_chest_ct_fills_the_x2ct_cube():
    from x2ct import sampledata
    from x2ct.io import read_ct

    ct = read_ct(sampledata.path("chest-ct"))
    normalised, state = X2CT.with_size(64).apply(ct)
    assert normalised.shape == (64, 64, 64) and state.spacing == (5.0, 5.0, 5.0)
    top_of_scan = ct.origin[2] + ct.spacing[2] * (ct.shape[0] - 0.5)  # superior face (k runs superior here)
    top_of_cube = state.origin[2] + 2.5  # first canonical slice centre + half a voxel
    assert abs(top_of_scan - top_of_cube) < 1.0  # X2CT keeps the most superior 320 mm
    hu = to_hu(normalised, state).array
    assert hu[:, :4, :4].max() < -900  # air in front of the right shoulder (a corner of the cube)
    assert -950 < np.median(hu[20:40, 20:40, 10:25]) < -600  # right lung
