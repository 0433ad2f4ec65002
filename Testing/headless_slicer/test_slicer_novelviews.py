"""Novel views in Slicer (X2CTReconstructionLib.novelviews): stereo anaglyph and the predicted lateral."""

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

import slicer  # noqa: E402
from X2CTReconstructionLib import novelviews, outputs  # noqa: E402
from X2CTReconstructionLib import scene as glue  # noqa: E402

from x2ct.physics import drr  # noqa: E402

pytestmark = pytest.mark.slicer


def test_anaglyph_uses_slicers_stereo_mode_in_the_3d_view(scene, phantom):
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    view = outputs.three_d_view(scene)
    assert view is not None and view.GetStereoType() == slicer.vtkMRMLViewNode.NoStereo
    assert novelviews.show_anaglyph(ct) is view
    assert view.GetStereoType() == slicer.vtkMRMLViewNode.Anaglyph


def test_anaglyph_image_node_without_stereo(scene, phantom):
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    node = novelviews.anaglyph_image_node(ct)
    pixels = slicer.util.arrayFromVolume(node)
    assert node.IsA("vtkMRMLVectorVolumeNode") and pixels.ndim == 4 and pixels.shape[0] == 1 and pixels.shape[3] == 3
    red, green, blue = pixels[0, ..., 0], pixels[0, ..., 1], pixels[0, ..., 2]
    assert np.array_equal(green, blue) and not np.array_equal(red, green) and red.max() > 0


def test_lateral_predicted_is_the_lateral_drr(scene, phantom):
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    node = novelviews.lateral_node(ct)
    xray = glue.xray_from_volume_node(node)
    assert xray.view == "lateral"
    np.testing.assert_allclose(xray.image, drr(phantom, "lateral").image, rtol=1e-5, atol=1e-5)
