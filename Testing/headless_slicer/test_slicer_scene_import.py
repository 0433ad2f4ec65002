"""A saved scene imported into a scene that already holds nodes: the module's links between nodes still hold.

On import MRML gives the incoming nodes whose IDs are taken new IDs and
updates node references, not attributes. The scene here is cluttered first,
so the saved IDs of the X-rays, CT and outputs belong to other nodes after
the import: a link kept as an ID would now point at the clutter.
"""

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

from X2CTReconstructionLib import compare, outputs  # noqa: E402
from X2CTReconstructionLib import scene as glue  # noqa: E402
from X2CTReconstructionLib.demoscene import save_scene  # noqa: E402
from X2CTReconstructionLib.logic import ReconstructionLogic  # noqa: E402
from X2CTReconstructionLib.outputs import input_nodes  # noqa: E402

from x2ct.image import Volume  # noqa: E402
from x2ct.physics import drr  # noqa: E402

pytestmark = pytest.mark.slicer

INPUTS = ["phantom frontal", "phantom lateral", "phantom back"]


def clutter(scene) -> None:
    """Unrelated nodes that take the IDs the saved scene's nodes had (volumes, tables, an ROI)."""
    tiny = Volume(np.zeros((2, 2, 2), np.float32), (1.0, 1.0, 1.0))
    for index in range(8):
        glue.volume_node_from_volume(tiny, f"clutter volume {index}", scene)
    for index in range(3):
        scene.AddNewNodeByClass("vtkMRMLTableNode", f"clutter table {index}")
    scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "clutter ROI")


def named(scene, name: str):
    nodes = scene.GetNodesByName(name)
    assert nodes.GetNumberOfItems() == 1, f"{nodes.GetNumberOfItems()} nodes named {name!r}"
    return nodes.GetItemAsObject(0)


def test_links_survive_importing_the_scene_into_a_scene_with_clashing_ids(scene, slicer_app, phantom, phantom_xrays,
                                                                         node_counts, tmp_path):
    frontal, lateral = phantom_xrays
    back = glue.xray_node_from_xray(drr(phantom, 180.0), "phantom back", scene)
    back.RemoveAttribute(glue.VIEW_ATTRIBUTE)  # a plain image: only the CT's views record knows its angle
    logic = ReconstructionLogic(scene, slicer_app.app_logic)
    ct = logic.reconstruct(frontal, lateral, model="back-projection", device="cpu", extraViews=[(back, 180)])
    truth = glue.volume_node_from_volume(phantom, "phantom truth", scene)
    logic.showOutputs(ct)
    logic.compare(ct, truth)
    saved = {name: named(scene, name).GetID() for name in [*INPUTS, ct.GetName(), truth.GetName()]}
    ct_name = ct.GetName()
    path = tmp_path / "saved.mrb"
    assert save_scene(slicer_app, path)

    scene.Clear(0)
    clutter(scene)
    assert scene.ReadFromMRB(str(path), False), "the saved scene could not be imported"
    for name, old_id in saved.items():  # the import renamed every linked node; the old IDs are clutter's now
        assert named(scene, name).GetID() != old_id
        assert scene.GetNodeByID(old_id).GetName().startswith("clutter"), old_id

    ct, truth = named(scene, ct_name), named(scene, "phantom truth")
    xrays = [named(scene, name) for name in INPUTS]
    assert [node.GetName() for node in input_nodes(ct)] == INPUTS

    before = node_counts(scene)
    made = logic.showOutputs(ct)
    assert node_counts(scene) == before, "showing the imported CT again added nodes"
    for key in ("volumeRendering", "roi", "mipRendering"):
        assert made[key].GetNodeReference(outputs.SOURCE) is ct, key
    check = made["reprojection"]
    assert check["views"] == ["frontal", "lateral", "180.0"], "an X-ray was not paired with its view"
    for drr_node, xray in zip(check["drrs"], xrays):
        assert drr_node.GetNodeReference(outputs.DRR_INPUT) is xray
        assert drr_node.GetNodeReference(outputs.SOURCE) is ct

    table = outputs.linked_node(scene, "vtkMRMLTableNode", ct, "metrics", **{outputs.GROUND_TRUTH: truth})
    assert table is not None, "the imported metrics table lost its CT or ground truth"
    aligned, difference = (table.GetNodeReference(role) for role in (outputs.ALIGNED_GROUND_TRUTH, outputs.DIFFERENCE))
    assert table.GetNodeReference(outputs.PREDICTION) is ct
    assert aligned.GetName() == f"phantom truth on {ct_name} grid"
    assert difference.GetName() == f"{ct_name} - phantom truth (HU)"
    again = logic.compare(ct, truth)
    assert node_counts(scene) == before, "comparing the imported pair again added nodes"
    assert again is table and again.GetNodeReference(outputs.DIFFERENCE) is difference

    scene.RemoveNode(xrays[1])  # later inputs keep their views when one goes
    assert [node.GetName() for node in input_nodes(ct)] == [INPUTS[0], INPUTS[2]]
    assert logic.reprojectionCheck(ct)["views"] == ["frontal", "180.0"]


