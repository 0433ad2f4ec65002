"""The one place where x2ct records become MRML nodes and back.

x2ct keeps geometry as ITK/DICOM does (LPS millimetres; ``origin``,
``spacing``, ``direction`` whose columns are the index axes); Slicer keeps one
IJK-to-RAS matrix per volume node. The two are related by

    IJKToRAS = diag(-1, -1, 1, 1) @ [[direction * spacing, origin], [0, 0, 0, 1]]

An X-ray is stored as a one-slice volume node placed like a radiograph on a
light box: rows run superior -> inferior, columns along the view's column
direction (see ``x2ct.image``), centred on a chosen point. Its view, source
distances and metadata ride along as node attributes (``x2ct.*``), so that
``xray_from_volume_node`` gives back the same record.

Imports ``slicer`` and ``vtk`` but never ``qt``: it runs inside 3D Slicer and
headless on slicer-core.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import slicer
import vtk

from x2ct.errors import InputError
from x2ct.image import Volume, XRay, normalise_view, view_angle

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Node attributes that carry what a volume node cannot hold by itself.
KIND_ATTRIBUTE = "x2ct.kind"
VIEW_ATTRIBUTE = "x2ct.view"
SAD_ATTRIBUTE = "x2ct.sad"
SID_ATTRIBUTE = "x2ct.sid"
METADATA_ATTRIBUTE = "x2ct.metadata"

#: Thickness given to the single slice of an X-ray node (it has no physical depth).
XRAY_SLICE_MM = 1.0


def unique_name(name: str, scene=None) -> str:
    """A node name not used in the scene yet (``name``, else ``name_1``, ``name_2``...)."""
    scene = scene or slicer.mrmlScene
    return scene.GenerateUniqueName(str(name) or "Volume")


def ijk_to_ras(spacing, origin, direction) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of an LPS geometry (spacing and origin in i, j, k / x, y, z order)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) * np.asarray(spacing, dtype=np.float64)
    matrix[:3, 3] = origin
    return LPS_TO_RAS @ matrix


def volume_node_from_volume(volume: Volume, name: str, scene=None):
    """Add a scalar volume node holding ``volume`` (voxels copied) with its geometry; return the node."""
    scene = scene or slicer.mrmlScene
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", unique_name(name, scene))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras(volume.spacing, volume.origin, volume.direction)))
    slicer.util.updateVolumeFromArray(node, _vtk_friendly(volume.array))
    node.CreateDefaultDisplayNodes()
    node.SetAttribute(KIND_ATTRIBUTE, "ct")
    return node


def volume_from_volume_node(node, copy: bool = True) -> Volume:
    """The node's voxels and world geometry as a Volume, through any linear parent transform.

    ``copy=False`` shares the node's voxel buffer (cheap, for checks; valid
    only while the node's image is unchanged).
    """
    array, matrix = _voxels_and_world_matrix(node, copy)
    if min(array.shape) == 1 and node.GetAttribute(KIND_ATTRIBUTE) == "xray":
        raise InputError(f"Node {node.GetName()!r} is an X-ray (one slice); choose a CT volume node instead.")
    spacing, origin, direction = _lps_geometry(matrix)
    return Volume(array, spacing, origin, direction)


def xray_node_from_xray(xray: XRay, name: str, scene=None, center=(0.0, 0.0, 0.0)):
    """Add a one-slice volume node showing ``xray`` as read on a light box; return the node.

    ``center`` is the LPS point (mm) the image centre is placed at, e.g. the
    isocentre of the CT it belongs to. Columns follow the view's column
    direction; an AP image is stored, like the records, in PA display
    orientation (patient's right on the viewer's left).
    """
    scene = scene or slicer.mrmlScene
    rows, cols = xray.shape
    row_mm, col_mm = xray.pixel_spacing
    right, down = _screen_axes(xray.view)
    direction = np.column_stack([right, down, np.cross(right, down)])
    origin = (np.asarray(center, dtype=np.float64)
              - right * col_mm * (cols - 1) / 2.0 - down * row_mm * (rows - 1) / 2.0)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", unique_name(name, scene))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras((col_mm, row_mm, XRAY_SLICE_MM), origin, direction)))
    slicer.util.updateVolumeFromArray(node, _vtk_friendly(xray.image)[np.newaxis])
    node.CreateDefaultDisplayNodes()
    node.SetAttribute(KIND_ATTRIBUTE, "xray")
    node.SetAttribute(VIEW_ATTRIBUTE, str(xray.view))
    for attribute, value in ((SAD_ATTRIBUTE, xray.sad), (SID_ATTRIBUTE, xray.sid)):
        if value is not None:
            node.SetAttribute(attribute, repr(float(value)))
    node.SetAttribute(METADATA_ATTRIBUTE, json.dumps(xray.metadata, default=str))
    return node


def xray_from_volume_node(node, view=None) -> XRay:
    """The X-ray a one-slice volume node shows, as displayed in its Slicer slice view.

    The view comes from ``view``, else the node's ``x2ct.view`` attribute,
    else the slice plane: coronal -> frontal, sagittal -> lateral, axial (a
    plain 2D image loaded into Slicer) -> frontal, assumed. Where it came from
    is recorded in ``metadata["view_source"]``. Rows and columns are arranged
    as the image appears on screen.
    """
    array, matrix = _voxels_and_world_matrix(node, copy=False)  # one slice is copied below
    if not node.GetAttribute(KIND_ATTRIBUTE):  # not made by x2ct: Slicer read it, perhaps from DICOM
        _check_photometric(node)
    k, j, i = array.shape
    if min(array.shape) != 1:
        raise InputError(
            f"Node {node.GetName()!r} is a 3D volume ({i}x{j}x{k} voxels), not an X-ray: choose a radiograph "
            "(a single-slice image), or load the X-ray file with the module's 'Load X-ray' button."
        )
    spacing, _, direction = _lps_geometry(matrix)
    stored_view = node.GetAttribute(VIEW_ATTRIBUTE)
    if stored_view:
        right, down = _screen_axes(stored_view)
        plane_view, source = stored_view, "node attribute"
    else:
        right, down, plane_view, source = _plane_screen_axes(node, direction[:, _slice_axis(array.shape)])
    image, pixel_spacing = _as_displayed(node, array, spacing, direction, right, down)
    metadata = _stored_metadata(node)
    metadata.setdefault("source_node", node.GetName())
    if view is not None:
        metadata["view_source"] = "argument"
    elif stored_view:
        metadata.setdefault("view_source", source)
    else:
        metadata["view_source"] = source
    return XRay(
        image=image,
        pixel_spacing=pixel_spacing,
        view=normalise_view(view if view is not None else plane_view),
        sad=_float_attribute(node, SAD_ATTRIBUTE),
        sid=_float_attribute(node, SID_ATTRIBUTE),
        metadata=metadata,
    )


def xray_for_role(node, role: str):
    """The X-ray of a node; its view is the node's own (``x2ct.view``) or, if it has none, its role."""
    view = None if node.GetAttribute(VIEW_ATTRIBUTE) else role
    return xray_from_volume_node(node, view=view)


