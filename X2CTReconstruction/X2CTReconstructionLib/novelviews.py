"""Novel views of a reconstruction in Slicer: red-cyan stereo and the lateral predicted from a PA film.

Stereo uses Slicer's own anaglyph mode (``vtkMRMLViewNode.Anaglyph``, red =
left eye) in the main 3D view, which volume-renders the reconstruction, with
the camera looking from the front as a PA film is read. Where the scene has
no 3D view (or this Slicer has no anaglyph mode) the core's DRR anaglyph
(``x2ct.novelviews``) is added as a 2D colour image node instead.

Imports ``slicer`` but never ``qt``: it runs inside 3D Slicer and headless.
"""

from __future__ import annotations

import numpy as np
import slicer

from x2ct import novelviews
from X2CTReconstructionLib import outputs
from X2CTReconstructionLib import scene as scene_glue


def show_anaglyph(ct_node, half_angle: float = novelviews.STEREO_HALF_ANGLE):
    """Red-cyan stereo of ``ct_node`` seen from the front; return the 3D view node or the 2D image node used."""
    scene = ct_node.GetScene()
    view = outputs.three_d_view(scene)
    if view is not None and hasattr(slicer.vtkMRMLViewNode, "Anaglyph"):
        view.SetStereoType(slicer.vtkMRMLViewNode.Anaglyph)
        for camera in (scene.GetNthNodeByClass(n, "vtkMRMLCameraNode")
                       for n in range(scene.GetNumberOfNodesByClass("vtkMRMLCameraNode"))):
            if camera.GetLayoutName() == view.GetLayoutName():
                camera.RotateTo(slicer.vtkMRMLCameraNode.Anterior)
        return view
    return anaglyph_image_node(ct_node, half_angle)


def anaglyph_image_node(ct_node, half_angle: float = novelviews.STEREO_HALF_ANGLE):
    """The core's DRR anaglyph of ``ct_node`` as an RGB image node (one slice, square pixels)."""
    volume = scene_glue.volume_from_volume_node(ct_node)
    left, _ = novelviews.stereo_pair(volume, "frontal", half_angle)
    pixels = np.asarray(novelviews.stereo_anaglyph(volume, "frontal", half_angle))
    scene = ct_node.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", scene_glue.unique_name(f"{ct_node.GetName()} anaglyph",
                                                                                       scene))
    pixel_mm = left.pixel_spacing[1]
    node.SetSpacing(pixel_mm, pixel_mm, scene_glue.XRAY_SLICE_MM)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(pixels[np.newaxis]))
    node.CreateDefaultDisplayNodes()
    node.SetAttribute(scene_glue.KIND_ATTRIBUTE, "anaglyph")
    return node


def lateral_node(ct_node):
    """The lateral DRR of the reconstruction (the lateral predicted from a PA film) as an X-ray node."""
    volume = scene_glue.volume_from_volume_node(ct_node)
    lateral = novelviews.view_at(volume, 90.0)
    return scene_glue.xray_node_from_xray(lateral, f"{ct_node.GetName()} lateral (predicted)", ct_node.GetScene())