def test_a_saved_scene_reopens_in_the_module_layout_once_the_module_is_set_up(scene, slicer_app, phantom, tmp_path):
    """A scene file keeps the layout id, never its description (vtkMRMLLayoutNode::WriteXML): a new session
    finds the MIP and compare layouts only because the module registers them at start-up."""
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    ReconstructionLogic(scene, slicer_app.app_logic).showOutputs(ct, reprojection=False)
    assert scene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement() == outputs.MIP_LAYOUT_ID
    path = tmp_path / "saved.mrb"
    assert save_scene(slicer_app, path)

    def reopened(set_up: bool):
        """The saved scene read into an emptied scene with a new layout node (the module set up or not)."""
        scene.Clear(0)
        scene.RemoveNode(scene.GetFirstNodeByClass("vtkMRMLLayoutNode"))  # a singleton: Clear(0) keeps it
        layout = outputs.layout_node(scene)  # a new one, made as Slicer's layout logic makes it
        assert layout.GetViewArrangement() != outputs.MIP_LAYOUT_ID
        if set_up:
            outputs.register_layouts(layout)  # what the module's startupCompleted handler does
        assert scene.ReadFromMRB(str(path), False)
        assert scene.GetFirstNodeByClass("vtkMRMLLayoutNode") is layout
        return layout

    bare = reopened(set_up=False)
    assert bare.GetViewArrangement() == outputs.MIP_LAYOUT_ID and not bare.IsLayoutDescription(outputs.MIP_LAYOUT_ID)
    layout = reopened(set_up=True)
    assert layout.GetViewArrangement() == outputs.MIP_LAYOUT_ID
    assert layout.GetLayoutDescription(outputs.MIP_LAYOUT_ID) == outputs.mip_layout_xml()
    assert layout.IsLayoutDescription(compare.COMPARE_LAYOUT_ID)


def test_the_module_registers_its_layouts_when_slicer_has_started():
    """The module connects its start-up handler, which registers the layouts on Slicer's layout node (and the
    Sample Data buttons, followed by a timer)."""
    import ast
    from pathlib import Path

    source = (Path(__file__).resolve().parents[2] / "X2CTReconstruction" / "X2CTReconstruction.py").read_text()
    tree = ast.parse(source)
    (handler,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "onStartupCompleted"]
    assert "outputs.register_layouts(layoutManager.layoutLogic().GetLayoutNode())" in ast.unparse(handler)
    assert "follow=pollInBackground" in ast.unparse(handler), "Sample Data buttons must not wait for their fetch"
    assert 'slicer.app.connect("startupCompleted()", onStartupCompleted)' in source
