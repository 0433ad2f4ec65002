"""Outputs of a reconstruction in the scene: window, volume rendering, cut-away, MIPs, re-projection check.

The nodes are checked against numpy on the same voxels, and the offscreen
renders (slice views, 3D view, MIP view, cut-away) against where the
phantom's bone is.
"""

import json
from xml.etree import ElementTree

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

import slicer  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.ndimage import map_coordinates  # noqa: E402
from X2CTReconstructionLib import outputs, render  # noqa: E402
from X2CTReconstructionLib import scene as glue  # noqa: E402
from X2CTReconstructionLib.logic import ReconstructionLogic  # noqa: E402

from x2ct.image import to_canonical  # noqa: E402

pytestmark = pytest.mark.slicer

def ras_bounds(node) -> np.ndarray:
    bounds = np.zeros(6)
    node.GetRASBounds(bounds)
    return bounds


def test_outputs_of_a_reconstruction(scene, slicer_app, offscreen_views, phantom_xrays):
    frontal, lateral = phantom_xrays
    logic = ReconstructionLogic(scene, slicer_app.app_logic)
    ct = logic.reconstruct(frontal, lateral, device="cpu")
    made = logic.showOutputs(ct)

    display = ct.GetDisplayNode()
    assert (display.GetLevel(), display.GetWindow()) == outputs.CT_WINDOW
    for name in render.SLICE_VIEWS:
        assert offscreen_views.views[name].get_background_volume_id() == ct.GetID()

    rendering = made["volumeRendering"]
    main_view = offscreen_views.views[render.THREE_D_VIEW].get_view_node()
    assert rendering.GetVisibility() and rendering.GetViewNodeIDs() == (main_view.GetID(),)
    roi = made["roi"]
    assert rendering.GetROINodeID() == roi.GetID() and rendering.GetCroppingEnabled()
    assert roi.IsA("vtkMRMLMarkupsROINode") and roi.GetDisplayNode().GetHandlesInteractive()
    assert mip_view_id_not_in(roi, made["mipView"]), "the ROI box must not cover the MIP view"
    ct_bounds, centre = ras_bounds(ct), np.zeros(3)
    roi.GetCenter(centre)
    size = np.array(roi.GetSize())
    assert centre[1] + size[1] / 2 == pytest.approx((ct_bounds[2] + ct_bounds[3]) / 2), "ROI ends at the middle (A)"
    assert centre[1] - size[1] / 2 == pytest.approx(ct_bounds[2]), "ROI keeps the posterior half"

    mip_view = made["mipView"]
    assert mip_view.GetRaycastTechnique() == slicer.vtkMRMLViewNode.MaximumIntensityProjection
    assert made["mipRendering"].GetViewNodeIDs() == (mip_view.GetID(),)
    assert main_view.GetRaycastTechnique() != slicer.vtkMRMLViewNode.MaximumIntensityProjection

    canonical = to_canonical(glue.volume_from_volume_node(ct))
    for name, axis in outputs.MIP_AXES.items():
        node = made["mips"][name]
        assert node.GetName() == f"{ct.GetName()} MIP {name}"
        mip = to_canonical(glue.volume_from_volume_node(node))
        np.testing.assert_allclose(mip.array, canonical.array.max(axis=axis, keepdims=True))
        mip_bounds, expected = ras_bounds(node), ras_bounds(ct)
        collapsed = {0: 2, 1: 1, 2: 0}[axis]  # canonical axis 0 = S (RAS z), 1 = A (y), 2 = L (x)
        for ras in range(3):
            if ras == collapsed:
                assert np.mean(mip_bounds[2 * ras: 2 * ras + 2]) == pytest.approx(np.mean(expected[2 * ras: 2 * ras + 2]))
            else:
                assert mip_bounds[2 * ras: 2 * ras + 2] == pytest.approx(expected[2 * ras: 2 * ras + 2])

    check = made["reprojection"]
    assert check["views"] == ["frontal", "lateral"] and len(check["drrs"]) == 2
    assert all(0.5 < ncc <= 1.0 for ncc in check["ncc"]), check["ncc"]
    assert json.loads(ct.GetAttribute(outputs.REPROJECTION_NCC)) == pytest.approx(dict(zip(check["views"], check["ncc"])))
    frontal_drr, lateral_drr = check["drrs"]
    assert float(frontal_drr.GetAttribute("X2CT.NCC")) == pytest.approx(check["ncc"][0])
    # screen right is the patient's left (R decreasing) in the frontal view, posterior in the lateral one
    assert ras_bounds(frontal_drr)[1] < ras_bounds(frontal)[0], "the frontal DRR is not on the input's screen right"
    assert ras_bounds(lateral_drr)[3] < ras_bounds(lateral)[2], "the lateral DRR is not on the input's screen right"