# --- helpers -------------------------------------------------------------------------------------


#: Node attribute where Slicer's DICOM module keeps the SOP instance UIDs a volume was loaded from.
DICOM_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
PHOTOMETRIC_TAG = "0028,0004"


def dicom_photometric(node):
    """``(where, PhotometricInterpretation)`` of a node Slicer read from DICOM, else None.

    The DICOM module records the instance UIDs on the node (their values
    come from its database); Add Data leaves the file name on the storage
    node. The interpretation is None when it cannot be read.
    """
    uids = (node.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split()
    if uids:
        database = getattr(slicer, "dicomDatabase", None)
        value = database.instanceValue(uids[0], PHOTOMETRIC_TAG) if database is not None else ""
        return f"DICOM instance {uids[0]}", (str(value).strip() or None)
    storage = node.GetStorageNode()
    path = storage.GetFileName() if storage is not None else None
    if not path:
        return None
    from x2ct.io.files import is_dicom_file

    try:
        if not (os.path.isfile(path) and is_dicom_file(Path(path))):
            return None
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PhotometricInterpretation"])
    except Exception:  # an unreadable header: the interpretation is unknown
        return path, None
    return path, (str(header.get("PhotometricInterpretation", "")).strip() or None)


def _check_photometric(node) -> None:
    """Refuse a DICOM X-ray Slicer read whose grey scale may be inverted (MONOCHROME1, or unknown).

    Slicer's DICOM and Add Data readers do not reliably turn MONOCHROME1
    (bright = air) into MONOCHROME2, so such a node could reach the model
    inverted, silently. The module's Load file reads the file itself.
    """
    source = dicom_photometric(node)
    if source is None or source[1] == "MONOCHROME2":
        return
    where, photometric = source
    reason = (f"is {photometric}, which Slicer may show inverted" if photometric
              else "has a photometric interpretation that cannot be read here")
    raise InputError(f"X-ray {node.GetName()!r} was loaded from DICOM ({where}) and {reason}; load the file with "
                     "the module's Load file button instead, which reads its grey scale correctly.")


def _vtk_friendly(array: np.ndarray) -> np.ndarray:
    """Voxel types VTK renders: bool -> uint8, float16 -> float32, 64-bit integers -> float64."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        return array.astype(np.float64)
    return array


def _voxels_and_world_matrix(node, copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The voxels (k, j, i) and the IJK-to-world (RAS) matrix, parent transforms included."""
    if node is None:
        raise InputError("No volume node given: select one in the module panel or load a file.")
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"Node {node.GetName()!r} is a {node.GetClassName()}, not a scalar volume.")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"Volume node {node.GetName()!r} holds no voxels; load or compute its image first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"Volume node {node.GetName()!r} has {image.GetNumberOfScalarComponents()} components per voxel "
            "(colour or vector image); convert it to a scalar (grayscale) volume first."
        )
    ijk = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk)
    matrix = slicer.util.arrayFromVTKMatrix(ijk)
    transform = node.GetParentTransformNode()
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise InputError(
                f"Volume node {node.GetName()!r} is under a non-linear transform; harden the transform "
                "(Data module: right-click > Harden transform) before using it."
            )
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        matrix = slicer.util.arrayFromVTKMatrix(to_world) @ matrix
    voxels = slicer.util.arrayFromVolume(node)
    return (voxels.copy() if copy else voxels), matrix


