"""X-rays that Slicer itself read from DICOM (DICOM module or Add Data): a MONOCHROME1 film, whose grey scale
Slicer's readers may leave inverted, is refused with a pointer to Load file, never used silently."""

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

import slicer  # noqa: E402
from X2CTReconstructionLib import scene as glue  # noqa: E402
from X2CTReconstructionLib.logic import ReconstructionLogic  # noqa: E402

from x2ct.errors import InputError  # noqa: E402

pytestmark = pytest.mark.slicer

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def write_cr(path, photometric: str):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CR_STORAGE, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CR_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = "CR", photometric
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 8, 6, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(48, dtype=np.uint16) * 80).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def node_read_by_slicer(scene, name: str, file_name=None):
    """A one-slice volume as Slicer's Add Data leaves it: voxels, and the file name on its storage node."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, (np.arange(48, dtype=np.float32) * 80).reshape(1, 8, 6))
    if file_name is not None:
        storage = node.CreateDefaultStorageNode()
        scene.AddNode(storage)
        storage.UnRegister(None)
        storage.SetFileName(str(file_name))
        node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def test_add_data_of_a_monochrome1_film_is_refused_and_monochrome2_is_used(scene, tmp_path):
    inverted = node_read_by_slicer(scene, "film M1", write_cr(tmp_path / "m1.dcm", "MONOCHROME1"))
    plain = node_read_by_slicer(scene, "film M2", write_cr(tmp_path / "m2", "MONOCHROME2"))  # no extension
    png = node_read_by_slicer(scene, "picture", tmp_path / "film.png")
    with pytest.raises(InputError, match=r"'film M1' was loaded from DICOM .*m1\.dcm.* MONOCHROME1.*Load file"):
        glue.xray_from_volume_node(inverted)
    assert glue.xray_from_volume_node(plain).shape == (8, 6)
    assert glue.xray_from_volume_node(png).shape == (8, 6)
    problems = ReconstructionLogic(scene).inputProblems(inverted)
    assert len(problems) == 1 and problems[0].startswith("Frontal: X-ray 'film M1'") and "Load file" in problems[0]


def test_a_node_from_the_dicom_module_is_checked_through_its_instance_uid(scene, monkeypatch):
    node = node_read_by_slicer(scene, "CR from the DICOM browser")
    node.SetAttribute(glue.DICOM_UIDS_ATTRIBUTE, "1.2.3.4")
    monkeypatch.delattr(slicer, "dicomDatabase", raising=False)
    with pytest.raises(InputError, match="cannot be read here.*Load file"):  # no database: no guess
        glue.xray_from_volume_node(node)

    class Database:
        values = {}

        def instanceValue(self, uid, tag):
            return self.values.get((uid, tag), "")

    monkeypatch.setattr(slicer, "dicomDatabase", Database(), raising=False)
    Database.values[("1.2.3.4", "0028,0004")] = "MONOCHROME1"
    with pytest.raises(InputError, match=r"DICOM instance 1\.2\.3\.4.*MONOCHROME1"):
        glue.xray_from_volume_node(node)
    Database.values[("1.2.3.4", "0028,0004")] = "MONOCHROME2 "
    assert glue.xray_from_volume_node(node).shape == (8, 6)


def test_x_rays_made_by_the_module_are_not_looked_up(scene, tmp_path):
    from x2ct.io import read_xray

    node = ReconstructionLogic(scene).loadXRay(write_cr(tmp_path / "m1.dcm", "MONOCHROME1"))  # Load file
    assert node.GetAttribute(glue.KIND_ATTRIBUTE) == "xray"
    np.testing.assert_allclose(glue.xray_from_volume_node(node).image, read_xray(tmp_path / "m1.dcm").image)
