"""The modules' headless logic on a real MRML scene: files in through x2ct.io, input checks."""

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

import vtk  # noqa: E402
from X2CTReconstructionLib import scene as glue  # noqa: E402
from X2CTReconstructionLib.logic import ReconstructionLogic, node_name  # noqa: E402
from X2CTTrainingLib.logic import TrainingLogic  # noqa: E402

import x2ct.io  # noqa: E402
from x2ct import sampledata  # noqa: E402
from x2ct.errors import InputError  # noqa: E402
from x2ct.image import Volume, XRay  # noqa: E402
from x2ct.models import registry  # noqa: E402

pytestmark = pytest.mark.slicer


def test_node_names_drop_the_format_suffix():
    assert node_name("/data/chest.nii.gz") == "chest"
    assert node_name("/data/lateral.nrrd") == "lateral"
    assert node_name("/data/DICOM-series") == "DICOM-series"


def test_load_xray_and_ct_files_into_the_scene(scene, tmp_path):
    image = np.zeros((40, 30), np.float32)
    image[0, 0] = 1.0
    xray_path = x2ct.io.write_xray(XRay(image, (0.5, 0.8), view="lateral", sad=541.0, sid=949.0),
                                   tmp_path / "lateral.nrrd")
    volume = Volume(np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32),
                    spacing=(1.0, 1.5, 2.0), origin=(3.0, 4.0, 5.0), direction=np.diag([1.0, -1.0, 1.0]))
    ct_path = x2ct.io.write_volume(volume, tmp_path / "phantom.nii.gz")
    logic = ReconstructionLogic(scene)

    xray_node = logic.loadXRay(xray_path)
    assert xray_node.GetName() == "lateral" and xray_node.GetScene() is scene
    back = glue.xray_from_volume_node(xray_node)
    np.testing.assert_array_equal(back.image, image)
    assert back.view == "lateral" and back.sad == 541.0 and back.pixel_spacing == pytest.approx((0.5, 0.8))
    assert logic.loadXRay(xray_path, view="frontal").GetAttribute(glue.VIEW_ATTRIBUTE) == "frontal"

    ct_node = logic.loadCT(ct_path)
    assert ct_node.GetName() == "phantom"
    read = glue.volume_from_volume_node(ct_node)
    np.testing.assert_allclose(read.array, volume.array, atol=1e-6)
    np.testing.assert_allclose(read.origin, volume.origin, atol=1e-5)
    np.testing.assert_allclose(read.direction, volume.direction, atol=1e-6)


def test_a_bad_file_adds_nothing_to_the_scene(scene, tmp_path):
    logic = ReconstructionLogic(scene)
    before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(InputError):
        logic.loadXRay(tmp_path / "missing.dcm")
    (tmp_path / "broken.nrrd").write_bytes(b"\x00\x01 not an image")
    with pytest.raises(InputError):
        logic.loadCT(tmp_path / "broken.nrrd")
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == before


def _colour_png(path):
    from PIL import Image

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200  # red: not a greyscale radiograph
    Image.fromarray(rgb).save(path)


def _one_pixel_png(path):
    from PIL import Image

    Image.fromarray(np.full((1, 1), 100, np.uint8)).save(path)


def _ct_file(path):
    x2ct.io.write_volume(Volume(np.zeros((8, 9, 10), np.float32), (1.0, 1.0, 1.0)), path)


@pytest.mark.parametrize("name, make, message", [
    ("colour.png", _colour_png, "colour"),
    ("pixel.png", _one_pixel_png, "1x1"),
    ("ct.nrrd", _ct_file, "3D"),
    ("garbage.png", lambda path: path.write_bytes(b"not a picture"), "annot"),
])
def test_bad_xray_files_are_refused_with_a_reason_and_add_nothing(scene, tmp_path, name, make, message):
    make(tmp_path / name)
    before = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
    with pytest.raises(InputError) as refused:
        ReconstructionLogic(scene).loadXRay(tmp_path / name)
    assert message.lower() in str(refused.value).lower()
    assert [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())] == before


@pytest.mark.sampledata
def test_real_radiograph_is_loaded_upright_with_its_spacing(scene):
    node = ReconstructionLogic(scene).loadXRay(sampledata.path("chest-xray"))
    xray = x2ct.io.read_xray(sampledata.path("chest-xray"))
    rows, columns = xray.shape
    assert node.GetImageData().GetDimensions() == (columns, rows, 1)
    np.testing.assert_allclose(node.GetSpacing()[:2], xray.pixel_spacing[::-1])
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    assert matrix.GetElement(2, 1) < 0, "image rows must run from head to feet (RAS S decreasing)"
    assert matrix.GetElement(0, 0) < 0, "a frontal image's columns run towards the patient's left (RAS R decreasing)"
    np.testing.assert_array_equal(glue.xray_from_volume_node(node).image, xray.image)


def test_input_problems_name_what_is_wrong(scene):
    logic = ReconstructionLogic(scene)
    frontal = glue.xray_node_from_xray(XRay(np.ones((8, 8), np.float32), view="frontal"), "frontal", scene)
    lateral = glue.xray_node_from_xray(XRay(np.ones((8, 8), np.float32), view="lateral"), "lateral", scene)
    ct = glue.volume_node_from_volume(Volume(np.zeros((3, 4, 5), np.float32)), "ct", scene)

    assert logic.inputProblems(frontal) == []
    assert logic.inputProblems(frontal, lateral, ct) == []
    assert logic.inputProblems(None) == ["Select or load a frontal X-ray."]
    assert "same node" in logic.inputProblems(frontal, frontal)[0]
    (problem,) = logic.inputProblems(ct, lateral)
    assert problem.startswith("Frontal:") and "3D volume" in problem
    (problem,) = logic.inputProblems(frontal, None, lateral)
    assert problem.startswith("Ground truth:") and "X-ray" in problem


def test_training_lists_registered_methods_and_checks_the_set_up(tmp_path):
    logic = TrainingLogic()
    methods = logic.methodNames()
    assert methods == sorted(registry.names()) and methods
    assert logic.presetNames() == tuple(registry.PRESETS)

    dataset = tmp_path / "cts"
    dataset.mkdir()
    (dataset / "case-000.nii.gz").write_bytes(b"")
    assert logic.settingsProblems(dataset, methods[0], "tiny", 10, tmp_path / "run" / "model") == []

    problems = logic.settingsProblems(".", "no-such-method", "huge", 0, "")
    assert len(problems) == 5
    assert problems[0] == "Choose the dataset folder (or the simulator)." and "no-such-method" in problems[1]
    assert "huge" in problems[2] and "at least 1 step" in problems[3] and "output folder" in problems[4]

    empty = tmp_path / "empty"
    empty.mkdir()
    (problem,) = logic.settingsProblems(empty, methods[0], "tiny", 10, tmp_path / "out")
    assert "holds no CT volumes" in problem
    (problem,) = logic.settingsProblems(dataset, methods[0], "tiny", 10, dataset)
    assert "is the dataset folder" in problem
    (problem,) = logic.settingsProblems(dataset, methods[0], "tiny", 10, dataset / "case-000.nii.gz" / "out")
    assert "is a file" in problem
