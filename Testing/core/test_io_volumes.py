"""CT volumes: orientation survives every format, writes are atomic, bad files are refused clearly."""

import itertools
import os

import numpy as np
import pytest
import SimpleITK as sitk

from x2ct.errors import InputError, X2CTError
from x2ct.image import Volume, to_canonical
from x2ct.io import read_ct, write_volume
from x2ct.io.checks import MEMORY_LIMIT_ENV

SHAPE = (5, 6, 7)  # numpy (k, j, i): every axis a different length
SPACING = (0.5, 0.75, 2.0)  # (i, j, k) mm, all different
ORIGIN = (-12.0, 30.5, 104.25)
#: Marker value -> numpy index (k, j, i): distinct corners and one inside point.
MARKERS = {1: (0, 0, 0), 2: (0, 0, 6), 3: (0, 5, 0), 4: (4, 0, 0), 5: (4, 5, 6), 6: (2, 1, 3)}
#: Every signed permutation matrix (48): all axis-aligned orientations, proper and improper.
DIRECTIONS = [np.eye(3)[list(p)].T * np.array(s) for p in itertools.permutations(range(3))
              for s in itertools.product((1, -1), repeat=3)]
FORMATS = (".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz")


def phantom(direction) -> Volume:
    array = np.full(SHAPE, -1000.0, dtype=np.float32)
    for value, index in MARKERS.items():
        array[index] = value
    return Volume(array, SPACING, ORIGIN, direction)


def physical(volume: Volume, index) -> np.ndarray:
    """LPS point of a numpy index (k, j, i)."""
    k, j, i = index
    return np.asarray(volume.origin) + volume.direction @ (np.array([i, j, k]) * volume.spacing)


def expected_canonical_index(source: Volume, point) -> tuple:
    """Where a point must land in the canonical frame, derived from the voxel grid alone.

    Canonical i runs to patient left (+x), j posterior (+y), k inferior (-z),
    starting at the grid corner with the smallest x, y and the largest z.
    """
    corners = np.array([physical(source, (k, j, i)) for k in (0, SHAPE[0] - 1) for j in (0, SHAPE[1] - 1)
                        for i in (0, SHAPE[2] - 1)])
    start = np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 2].max()])
    step = np.abs(source.direction) @ np.asarray(source.spacing)  # spacing along x, y, z
    i, j, k = np.rint((np.asarray(point) - start) * [1, 1, -1] / step).astype(int)
    return (k, j, i)


def marker_errors(source: Volume, loaded: Volume) -> list[str]:
    """Every marker must sit at its LPS point and at the expected canonical index."""
    canonical = to_canonical(loaded)
    errors = []
    for value, index in MARKERS.items():
        found = np.argwhere(canonical.array == value)
        point = physical(source, index)
        if len(found) != 1:
            errors.append(f"marker {value} found {len(found)} times")
            continue
        if not np.allclose(physical(canonical, found[0]), point, atol=1e-3):
            errors.append(f"marker {value} at {physical(canonical, found[0])}, expected {point}")
        if tuple(found[0]) != expected_canonical_index(source, point):
            errors.append(f"marker {value} at canonical index {tuple(found[0])}")
    return errors


@pytest.mark.parametrize("direction", DIRECTIONS, ids=lambda d: "".join("LRPAIS"[2 * int(np.abs(c).argmax())
                                                                         + int(c.sum() < 0)] for c in d.T))
def test_every_axis_aligned_orientation_survives_nrrd(tmp_path, direction):
    source = phantom(direction)
    loaded = read_ct(write_volume(source, tmp_path / "phantom.nrrd"))
    assert loaded.array.dtype == np.float32
    np.testing.assert_array_equal(loaded.array, source.array)
    np.testing.assert_allclose(loaded.direction, direction)
    np.testing.assert_allclose(loaded.spacing, SPACING)
    np.testing.assert_allclose(loaded.origin, ORIGIN, atol=1e-4)
    assert marker_errors(source, loaded) == []


