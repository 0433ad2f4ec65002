"""Scene glue on a real headless MRML scene: x2ct LPS records <-> Slicer RAS nodes.

Positions are checked against SimpleITK (an independent implementation of
the ITK/LPS geometry), so a flipped or swapped axis in the glue fails.
"""

import math

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

import SimpleITK as sitk  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from X2CTReconstructionLib import scene as glue  # noqa: E402

from x2ct.errors import InputError  # noqa: E402
from x2ct.image import Volume, XRay, volume_from_sitk, volume_to_sitk  # noqa: E402

pytestmark = pytest.mark.slicer


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


#: Direction matrices (columns = LPS directions of i, j, k): identity, the chest CT's, permuted, flipped
#: and permuted, oblique.
ORIENTATIONS = {
    "identity": np.eye(3),
    "chest-ct": np.diag([1.0, -1.0, 1.0]),
    "permuted": np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=float),
    "flipped-permuted": np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=float),
    "oblique": _rotation("z", 30) @ _rotation("x", 20),
}

#: Marker voxels (i, j, k) with distinct values, at distinct corners of a 7 x 6 x 5 (i, j, k) grid.
MARKERS = {(0, 0, 0): 100, (6, 0, 0): 200, (0, 5, 0): 300, (0, 0, 4): 400, (6, 5, 4): 500}


def phantom(direction) -> Volume:
    array = np.zeros((5, 6, 7), dtype=np.int16)  # (k, j, i)
    for (i, j, k), value in MARKERS.items():
        array[k, j, i] = value
    return Volume(array, spacing=(0.7, 1.3, 2.5), origin=(-12.0, 30.5, 7.25), direction=direction)


def node_ras(node, ijk) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array(matrix.MultiplyPoint((*map(float, ijk), 1.0))[:3])


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_volume_round_trip_keeps_every_marker_in_place(scene, orientation):
    volume = phantom(ORIENTATIONS[orientation])
    reference = volume_to_sitk(volume)
    node = glue.volume_node_from_volume(volume, "phantom", scene)

    voxels = slicer.util.arrayFromVolume(node)
    for ijk, value in MARKERS.items():
        lps = np.array(reference.TransformIndexToPhysicalPoint(ijk))
        ras = node_ras(node, ijk)
        np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-9)
        assert voxels[ijk[2], ijk[1], ijk[0]] == value

    back = glue.volume_from_volume_node(node)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == volume.array.dtype
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-9)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-9)


@pytest.mark.parametrize("orientation", ["chest-ct", "flipped-permuted", "oblique"])
def test_slicer_storage_and_simpleitk_agree_on_geometry(scene, slicer_app, tmp_path, orientation):
    volume = phantom(ORIENTATIONS[orientation])

    # Written by Slicer's storage node, read by SimpleITK.
    node = glue.volume_node_from_volume(volume, "phantom", scene)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(tmp_path / "from-slicer.nrrd"))
    assert storage.WriteData(node)
    read = volume_from_sitk(sitk.ReadImage(str(tmp_path / "from-slicer.nrrd")))
    np.testing.assert_array_equal(read.array, volume.array)
    np.testing.assert_allclose(read.spacing, volume.spacing, atol=1e-6)
    np.testing.assert_allclose(read.origin, volume.origin, atol=1e-6)
    np.testing.assert_allclose(read.direction, volume.direction, atol=1e-6)

    # Written by SimpleITK, read by Slicer's volumes logic, converted by the glue. Slicer's reader
    # may store the voxels in another order (it flips the slice axis of a left-handed grid, such as
    # the chest CT's), so compare where the markers are, not the voxel order.
    expected = marker_positions(volume)
    for name in ("from-sitk.nrrd", "from-sitk.nii.gz"):
        sitk.WriteImage(volume_to_sitk(volume), str(tmp_path / name))
        loaded = slicer_app.volumes_logic.AddArchetypeVolume(str(tmp_path / name), name)
        assert loaded is not None, f"Slicer could not read {name}"
        back = glue.volume_from_volume_node(loaded)
        positions = marker_positions(back)
        assert positions.keys() == expected.keys()
        for value, lps in expected.items():
            np.testing.assert_allclose(positions[value], lps, atol=1e-4, err_msg=f"{name}: marker {value}")


def marker_positions(volume: Volume) -> dict:
    """LPS position (SimpleITK's) of each non-zero voxel, by value."""
    image = volume_to_sitk(volume)
    return {int(volume.array[k, j, i]): np.array(image.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))
            for k, j, i in zip(*np.nonzero(volume.array))}


def test_parent_transform_moves_the_volume_and_a_warp_is_refused(scene):
    volume = phantom(np.eye(3))
    node = glue.volume_node_from_volume(volume, "phantom", scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 10.0)  # 10 mm towards patient right (RAS +x) = LPS -x
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(glue.volume_from_volume_node(node).origin,
                               np.array(volume.origin) + [-10.0, 0.0, 0.0], atol=1e-9)

    warp = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    grid = vtk.vtkImageData()
    grid.SetDimensions(2, 2, 2)
    grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
    grid.GetPointData().GetScalars().Fill(1.0)
    displacement = vtk.vtkGridTransform()
    displacement.SetDisplacementGridData(grid)
    warp.SetAndObserveTransformToParent(displacement)
    node.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(InputError, match="non-linear transform"):
        glue.volume_from_volume_node(node)


def test_names_never_collide_and_existing_nodes_are_untouched(scene):
    first = glue.volume_node_from_volume(phantom(np.eye(3)), "CT", scene)
    before = slicer.util.arrayFromVolume(first).copy()
    second = glue.volume_node_from_volume(Volume(np.ones((2, 3, 4), np.float32)), "CT", scene)
    xray = glue.xray_node_from_xray(XRay(np.ones((4, 5), np.float32)), "CT", scene)
    names = [first.GetName(), second.GetName(), xray.GetName()]
    assert names[0] == "CT" and len(set(names)) == 3
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(first), before)


