"""Datasets: CT folders, LIDC-style DICOM trees, X2CT HDF5 files, the simulator; splits; bad input."""

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from x2ct.data.cache import ViewCache
from x2ct.data.datasets import (SPLITS, CTFolderDataset, DicomTreeDataset, SimulatedDataset, X2CTHDF5Dataset,
                                split_of)
from x2ct.data.protocol import DURHAM, Protocol
from x2ct.errors import InputError

#: A tiny X2CT-like protocol: 1 mm, crop to 32 mm, 16^3 output.
TINY = Protocol(size=16, crop_mm=32.0)


class AxisSum:
    """Parallel-beam sums of the HU volume along axis 1 (0 deg) and axis 2 (90 deg)."""

    identity = "test-axis-sum/1"

    def __init__(self):
        self.calls = 0

    def __call__(self, volume, angles, size):
        self.calls += 1
        mu = np.clip(volume.array + 1000.0, 0, None) / 1000.0
        return np.stack([mu.sum(axis=1 if a == 0 else 2) for a in angles])


@pytest.fixture
def views(tmp_path):
    return ViewCache(AxisSum(), angles=(0.0, 90.0), size=16, folder=tmp_path / "views")


def _write_ct(path, value=0.0, shape=(24, 20, 20)):
    array = np.full(shape, -1000.0, np.float32)
    array[6:18, 5:15, 4:16] = value
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 1.5))
    image.SetOrigin((-15.0, -15.0, -18.0))
    sitk.WriteImage(image, str(path))


def _check_item(item, views=2, size=16):
    assert item["ct"].shape == (1, size, size, size) and item["ct"].dtype == torch.float32
    assert 0.0 <= float(item["ct"].min()) and float(item["ct"].max()) <= 1.0
    assert item["views"].shape == (views, size, size) and item["views"].dtype == torch.float32
    assert item["angles"].tolist() == [0.0, 90.0][:views]
    assert isinstance(item["id"], str)


def test_ct_folder_pairs_with_cached_views(tmp_path, views):
    folder = tmp_path / "cts"
    (folder / "sub").mkdir(parents=True)
    _write_ct(folder / "a.nii.gz", 40.0)
    _write_ct(folder / "sub" / "b.nrrd", 300.0)
    (folder / "notes.txt").write_text("not a CT")
    dataset = CTFolderDataset(folder, protocol=TINY, views=views)
    assert dataset.ids == ["a", "b"] and len(dataset) == 2
    item = dataset[1]
    _check_item(item)
    assert item["hu_range"].tolist() == [-1024.0, 1476.0]
    body = item["ct"][0] > (0 + 1024) / 2500 - 1e-3  # voxels at or above water
    assert body.any() and float(item["ct"][0][body].max()) == pytest.approx((300 + 1024) / 2500, abs=1e-3)
    dataset[1]
    assert views.projector.calls == 1  # second visit read the views from disk
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["ct"].shape == (2, 1, 16, 16, 16) and batch["views"].shape == (2, 2, 16, 16)
    with pytest.raises(IndexError):
        dataset[2]


def test_ct_only_and_durham_protocol(tmp_path):
    _write_ct(tmp_path / "a.mha", 500.0)
    item = CTFolderDataset(tmp_path, protocol=dataclasses.replace(DURHAM, size=16, crop_mm=32.0), views=False)[0]
    assert set(item) == {"ct", "id", "hu_range"}
    assert float(item["ct"].min()) == 0.0 and float(item["ct"].max()) == 1.0
    assert item["hu_range"].tolist() == [-1000.0, 500.0]


def test_folder_without_readable_ct(tmp_path):
    with pytest.raises(InputError, match="No readable CT"):
        CTFolderDataset(tmp_path, protocol=TINY, views=False)
    (tmp_path / "broken.nii.gz").write_bytes(b"\x00garbage" * 10)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.float32)), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError, match="No readable CT.*2 candidate files"):
        CTFolderDataset(tmp_path, protocol=TINY, views=False)
    _write_ct(tmp_path / "good.mha")
    with pytest.warns(UserWarning, match="Skipping"):
        dataset = CTFolderDataset(tmp_path, protocol=TINY, views=False)
    assert dataset.ids == ["good"]