@pytest.mark.parametrize("extension", FORMATS)
@pytest.mark.parametrize("which", [0, 13, 26, 47])  # LPS, a flip, a permutation, the full reversal
def test_orientation_survives_every_format_and_an_independent_writer(tmp_path, extension, which):
    source = phantom(DIRECTIONS[which])
    ours = read_ct(write_volume(source, tmp_path / f"ours{extension}"))
    image = sitk.GetImageFromArray(source.array)  # written by SimpleITK directly, not by write_volume
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(tuple(DIRECTIONS[which].ravel()))
    sitk.WriteImage(image, str(tmp_path / f"theirs{extension}"))
    theirs = read_ct(tmp_path / f"theirs{extension}")
    for loaded in (ours, theirs):
        assert marker_errors(source, loaded) == []


def test_marker_check_catches_a_flipped_or_swapped_axis():
    source = phantom(DIRECTIONS[0])
    flipped = source.with_array(np.flip(source.array, axis=1).copy())
    swapped = Volume(np.swapaxes(source.array, 0, 2).copy(), SPACING, ORIGIN, source.direction)
    assert marker_errors(source, flipped)
    assert marker_errors(source, swapped)


def test_nifti_scale_and_intercept_are_applied(tmp_path):
    """A NIfTI stored as int16 with scl_inter (like the sample CT) comes back in HU."""
    stored = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = tmp_path / "scaled.nii"
    sitk.WriteImage(sitk.GetImageFromArray(stored), str(path))
    raw = bytearray(path.read_bytes())
    raw[112:120] = np.array([2.0, -1024.0], "<f4").tobytes()  # NIfTI-1 header: scl_slope, scl_inter
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(read_ct(path).array, stored * 2.0 - 1024)


# ---------------------------------------------------------------- writing


def test_write_replaces_atomically_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "sub" / "ct.nhdr"  # header + detached data file, folder created
    write_volume(phantom(np.eye(3)), target)
    write_volume(phantom(np.eye(3)).with_array(np.zeros(SHAPE, np.float32)), target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["ct.nhdr", "ct.raw.gz"]
    assert read_ct(target).array.max() == 0


def test_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "ct.nrrd"
    write_volume(phantom(np.eye(3)), target)
    before = target.read_bytes()

    def crash(image, path, *args):
        with open(path, "wb") as handle:
            handle.write(b"NRRD0004\nhalf")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", crash)
    with pytest.raises(X2CTError, match="Could not write .*disk full"):
        write_volume(phantom(np.eye(3)), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nrrd"]


def test_unknown_extension_is_refused_before_writing(tmp_path):
    with pytest.raises(InputError, match=r"unknown extension \.vtk; use one of \.nrrd"):
        write_volume(phantom(np.eye(3)), tmp_path / "ct.vtk")
    assert list(tmp_path.iterdir()) == []


def test_boolean_mask_is_written_as_uint8(tmp_path):
    mask = phantom(np.eye(3)).with_array(np.zeros(SHAPE, bool))
    assert read_ct(write_volume(mask, tmp_path / "mask.mha")).shape == SHAPE


# ---------------------------------------------------------------- bad input


def mha(path, dims="4 3 2", spacing="1 1 1", matrix="1 0 0 0 1 0 0 0 1", element="MET_SHORT", channels=1,
        data=None):
    """A hand-written MetaImage, so headers SimpleITK would never write can be tested."""
    count = int(np.prod([int(d) for d in dims.split()])) * channels
    dtype = {"MET_SHORT": np.int16, "MET_FLOAT": np.float32}[element]
    data = np.zeros(count, dtype) if data is None else np.asarray(data, dtype)
    header = (f"ObjectType = Image\nNDims = {len(dims.split())}\nBinaryData = True\n"
              f"BinaryDataByteOrderMSB = False\nTransformMatrix = {matrix}\nOffset = 0 0 0\n"
              f"ElementSpacing = {spacing}\nDimSize = {dims}\nElementNumberOfChannels = {channels}\n"
              f"ElementType = {element}\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + data.tobytes())
    return path


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="CT not found: .*does not exist"):
        read_ct(tmp_path / "nothing.nrrd")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="is empty \\(0 bytes\\)"):
        read_ct(tmp_path / "empty.nii.gz")


@pytest.mark.parametrize("extension", FORMATS)
def test_random_bytes_are_reported_as_corrupt(tmp_path, extension):
    path = tmp_path / f"noise{extension}"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="corrupt"):
        read_ct(path)


def test_truncated_voxel_data_is_reported(tmp_path):
    path = mha(tmp_path / "short.mha", data=np.zeros(24, np.int16))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match="voxel data cannot be read"):
        read_ct(path)