def mip_view_id_not_in(roi, view) -> bool:
    ids = roi.GetDisplayNode().GetViewNodeIDs()
    return bool(ids) and view.GetID() not in ids


def expected_hu(view, node) -> np.ndarray:
    """HU each pixel of a slice view should show, from the node's voxels and the view's XYToRAS."""
    rows, columns = view.render_window().GetSize()[::-1]
    xy_to_ras = slicer.util.arrayFromVTKMatrix(view.get_view_node().GetXYToRAS())
    y, x = np.mgrid[rows - 1:-1:-1, 0:columns]
    ras = xy_to_ras @ np.stack([x.ravel(), y.ravel(), np.zeros(x.size), np.ones(x.size)])
    ras_to_ijk = np.linalg.inv(slicer.util.arrayFromVTKMatrix(_ijk_to_ras(node)))
    ijk = (ras_to_ijk @ ras)[:3]
    values = map_coordinates(slicer.util.arrayFromVolume(node), ijk[::-1], order=0, mode="constant", cval=np.nan)
    return values.reshape(rows, columns)


def _ijk_to_ras(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def test_renders_show_bone_cut_away_and_mip(scene, slicer_app, offscreen_views, tmp_path, phantom):
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    made = ReconstructionLogic(scene, slicer_app.app_logic).showOutputs(ct, reprojection=False)
    for view in offscreen_views.views.values():
        view.reset_view()

    paths = offscreen_views.save(tmp_path, prefix="slices-", names=list(render.SLICE_VIEWS))
    low = outputs.CT_WINDOW[0] - outputs.CT_WINDOW[1] / 2
    for name in render.SLICE_VIEWS:
        shown = np.asarray(Image.open(paths[name]).convert("L"), dtype=np.float64)
        hu = expected_hu(offscreen_views.views[name], ct)
        assert np.isfinite(hu).mean() > 0.3, f"{name}: the CT covers too little of the view"
        air, tissue, bone = hu < -500, np.abs(hu) < 50, hu > 500
        assert np.median(shown[air]) < 5, f"{name}: air is not dark"  # medians: the ROI outline crosses the view
        expected_tissue = (0 - low) / outputs.CT_WINDOW[1] * 255
        assert abs(np.median(shown[tissue]) - expected_tissue) < 10, f"{name}: soft tissue not at the window's grey"
        if bone.sum() > 10:
            assert np.median(shown[bone]) > 240, f"{name}: bone is not bright"
    assert (expected_hu(offscreen_views.views["Red"], ct) > 500).sum() > 10, "the axial view shows no bone"

    # the ROI box itself is left out of the 3D pictures: headless (Mesa) it renders as a textured box
    made["roi"].GetDisplayNode().SetVisibility(False)
    three_d = render.THREE_D_VIEW
    cut = offscreen_views.capture(three_d).astype(np.float64)
    made["volumeRendering"].SetCroppingEnabled(False)
    full = offscreen_views.capture(three_d).astype(np.float64)
    made["volumeRendering"].SetCroppingEnabled(True)
    Image.fromarray(cut.astype(np.uint8)).save(tmp_path / "cut-away.png")
    Image.fromarray(full.astype(np.uint8)).save(tmp_path / "full.png")
    for image, what in ((full, "full"), (cut, "cut-away")):
        background = np.median(np.concatenate([image[:4].reshape(-1, 3), image[-4:].reshape(-1, 3)]), axis=0)
        # the preset shows the phantom's bone (water-density tissue is transparent in it): spine, marker rod
        assert (np.abs(image - background).sum(axis=2) > 60).mean() > 0.01, f"the {what} rendering is empty"
        bone_coloured = (image[..., 0] > 170) & (image[..., 1] > 130) & (image[..., 0] > image[..., 2])
        assert bone_coloured.sum() > 50, f"no bright bone in the {what} rendering"
    assert np.abs(full - cut).mean() > 3, "the cut-away rendering looks like the full one"

    mip = offscreen_views.capture(outputs.MIP_VIEW).astype(np.float64)
    Image.fromarray(mip.astype(np.uint8)).save(tmp_path / "mip.png")
    assert np.abs(mip[..., 0] - mip[..., 2]).max() < 2, "the MIP rendering is not grayscale"
    rows, columns = mip.shape[:2]
    centre = mip[rows // 4: 3 * rows // 4, columns // 4: 3 * columns // 4, 0]
    assert centre.mean() > mip[:8, :, 0].mean() + 40, "the MIP shows no body over the background"
    assert (mip[..., 0] > 230).sum() > 20, "no bright bone in the MIP"
    for png in ("slices-Red.png", "cut-away.png", "full.png", "mip.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_the_mip_view_gets_a_layout_and_is_switched_to(scene, slicer_app, phantom):
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    logic = ReconstructionLogic(scene, slicer_app.app_logic)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None:
        layout.SetViewArrangement(2)  # Slicer's conventional layout
    made = logic.showOutputs(ct, reprojection=False, layout=False)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout is None or layout.GetViewArrangement() != outputs.MIP_LAYOUT_ID, "layout=False switched layout"

    made = logic.showOutputs(ct, reprojection=False)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == outputs.MIP_LAYOUT_ID
    description = layout.GetLayoutDescription(outputs.MIP_LAYOUT_ID)
    element = ElementTree.fromstring(description)  # well-formed XML
    views = {view.get("singletontag"): view.get("class") for view in element.iter("view")}
    assert views == {"1": "vtkMRMLViewNode", outputs.MIP_VIEW: "vtkMRMLViewNode", "Red": "vtkMRMLSliceNode",
                     "Yellow": "vtkMRMLSliceNode", "Green": "vtkMRMLSliceNode"}
    top = element.findall("item")[0]
    assert [v.get("singletontag") for v in top.iter("view")] == ["1", outputs.MIP_VIEW], "3D views not on top"
    mip_view = made["mipView"]
    assert mip_view.GetSingletonTag() == outputs.MIP_VIEW and mip_view.GetLayoutName() == outputs.MIP_VIEW
    assert mip_view.GetRaycastTechnique() == slicer.vtkMRMLViewNode.MaximumIntensityProjection
    assert scene.GetNodesByClass("vtkMRMLLayoutNode").GetNumberOfItems() == 1



def test_show_outputs_twice_updates_the_same_nodes(scene, slicer_app, phantom, phantom_xrays, node_counts):
    frontal, lateral = phantom_xrays
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    outputs.set_inputs(ct, [frontal, lateral])
    logic = ReconstructionLogic(scene, slicer_app.app_logic)
    first = logic.showOutputs(ct)
    after_first = node_counts(scene)
    assert scene.GetNumberOfNodesByClass("vtkMRMLVolumeRenderingDisplayNode") == 2
    assert first["volumeRendering"].GetROINodeID() == first["roi"].GetID()
    assert len(first["reprojection"]["drrs"]) == 2

    slicer.util.updateVolumeFromArray(ct, slicer.util.arrayFromVolume(ct) * 0.5)  # the CT changed meanwhile
    second = logic.showOutputs(ct)
    assert node_counts(scene) == after_first
    for key in ("volumeRendering", "roi", "mipRendering", "mipView"):
        assert second[key].GetID() == first[key].GetID(), key
    for name, node in second["mips"].items():
        assert node.GetID() == first["mips"][name].GetID()
        expected = to_canonical(glue.volume_from_volume_node(ct)).array.max(axis=outputs.MIP_AXES[name], keepdims=True)
        np.testing.assert_allclose(to_canonical(glue.volume_from_volume_node(node)).array, expected)
    assert [n.GetID() for n in second["reprojection"]["drrs"]] == [n.GetID() for n in first["reprojection"]["drrs"]]
    frontal_drr = second["reprojection"]["drrs"][0]
    assert frontal_drr.GetNodeReference(outputs.DRR_INPUT) is frontal
    assert frontal_drr.GetNodeReference(outputs.SOURCE) is ct
    assert glue.xray_from_volume_node(frontal_drr).view == frontal.GetAttribute(glue.VIEW_ATTRIBUTE)
    expected_drr, expected_seen, _ = outputs.reprojection(glue.volume_from_volume_node(ct),
                                                          glue.xray_from_volume_node(frontal))
    np.testing.assert_allclose(glue.xray_from_volume_node(frontal_drr).image, expected_drr.image, rtol=1e-5, atol=1e-6)
    assert [n.GetID() for n in second["reprojection"]["prepared"]] == [
        n.GetID() for n in first["reprojection"]["prepared"]]
    frontal_seen = second["reprojection"]["prepared"][0]
    assert frontal_seen.GetNodeReference(outputs.DRR_INPUT) is frontal
    assert frontal_seen.GetAttribute(glue.KIND_ATTRIBUTE) == "prepared"
    np.testing.assert_allclose(glue.xray_from_volume_node(frontal_seen).image, expected_seen.image, atol=1e-6)
    assert ras_bounds(frontal_seen)[1] < ras_bounds(frontal_drr)[0], "the prepared input is not beside the DRR"
    assert ras_bounds(frontal_drr)[1] < ras_bounds(frontal)[0], "the refilled DRR left its place beside the input"

    other = glue.volume_node_from_volume(phantom, "another CT", scene)
    logic.showOutputs(other, reprojection=False)
    assert node_counts(scene)["vtkMRMLMarkupsROINode"] == 2 * after_first["vtkMRMLMarkupsROINode"], "a new CT, new outputs"
    assert outputs.linked_node(scene, "vtkMRMLMarkupsROINode", other, "cut-away").GetID() != first["roi"].GetID()


def test_the_cut_away_roi_is_shown_and_the_mip_leaves_no_roi_behind(scene, slicer_app, phantom):
    """Slicer's volume-rendering logic makes its own ROI hidden (cropping is off when it makes it): the cut-away
    must be a visible ROI of its own, and the MIP display must not leave another ROI in the scene."""
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    logic = ReconstructionLogic(scene, slicer_app.app_logic)
    for _ in range(2):
        made = logic.showOutputs(ct, reprojection=False)
        rois = [scene.GetNthNodeByClass(n, "vtkMRMLMarkupsROINode")
                for n in range(scene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode"))]
        assert [roi.GetID() for roi in rois] == [made["roi"].GetID()], [roi.GetName() for roi in rois]
        roi = made["roi"]
        assert roi.GetDisplayVisibility() and roi.GetDisplayNode().GetVisibility()
        assert roi.GetDisplayNode().GetHandlesInteractive()
        assert made["volumeRendering"].GetCroppingEnabled()
        assert made["volumeRendering"].GetROINodeID() == roi.GetID()
        assert made["mipRendering"].GetROINodeID() is None


def test_a_volume_rendering_made_by_the_user_is_taken_over(scene, slicer_app, phantom):
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    users = slicer_app.app_logic.GetModuleLogic("VolumeRendering").CreateDefaultVolumeRenderingNodes(ct)
    made = ReconstructionLogic(scene, slicer_app.app_logic).showOutputs(ct, reprojection=False)
    assert made["volumeRendering"].GetID() == users.GetID()
    assert made["mipRendering"].GetID() != users.GetID()
    assert scene.GetNumberOfNodesByClass("vtkMRMLVolumeRenderingDisplayNode") == 2