def lightbox_xray(view, spacing=(0.5, 0.8), sad=541.0, sid=949.0) -> XRay:
    """A 6 x 9 radiograph with a bright top-left and a dimmer bottom-right pixel (all values distinct)."""
    image = np.arange(54, dtype=np.float32).reshape(6, 9) / 100.0
    image[0, 0], image[-1, -1] = 5.0, 3.0
    return XRay(image, pixel_spacing=spacing, view=view, sad=sad, sid=sid, metadata={"patient": "phantom"})


@pytest.mark.parametrize("view", ["frontal", "lateral", "ap", 30.0])
def test_xray_node_keeps_spacing_orientation_and_attributes(scene, view):
    xray = lightbox_xray(view)
    center = np.array([5.0, -20.0, 100.0])  # LPS
    node = glue.xray_node_from_xray(xray, "xray", scene, center=center)

    assert node.GetImageData().GetDimensions() == (9, 6, 1)
    np.testing.assert_allclose(node.GetSpacing(), (0.8, 0.5, glue.XRAY_SLICE_MM))
    top_left, top_right, bottom_left = (node_ras(node, ijk) for ijk in ((0, 0, 0), (8, 0, 0), (0, 5, 0)))
    np.testing.assert_allclose(top_left - bottom_left, [0, 0, 5 * 0.5], atol=1e-9)  # rows run head -> feet
    np.testing.assert_allclose((top_left + node_ras(node, (8, 5, 0))) / 2, center * [-1, -1, 1], atol=1e-9)
    across = top_right - top_left  # RAS: the column direction over 8 pixels
    expected = {  # seen from the detector: frontal/ap patient's right on the left, lateral anterior on the left
        "frontal": [-1, 0, 0], "ap": [-1, 0, 0], "lateral": [0, -1, 0],
        30.0: [-math.cos(math.radians(30)), -math.sin(math.radians(30)), 0],
    }[view]
    np.testing.assert_allclose(across, np.array(expected) * 8 * 0.8, atol=1e-9)

    back = glue.xray_from_volume_node(node)
    np.testing.assert_array_equal(back.image, xray.image)
    assert back.pixel_spacing == pytest.approx(xray.pixel_spacing)
    assert back.view == xray.view and back.sad == 541.0 and back.sid == 949.0
    assert back.metadata["patient"] == "phantom" and back.metadata["source_node"] == "xray"


def one_slice_node(scene, direction_lps, array):
    """A one-slice volume as Slicer's own readers would create it (no x2ct attributes)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "plain")
    matrix = glue.ijk_to_ras((0.6, 0.9, 1.0), (0.0, 0.0, 0.0), direction_lps)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    slicer.util.updateVolumeFromArray(node, array)
    return node


def test_plain_images_are_read_as_displayed_in_their_slice_view(scene):
    image = np.arange(12, dtype=np.float32).reshape(1, 3, 4)  # (k, j, i): 3 rows, 4 columns

    # A picture loaded by Slicer lies in the axial plane (i -> left, j -> posterior): displayed as stored.
    axial = glue.xray_from_volume_node(one_slice_node(scene, np.eye(3), image))
    np.testing.assert_array_equal(axial.image, image[0])
    assert axial.view == "frontal" and axial.metadata["view_source"].startswith("assumed")
    assert axial.pixel_spacing == pytest.approx((0.9, 0.6))

    # Coronal plane with i -> patient right and j -> superior: the screen shows it mirrored and upside down.
    coronal = np.column_stack([[-1, 0, 0], [0, 0, 1], [0, 1, 0]]).astype(float)
    read = glue.xray_from_volume_node(one_slice_node(scene, coronal, image))
    np.testing.assert_array_equal(read.image, image[0, ::-1, ::-1])
    assert read.view == "frontal" and read.metadata["view_source"] == "coronal plane"

    # Sagittal plane with i -> inferior, j -> posterior: rows and columns swap.
    sagittal = np.column_stack([[0, 0, -1], [0, 1, 0], [1, 0, 0]]).astype(float)
    read = glue.xray_from_volume_node(one_slice_node(scene, sagittal, image), view="lateral")
    np.testing.assert_array_equal(read.image, image[0].T)
    assert read.pixel_spacing == pytest.approx((0.6, 0.9))
    assert read.view == "lateral" and read.metadata["view_source"] == "argument"


def test_unusable_nodes_are_refused_with_a_reason(scene):
    ct = glue.volume_node_from_volume(phantom(np.eye(3)), "ct", scene)
    with pytest.raises(InputError, match="3D volume"):
        glue.xray_from_volume_node(ct)
    with pytest.raises(InputError, match="is an X-ray"):
        glue.volume_from_volume_node(glue.xray_node_from_xray(lightbox_xray("frontal"), "x", scene))
    with pytest.raises(InputError, match="oblique"):
        glue.xray_from_volume_node(one_slice_node(scene, ORIENTATIONS["oblique"], np.zeros((1, 3, 4))))
    tilted = np.column_stack([[0.8, 0, 0.6], [-0.6, 0, 0.8], [0, -1.0, 0]])  # coronal, turned 37 degrees
    with pytest.raises(InputError, match="rotated within its plane"):
        glue.xray_from_volume_node(one_slice_node(scene, tilted, np.zeros((1, 3, 4))))
    with pytest.raises(InputError, match="No volume node"):
        glue.volume_from_volume_node(None)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="holds no voxels"):
        glue.volume_from_volume_node(empty)