def test_2d_image_is_not_a_ct(tmp_path):
    with pytest.raises(InputError, match="2D image .* load it as an X-ray"):
        read_ct(mha(tmp_path / "flat.mha", dims="4 3"))
    with pytest.raises(InputError, match="2D image .* load it as an X-ray"):
        read_ct(mha(tmp_path / "one-slice.mha", dims="4 3 1"))
    (tmp_path / "picture.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="2D picture, not a CT"):
        read_ct(tmp_path / "picture.png")


def test_complex_rgb_and_vector_volumes_are_refused(tmp_path):
    complex_path = tmp_path / "complex.nrrd"  # MetaImage would store it as a 2-vector
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 3, 4), np.complex64)), str(complex_path))
    with pytest.raises(InputError, match="complex numbers"):
        read_ct(complex_path)
    rgb = sitk.GetImageFromArray(np.zeros((2, 3, 4, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="vector image \\(3 values per pixel"):
        read_ct(tmp_path / "rgb.nrrd")
    with pytest.raises(InputError, match="vector image \\(2 values per pixel"):
        read_ct(mha(tmp_path / "field.mha", channels=2))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused(tmp_path, bad):
    data = np.zeros(24, np.float32)
    data[5] = bad
    with pytest.raises(InputError, match="1 NaN or infinite values"):
        read_ct(mha(tmp_path / "bad.mha", element="MET_FLOAT", data=data))


@pytest.mark.parametrize("spacing", ["0 1 1", "1 -1 1"])
def test_zero_or_negative_spacing_is_refused(tmp_path, spacing):
    with pytest.raises(InputError, match="every voxel size must be > 0"):
        read_ct(mha(tmp_path / "spacing.mha", spacing=spacing))


@pytest.mark.parametrize("matrix", ["1 0 0 0.5 1 0 0 0 1", "2 0 0 0 1 0 0 0 1"])
def test_sheared_or_scaled_direction_is_refused(tmp_path, matrix):
    with pytest.raises(InputError, match="non-orthonormal direction matrix"):
        read_ct(mha(tmp_path / "sheared.mha", matrix=matrix))


def test_sheared_nifti_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "sheared.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.int16)), str(path))
    raw = bytearray(path.read_bytes())
    raw[252:256] = np.array([0, 1], "<i2").tobytes()  # qform_code 0, sform_code 1: only the sform counts
    raw[280:328] = np.array([1, 0.5, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], "<f4").tobytes()  # sheared srow_x/y/z
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="cannot be read as a NIfTI file \\(ITK only supports orthonormal"):
        read_ct(path)


def test_memory_limit_is_checked_from_the_header_before_reading(tmp_path, monkeypatch):
    """A header claiming 2000^3 voxels (32 GB as float32) with no data behind it is refused as too
    large, not as truncated: the size is checked before any voxel is read."""
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    huge = mha(tmp_path / "huge.mha", dims="2000 2000 2000", data=np.zeros(8, np.int16))
    with pytest.raises(InputError, match="too large: its 2000x2000x2000 float32 array needs 30518 MiB.*memory "
                                         "available now"):
        read_ct(huge)


def test_memory_limit_from_argument_and_environment(tmp_path, monkeypatch):
    path = write_volume(phantom(np.eye(3)), tmp_path / "ct.mha")  # 210 voxels = 840 bytes
    assert read_ct(path, max_bytes=840).shape == SHAPE
    with pytest.raises(InputError, match="over the limit of 0 MiB \\(the max_bytes argument\\)"):
        read_ct(path, max_bytes=839)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "0.0001")
    with pytest.raises(InputError, match=f"too large.*\\${MEMORY_LIMIT_ENV}"):
        read_ct(path)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(InputError, match="is not a number of MiB"):
        read_ct(path)


def test_errors_are_one_line(tmp_path):
    for call in (lambda: read_ct(tmp_path / "x.nrrd"),
                 lambda: read_ct(mha(tmp_path / "s.mha", spacing="0 1 1")),
                 lambda: write_volume(phantom(np.eye(3)), tmp_path / "x.txt")):
        with pytest.raises(InputError) as error:
            call()
        assert "\n" not in str(error.value)
    assert not os.path.exists(tmp_path / "x.txt")