def test_png_given_as_ct_is_refused(tmp_path):
    from PIL import Image

    png = tmp_path / "chest.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(png)
    with pytest.raises(InputError, match="no 3D voxel spacing"):
        CTFolderDataset([png], protocol=TINY, views=False)
    with pytest.raises(InputError, match="not found"):
        CTFolderDataset([tmp_path / "missing.nii.gz"], protocol=TINY, views=False)


def test_hashed_splits_are_deterministic_and_partition(tmp_path):
    ids = [f"patient-{n:03d}" for n in range(200)]
    splits = [split_of(i) for i in ids]
    assert splits == [split_of(i) for i in ids]
    counts = {name: splits.count(name) for name in SPLITS}
    assert 140 <= counts["train"] <= 180 and counts["validation"] >= 8 and counts["test"] >= 8
    with pytest.raises(InputError, match="fractions"):
        split_of("x", (0.5, 0.5, 0.5))
    for n in range(6):
        _write_ct(tmp_path / f"case{n}.mha")
    parts = [CTFolderDataset(tmp_path, protocol=TINY, views=False, split=s).ids for s in SPLITS]
    assert sorted(sum(parts, [])) == [f"case{n}" for n in range(6)]
    chosen = CTFolderDataset(tmp_path, protocol=TINY, views=False, include=["case2", "case4"])
    assert chosen.ids == ["case2", "case4"]


def _dicom_series(folder, patient, modality, slices, series_uid, value=0.0):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    for n in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.SeriesInstanceUID = modality, patient, series_uid
        ds.StudyInstanceUID = generate_uid()
        ds.Rows = ds.Columns = 8
        ds.PixelSpacing = [2.0, 2.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-8.0, -8.0, 2.5 * n]
        ds.SliceThickness = 2.5
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.full((8, 8), int(value + 1024), np.int16).tobytes()
        ds.save_as(folder / f"{n:03d}.dcm", enforce_file_format=True)


def test_dicom_tree_one_case_per_ct_series(tmp_path, views):
    root = tmp_path / "LIDC-IDRI"
    _dicom_series(root / "LIDC-0001" / "study" / "ct", "LIDC-0001", "CT", 6, "1.2.3.1", value=50.0)
    _dicom_series(root / "LIDC-0001" / "study" / "xray", "LIDC-0001", "CR", 1, "1.2.3.2")
    _dicom_series(root / "LIDC-0002" / "study" / "short", "LIDC-0002", "CT", 3, "1.2.3.3")
    _dicom_series(root / "LIDC-0003" / "study" / "ct", "LIDC-0003", "CT", 5, "1.2.3.4", value=-200.0)
    dataset = DicomTreeDataset(root, protocol=TINY, views=views, min_slices=4)
    assert dataset.ids == ["LIDC-0001_1.2.3.1", "LIDC-0003_1.2.3.4"]
    item = dataset[0]
    _check_item(item)
    assert float(item["ct"].max()) == pytest.approx((50 + 1024) / 2500, abs=1e-3)
    assert [c.group for c in dataset.cases] == ["LIDC-0001", "LIDC-0003"]
    with pytest.raises(InputError, match="No CT series with at least 40"):
        DicomTreeDataset(root, protocol=TINY, views=False)


def _write_h5(path, ct=None, xray=True):
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        if ct is not None:
            file["ct"] = ct
        if xray:
            file["xray1"] = np.full((32, 32), 255, np.uint8)
            file["xray2"] = np.full((32, 32), 51, np.uint8)


