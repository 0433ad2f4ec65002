"""DICOM written with pydicom: CT series geometry and CR/DX radiographs read back right."""

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from x2ct.errors import InputError
from x2ct.image import Volume, XRay, to_canonical
from x2ct.io import read_ct, read_image, read_xray

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
MARKERS = {100: (0, 0, 0), 200: (0, 0, 5), 300: (0, 4, 0), 400: (3, 0, 0), 500: (3, 4, 5)}


def dataset(sop_class: str, **fields) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "PAT-1", "1.2.3.4", generate_uid()
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
    for key, value in fields.items():
        setattr(ds, key, value)
    return ds


def ds_number(value: float) -> str:
    return f"{value:.10g}"


def phantom(direction, origin=(-20.0, 35.5, 110.0), spacing=(0.8, 0.6, 2.5)) -> Volume:
    array = np.full((4, 5, 6), -1000.0, dtype=np.float32)
    for value, index in MARKERS.items():
        array[index] = value
    return Volume(array, spacing, origin, direction)


def write_series(folder, volume: Volume, *, slope=1.0, intercepts=None, reverse_files=False, skip=(),
                 tilt=0.0, description="axial", prefix="slice"):
    """One CT slice file per k, ImagePositionPatient/ImageOrientationPatient from the volume geometry.

    With reverse_files the file names and InstanceNumbers run against the
    slice positions, so only the positions can give the right order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    depth = len(volume.array)
    for k in range(depth):
        if k in skip:
            continue
        intercept = -1024.0 if intercepts is None else intercepts[k]
        stored = np.rint((volume.array[k] - intercept) / slope).astype(np.int16)
        position = (np.asarray(volume.origin) + volume.direction[:, 2] * volume.spacing[2] * k
                    + volume.direction[:, 0] * tilt * k)
        number = depth - k if reverse_files else k + 1
        ds = dataset(CT_STORAGE, Modality="CT", SeriesInstanceUID=series_uid, SeriesDescription=description,
                     InstanceNumber=number, Rows=stored.shape[0], Columns=stored.shape[1],
                     PhotometricInterpretation="MONOCHROME2", PixelRepresentation=1,
                     PixelSpacing=[ds_number(volume.spacing[1]), ds_number(volume.spacing[0])],
                     ImagePositionPatient=[ds_number(v) for v in position],
                     ImageOrientationPatient=[ds_number(v) for v in volume.direction[:, :2].T.ravel()],
                     RescaleSlope=ds_number(slope), RescaleIntercept=ds_number(intercept),
                     PixelData=stored.tobytes())
        pydicom.dcmwrite(folder / f"{prefix}{number:03d}.dcm", ds, enforce_file_format=True)
    return folder


def physical(volume: Volume, index) -> np.ndarray:
    k, j, i = index
    return np.asarray(volume.origin) + volume.direction @ (np.array([i, j, k]) * volume.spacing)


def assert_markers_in_place(source: Volume, loaded: Volume) -> None:
    """Each marker at its LPS point, in the loaded volume and after to_canonical."""
    for volume in (loaded, to_canonical(loaded)):
        for value, index in MARKERS.items():
            (found,) = np.argwhere(volume.array == value)
            np.testing.assert_allclose(physical(volume, found), physical(source, index), atol=1e-3)


CORONAL = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # rows to L, columns to I, slices to P


@pytest.mark.parametrize("direction", [np.eye(3), CORONAL], ids=["axial", "coronal"])
@pytest.mark.parametrize("reverse_files", [False, True], ids=["files-in-order", "files-reversed"])
def test_series_geometry_values_and_order(tmp_path, direction, reverse_files):
    source = phantom(direction)
    intercepts = [-1024.0 + 10 * k for k in range(4)]  # each slice rescaled on its own
    loaded = read_ct(write_series(tmp_path / "ct", source, slope=2.0, intercepts=intercepts,
                                  reverse_files=reverse_files))
    assert loaded.array.dtype == np.float32
    np.testing.assert_array_equal(loaded.array, source.array)
    np.testing.assert_allclose(loaded.spacing, source.spacing)
    np.testing.assert_allclose(loaded.origin, source.origin, atol=1e-6)
    np.testing.assert_allclose(loaded.direction, direction)
    assert_markers_in_place(source, loaded)


def test_slices_descending_along_the_normal_come_back_ascending(tmp_path):
    """Canonical order (k to the feet) is left-handed, so DICOM stores it with the normal
    pointing up: the reader sorts by position and the markers stay where they are."""
    source = phantom(np.diag([1.0, 1.0, -1.0]))
    loaded = read_ct(write_series(tmp_path / "ct", source))
    np.testing.assert_allclose(loaded.direction, np.eye(3))
    np.testing.assert_array_equal(loaded.array, source.array[::-1])
    assert_markers_in_place(source, loaded)


def test_a_flipped_reading_would_fail_the_marker_check(tmp_path):
    source = phantom(np.eye(3))
    loaded = read_ct(write_series(tmp_path / "ct", source))
    with pytest.raises(AssertionError):
        assert_markers_in_place(source, loaded.with_array(loaded.array[::-1].copy()))
    with pytest.raises(AssertionError):
        assert_markers_in_place(source, loaded.with_array(loaded.array[:, :, ::-1].copy()))


def test_folder_with_two_series_asks_for_one_and_a_file_picks_it(tmp_path):
    folder = tmp_path / "study"
    write_series(folder, phantom(np.eye(3)), description="soft tissue")
    other = phantom(np.eye(3))
    write_series(folder, other.with_array(other.array + 1), prefix="b-slice")
    (folder / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match="holds 2 series: .*soft tissue \\(4 files.*Give the path of one file"):
        read_ct(folder)
    picked = read_ct(folder / "b-slice001.dcm")
    assert picked.array.max() == 501


def test_missing_slice_tilt_duplicates_and_single_slice_are_refused(tmp_path):
    with pytest.raises(InputError, match="slice spacing .* is uneven .* slices are missing"):
        read_ct(write_series(tmp_path / "gap", phantom(np.eye(3)), skip={1}))
    with pytest.raises(InputError, match="gantry tilt"):
        read_ct(write_series(tmp_path / "tilt", phantom(np.eye(3)), tilt=0.5))
    duplicated = write_series(tmp_path / "dup", phantom(np.eye(3)))
    (duplicated / "copy.dcm").write_bytes((duplicated / "slice002.dcm").read_bytes())
    with pytest.raises(InputError, match="share a position"):
        read_ct(duplicated)
    with pytest.raises(InputError, match="single slice: that is a 2D image"):
        read_ct(write_series(tmp_path / "one", phantom(np.eye(3)), skip={1, 2, 3}))


def test_empty_folder_corrupt_slice_and_memory_limit(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No DICOM CT slices found"):
        read_ct(tmp_path / "empty")
    noise = tmp_path / "noise.dcm"
    noise.write_bytes(np.random.default_rng(2).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="not a readable DICOM file"):
        read_ct(noise)
    with pytest.raises(InputError, match="not a readable DICOM file"):
        read_xray(noise)
    series = write_series(tmp_path / "ct", phantom(np.eye(3)))
    with pytest.raises(InputError, match="too large: its 4x5x6 float32 array"):
        read_ct(series, max_bytes=4 * 119)


# ---------------------------------------------------------------- radiographs


def write_radiograph(path, stored: np.ndarray, **fields):
    fields = {"Modality": "CR", "PhotometricInterpretation": "MONOCHROME2", "PixelRepresentation": 0,
              "BitsStored": 12, "HighBit": 11, **fields}
    ds = dataset(CR_STORAGE, Rows=stored.shape[0], Columns=stored.shape[1],
                 PixelData=stored.astype(np.uint16).tobytes(), **fields)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


RAW = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 300)  # 0..3300 of 12 bits; asymmetric 3x4


def test_monochrome1_is_inverted_after_rescale_and_geometry_is_read(tmp_path):
    path = write_radiograph(tmp_path / "cr.dcm", RAW, PhotometricInterpretation="MONOCHROME1",
                            RescaleSlope="2", RescaleIntercept="-5", ImagerPixelSpacing=["0.2", "0.3"],
                            PixelSpacing=["0.15", "0.25"], ViewPosition="PA", DistanceSourceToDetector="1800",
                            DistanceSourceToPatient="1500", PatientOrientation=["L", "F"])
    xray = read_xray(path)
    # MONOCHROME1: stored 0 is white. Bone bright = 4095 - stored, then the rescale.
    np.testing.assert_array_equal(xray.image, 2.0 * (4095 - RAW) - 5)
    assert xray.pixel_spacing == (0.2, 0.3)
    assert (xray.view, xray.sid, xray.sad) == ("frontal", 1800.0, 1500.0)
    meta = xray.metadata
    assert (meta["PatientID"], meta["StudyInstanceUID"], meta["Modality"]) == ("PAT-1", "1.2.3.4", "CR")
    assert (meta["pixel_spacing_source"], meta["view_source"]) == ("ImagerPixelSpacing", "ViewPosition")
    assert meta["orientation"].startswith("as stored")


def test_monochrome2_keeps_values_and_falls_back_to_pixel_spacing(tmp_path):
    path = write_radiograph(tmp_path / "dx.dcm", RAW, Modality="DX", RescaleSlope="0.5",
                            RescaleIntercept="10", PixelSpacing=["0.15", "0.25"])
    xray = read_xray(path)
    np.testing.assert_array_equal(xray.image, 0.5 * RAW + 10)
    assert xray.pixel_spacing == (0.15, 0.25)
    assert xray.metadata["pixel_spacing_source"] == "PixelSpacing"
    assert xray.metadata["view_source"].startswith("assumed frontal")
    assert (xray.sad, xray.sid) == (None, None)


def test_unknown_spacing_is_assumed_and_said_but_negative_is_refused(tmp_path):
    xray = read_xray(write_radiograph(tmp_path / "zero.dcm", RAW, PixelSpacing=["0", "0"]))
    assert xray.pixel_spacing == (1.0, 1.0)
    assert xray.metadata["pixel_spacing_source"].startswith("assumed 1 mm")
    given = read_xray(tmp_path / "zero.dcm", pixel_spacing=(0.14, 0.14), view="lateral")
    assert given.pixel_spacing == (0.14, 0.14) and given.view == "lateral"
    assert given.metadata["view_source"] == "argument"
    with pytest.raises(InputError, match="ImagerPixelSpacing \\(-0.2, 0.2\\): pixel sizes must be > 0"):
        read_xray(write_radiograph(tmp_path / "neg.dcm", RAW, ImagerPixelSpacing=["-0.2", "0.2"]))


@pytest.mark.parametrize("position, view", [("PA", "frontal"), ("AP", "ap"), ("LL", "lateral"),
                                            ("LATERAL", "lateral"), ("RL", 270.0)])
def test_view_position(tmp_path, position, view):
    assert read_xray(write_radiograph(tmp_path / "v.dcm", RAW, ViewPosition=position)).view == view


@pytest.mark.parametrize("position, orientation, expected, step", [
    ("PA", ["L", "F"], RAW, "as stored"),
    ("PA", ["R", "F"], RAW[:, ::-1], "mirrored left-right"),  # stored as seen from the tube side
    ("AP", ["L", "F"], RAW[:, ::-1], "mirrored left-right"),  # AP displayed like a PA
    ("AP", ["R", "F"], RAW, "as stored"),
    ("PA", ["L", "H"], RAW[::-1, :], "flipped upside down"),
    ("LL", ["P", "F"], RAW, "as stored"),  # left lateral: anterior on the left
    ("LL", ["A", "F"], RAW[:, ::-1], "mirrored left-right"),
    ("PA", ["F", "L"], RAW.T, "transposed"),  # rotated 90 degrees on the detector
])
def test_patient_orientation_brings_the_image_into_the_view_convention(tmp_path, position, orientation,
                                                                       expected, step):
    path = write_radiograph(tmp_path / "o.dcm", RAW, ViewPosition=position, PatientOrientation=orientation,
                            ImagerPixelSpacing=["0.2", "0.3"])
    xray = read_xray(path)
    np.testing.assert_array_equal(xray.image, expected)
    assert xray.metadata["orientation"].startswith(step)
    assert xray.pixel_spacing == ((0.3, 0.2) if step == "transposed" else (0.2, 0.3))


def test_orientation_that_contradicts_the_view_is_refused(tmp_path):
    path = write_radiograph(tmp_path / "o.dcm", RAW, ViewPosition="LL", PatientOrientation=["L", "F"])
    with pytest.raises(InputError, match="does not fit a lateral view"):
        read_xray(path)


def test_ct_slice_and_radiograph_are_not_confused(tmp_path):
    series = write_series(tmp_path / "ct", phantom(np.eye(3)))
    with pytest.raises(InputError, match="CT slice, part of a 3D series"):
        read_xray(series / "slice001.dcm")
    radiograph = write_radiograph(tmp_path / "cr.dcm", RAW)
    with pytest.raises(InputError, match="single CR image without slice position"):
        read_ct(radiograph)
    assert isinstance(read_image(series / "slice001.dcm"), Volume)
    assert read_image(radiograph).shape == (3, 4)
    assert read_image(series).shape == (4, 5, 6)


def test_a_ct_localizer_is_a_radiograph(tmp_path):
    """A CT scout (topogram) has the CT modality and a position, but it is a projection: it loads as an X-ray."""
    scout = write_radiograph(tmp_path / "scout.dcm", RAW, Modality="CT", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
                             ImagePositionPatient=["0", "0", "0"], PixelSpacing=["0.5", "0.5"])
    assert isinstance(read_image(scout), XRay)
    np.testing.assert_array_equal(read_xray(scout).image, RAW)


def test_a_view_given_on_the_command_line_overrides_a_header_that_contradicts_itself(tmp_path):
    from x2ct.commands.reconstruct import read_view

    path = write_radiograph(tmp_path / "o.dcm", RAW, ViewPosition="LL", PatientOrientation=["L", "F"])
    assert read_view(path, "frontal").view == "frontal"  # --view o.dcm:frontal
    with pytest.raises(InputError, match="does not fit a lateral view"):
        read_view(path, None)