def _lps_geometry(ijk_to_ras_matrix: np.ndarray):
    """(spacing, origin, direction) in LPS of an IJK-to-RAS matrix."""
    lps = LPS_TO_RAS @ ijk_to_ras_matrix  # the flip is its own inverse
    columns = lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"The node's IJK-to-RAS matrix has a zero-length axis (spacing {tuple(spacing)}).")
    return tuple(spacing), tuple(lps[:3, 3]), columns / spacing


def _screen_axes(view) -> tuple[np.ndarray, np.ndarray]:
    """LPS unit vectors of screen-right (columns) and screen-down (rows) for a view.

    Columns run along cos(a) * left + sin(a) * posterior at display angle a;
    AP images are kept in PA display orientation, so 'ap' displays at 0.
    """
    view = normalise_view(view)
    angle = 0.0 if view == "ap" else math.radians(view_angle(view))
    right = np.array([math.cos(angle), math.sin(angle), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    return right, down


#: How Slicer's slice views show each plane, by the LPS axis of its normal:
#: (view it suggests, where it came from, screen-right and screen-down in LPS).
_PLANES = {
    1: ("frontal", "coronal plane", (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),  # seen from the front
    0: ("lateral", "sagittal plane", (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),  # anterior on the left
    2: ("frontal", "assumed (axial plane image)", (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # anterior up
}


def _slice_axis(shape) -> int:
    """Index axis (0=i, 1=j, 2=k) of the single slice; k when several axes are one voxel thick."""
    k, j, i = shape
    return 2 if k == 1 else (1 if j == 1 else 0)


def _plane_screen_axes(node, normal: np.ndarray):
    dominant = int(np.argmax(np.abs(normal)))
    if abs(normal[dominant]) < 0.99:
        raise InputError(
            f"Node {node.GetName()!r} is an oblique slice with no x2ct view attribute, so its view is unknown; "
            "reslice it to a coronal or sagittal plane, or load the X-ray file with the module."
        )
    view, source, right, down = _PLANES[dominant]
    return np.array(right), np.array(down), view, source


def _as_displayed(node, array, spacing, direction, right, down):
    """Arrange the slice as (rows = screen down, columns = screen right); return image and pixel spacing."""
    slice_axis = _slice_axis(array.shape)
    a, b = [axis for axis in (0, 1, 2) if axis != slice_axis]
    image = np.take(array, 0, axis=2 - slice_axis)  # numpy axes reverse index axes: rows = b, columns = a
    on_right = [direction[:, axis] @ right for axis in (a, b)]
    on_down = [direction[:, axis] @ down for axis in (a, b)]
    if abs(on_right[0]) >= 0.99 and abs(on_down[1]) >= 0.99:
        column_axis, row_axis, flip_columns, flip_rows = a, b, on_right[0] < 0, on_down[1] < 0
    elif abs(on_right[1]) >= 0.99 and abs(on_down[0]) >= 0.99:
        image = image.T
        column_axis, row_axis, flip_columns, flip_rows = b, a, on_right[1] < 0, on_down[0] < 0
    else:
        raise InputError(
            f"Node {node.GetName()!r} is rotated within its plane, so its rows and columns do not run along the "
            "screen axes; reslice it to an upright image first."
        )
    if flip_columns:
        image = image[:, ::-1]
    if flip_rows:
        image = image[::-1, :]
    return np.ascontiguousarray(image), (spacing[row_axis], spacing[column_axis])


def _stored_metadata(node) -> dict:
    text = node.GetAttribute(METADATA_ATTRIBUTE)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"metadata_unreadable": text}
    return value if isinstance(value, dict) else {"metadata": value}


def _float_attribute(node, attribute: str) -> float | None:
    text = node.GetAttribute(attribute)
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"Node {node.GetName()!r} has a non-numeric {attribute} attribute {text!r}.") from None