def test_x2ct_hdf5_case_as_the_x2ct_loader_reads_it(tmp_path):
    stored = np.zeros((16, 16, 16), np.float32)  # HU + 1024
    stored[2, 5, 9] = 3000.0   # clipped to 2500 -> 1.0
    stored[7, 1, 3] = 1024.0   # water
    _write_h5(tmp_path / "LIDC-IDRI-0001.20000101.3000566.1" / "ct_xray_data.h5", stored)
    dataset = X2CTHDF5Dataset(tmp_path, protocol=TINY)
    assert dataset.ids == ["LIDC-IDRI-0001.20000101.3000566.1"] and dataset.cases[0].group == "LIDC-IDRI-0001"
    item = dataset[0]
    _check_item(item)
    ct = item["ct"][0]
    assert float(ct[5, 2, 9]) == pytest.approx(1.0)  # axes 0 and 1 swapped, as X2CT's Permute((1, 0, 2))
    assert float(ct[1, 7, 3]) == pytest.approx(1024 / 2500)
    assert float(ct.sum()) == pytest.approx(1.0 + 1024 / 2500)
    assert torch.allclose(item["views"][0], torch.ones(16, 16)) and torch.allclose(item["views"][1],
                                                                                    torch.full((16, 16), 0.2))
    small = X2CTHDF5Dataset(tmp_path, protocol=TINY.with_size(8))[0]
    assert small["ct"].shape == (1, 8, 8, 8) and small["views"].shape == (2, 8, 8)


def test_hdf5_without_expected_datasets(tmp_path):
    _write_h5(tmp_path / "a.h5", ct=None)
    with pytest.raises(InputError, match="lacks the dataset.*ct"):
        X2CTHDF5Dataset(tmp_path / "a.h5", protocol=TINY)
    _write_h5(tmp_path / "b.h5", ct=np.zeros((16, 16), np.float32))
    with pytest.raises(InputError, match="unexpected shape"):
        X2CTHDF5Dataset(tmp_path / "b.h5", protocol=TINY)
    (tmp_path / "c.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        X2CTHDF5Dataset(tmp_path / "c.h5", protocol=TINY)
    with pytest.raises(InputError, match="not found"):
        X2CTHDF5Dataset(tmp_path / "none.h5", protocol=TINY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No .h5 files"):
        X2CTHDF5Dataset(tmp_path / "empty", protocol=TINY)


@pytest.mark.sampledata
def test_simulated_dataset_is_deterministic(tmp_path):
    views = ViewCache(AxisSum(), angles=(0.0, 90.0), size=32, folder=tmp_path)
    dataset = SimulatedDataset("validation", count=2, protocol=Protocol(size=32), views=views)
    assert dataset.ids == ["sim-10000", "sim-10001"]
    first, again = dataset[0], dataset[0]
    _check_item(first, size=32)
    assert torch.equal(first["ct"], again["ct"]) and torch.equal(first["views"], again["views"])
    assert not torch.equal(first["ct"], dataset[1]["ct"])
    assert SimulatedDataset("test", count=1, views=False).ids == ["sim-20000"]


@pytest.mark.sampledata
def test_simulated_pairs_with_default_x2ct_drrs(tmp_path, monkeypatch):
    """Default views: the X2CT benchmark DRRs, cached in the user cache; a frontal chest film's layout."""
    from x2ct.data.protocol import X2CT

    monkeypatch.setenv("X2CT_CACHE", str(tmp_path))
    item = SimulatedDataset("train", count=1, protocol=X2CT.with_size(32))[0]
    _check_item(item, size=32)
    frontal = item["views"][0]
    assert len(list((tmp_path / "views").rglob("*.npy"))) == 1
    rows = slice(8, 16)  # upper chest: lungs either side of the spine and mediastinum
    centre, right_lung, left_lung = frontal[rows, 14:18].mean(), frontal[rows, 6:10].mean(), frontal[rows, 22:26].mean()
    assert centre > right_lung and centre > left_lung
