"""What a finished reconstruction puts in the scene: the CT node and the ways to look at it.

- the CT node itself: voxels and geometry from the CLI's output file,
  provenance attributes (``X2CT.*``), its place in subject hierarchy;
- displays: a CT window in the slice views, a CT volume-rendering preset in
  the 3D view, a cut-away (the rendering cropped by a markups ROI the user can
  move), a maximum intensity projection rendered in a second 3D view, and the
  frontal / lateral / axial MIPs as one-slice volume nodes;
- the re-projection check: DRRs of the output at the input views' angles,
  made like the training DRRs (X2CT mode), and their NCC with the inputs.

Every node made from a CT references it (node reference role ``x2ctSource``)
and carries ``X2CT.Role``; showing the same CT again finds these nodes and
updates them instead of adding copies. Links between nodes are MRML node
references, never IDs in attributes: importing a saved scene into one that
already holds nodes renames clashing IDs and updates references only.

Imports ``slicer`` and ``vtk``, never ``qt``: runs in 3D Slicer and headless.
"""

from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import slicer

from x2ct.errors import InputError
from x2ct.image import CANONICAL_DIRECTION, Volume, XRay, normalise_view, to_canonical
from x2ct.render import CT_WINDOWS
from X2CTReconstructionLib import scene as scene_glue

#: Provenance attributes set on every reconstructed CT node.
MODEL = "X2CT.Model"
MODEL_SHA256 = "X2CT.ModelSha256"
VIEWS = "X2CT.Views"
GEOMETRY = "X2CT.Geometry"
SOFTWARE = "X2CT.Software"
NOTES = "X2CT.Notes"
DEVICE = "X2CT.Device"
REPROJECTION_NCC = "X2CT.ReprojectionNCC"
#: What a derived node (rendering, ROI, MIP, DRR, compare output) is: with its ``SOURCE`` reference, a second
#: ``showOutputs`` or ``compare`` finds and updates it instead of adding another.
ROLE = "X2CT.Role"

# Node reference roles: when an imported scene's node IDs clash, MRML updates references, not attributes.
SOURCE = "x2ctSource"  # derived node -> the CT it is made from
INPUT = "x2ctInput"  # CT -> its input X-ray of view index i, role "x2ctInput<i>" (index i of the VIEWS record)
DRR_INPUT = "x2ctDRRInput"  # DRR node -> the X-ray it re-projects (a CT has one DRR per input view)
GROUND_TRUTH = "x2ctGroundTruth"  # compare output (aligned truth, difference, table) -> the ground-truth CT
PREDICTION = "x2ctPrediction"  # metrics table -> the prediction it scores
ALIGNED_GROUND_TRUTH = "x2ctAlignedGroundTruth"  # metrics table -> the ground truth on the prediction's grid
DIFFERENCE = "x2ctDifference"  # metrics table -> the difference volume (prediction - ground truth)
UNCERTAINTY_OF = "x2ctUncertaintyOf"  # uncertainty (SD) volume -> the CT whose samples it spreads

#: Display windows (level, width) in HU: soft tissue for the CT, bone for its MIPs (bone dominates a MIP).
CT_WINDOW = CT_WINDOWS["soft-tissue"]
MIP_WINDOW = CT_WINDOWS["bone"]
#: Volume-rendering presets shipped with Slicer.
CT_PRESET = "CT-Chest-Contrast-Enhanced"
MIP_PRESET = "CT-MIP"
#: Layout name (singleton tag) of the 3D view that shows the MIP rendering.
MIP_VIEW = "X2CTMIP"
#: Custom layout: the main 3D view and the MIP view side by side on top, Red / Yellow / Green below.
MIP_LAYOUT_ID = 7302
#: Canonical array axis each MIP collapses (axis 0 S->I, 1 A->P, 2 R->L).
MIP_AXES = {"frontal": 1, "lateral": 2, "axial": 0}
#: Gap (mm) between an input X-ray and its DRR placed beside it.
DRR_GAP_MM = 10.0


# --- the CT node -------------------------------------------------------------------------------------


def fill_volume_node(node, volume: Volume) -> None:
    """Replace an existing scalar volume node's voxels and geometry by ``volume``'s."""
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(
        scene_glue.ijk_to_ras(volume.spacing, volume.origin, volume.direction)))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array, dtype=np.float32))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    node.SetAttribute(scene_glue.KIND_ATTRIBUTE, "ct")


def software_versions() -> dict:
    """Versions of the packages that made the output (x2ct's own; the others from their metadata, not imported).

    x2ct is installed into Slicer as files beside the modules, with no package metadata, so its version is
    ``x2ct.__version__``.
    """
    import x2ct

    versions = {"x2ct": x2ct.__version__}
    for package in ("torch", "monai", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def geometry_record(volume: Volume) -> dict:
    """Shape, spacing, origin and direction (LPS, as the CT file stores them) for the provenance."""
    return {"size_ijk": list(volume.array.shape[::-1]), "spacing_mm": [float(s) for s in volume.spacing],
            "origin_lps_mm": [float(o) for o in volume.origin],
            "direction_lps": [float(d) for d in np.asarray(volume.direction).ravel()]}


def set_provenance(node, model_id: str, sha256: str, views: list[dict], volume: Volume, notes: list[str],
                   device: str, input_nodes=()) -> None:
    """Record how the node was made: model and weights hash, views, geometry, software, notes, input X-rays.

    ``views`` holds one record per node of ``input_nodes``, in the same order.
    """
    node.SetAttribute(MODEL, model_id)
    node.SetAttribute(MODEL_SHA256, sha256)
    node.SetAttribute(VIEWS, json.dumps(views))
    node.SetAttribute(GEOMETRY, json.dumps(geometry_record(volume)))
    node.SetAttribute(SOFTWARE, json.dumps(software_versions()))
    node.SetAttribute(NOTES, json.dumps(list(notes)))
    node.SetAttribute(DEVICE, str(device))
    set_inputs(node, input_nodes)


def set_inputs(node, input_nodes) -> None:
    """Reference the input X-ray nodes, the i-th as role ``x2ctInput<i>`` (earlier inputs are forgotten).

    One role per view index, not one role with several references: MRML
    drops the reference to a removed node, which would shift the later ones.
    """
    for role in _input_roles(node):
        node.RemoveNodeReferenceIDs(role)
    for index, xray in enumerate(input_nodes):
        if in_scene(xray, node.GetScene()):  # one removed while the CT was made: no reference, indices kept
            node.SetNodeReferenceID(f"{INPUT}{index}", xray.GetID())


def in_scene(node, scene) -> bool:
    """Whether ``node`` is still in ``scene`` (a node removed meanwhile keeps its Python object, not its scene)."""
    return node is not None and scene is not None and bool(scene.IsNodePresent(node))


def uncertainty_nodes_of(node, scene) -> list:
    """The uncertainty (SD) volume nodes in ``scene`` that refer to the CT ``node``, oldest first."""
    kind = "vtkMRMLScalarVolumeNode"
    found = [scene.GetNthNodeByClass(i, kind) for i in range(scene.GetNumberOfNodesByClass(kind))]
    return [other for other in found if other.GetNodeReferenceID(UNCERTAINTY_OF) == node.GetID()]


def referenced_inputs(node) -> list[tuple[int, object]]:
    """(view index, X-ray node) of each input of ``node`` still in the scene, by view index."""
    found = []
    for role in _input_roles(node):
        xray = node.GetNodeReference(role)
        if xray is not None:
            found.append((int(role[len(INPUT):]), xray))
    return sorted(found, key=lambda pair: pair[0])


def _input_roles(node) -> list[str]:
    roles: list[str] = []
    node.GetNodeReferenceRoles(roles)
    return [role for role in roles if role.startswith(INPUT) and role[len(INPUT):].isdigit()]


def study_item(node) -> int | None:
    """The subject-hierarchy study item ``node`` lies under (at any depth), or None."""
    if node.GetScene() is None:  # removed from the scene: in no study
        return None
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    item = hierarchy.GetItemByDataNode(node)
    root = hierarchy.GetSceneItemID()
    while item and item != root:
        item = hierarchy.GetItemParent(item)
        if item and item != root and hierarchy.GetItemLevel(item) == "Study":
            return item
    return None


def place_in_study(node, reference) -> int | None:
    """Put ``node`` in the study of ``reference`` in subject hierarchy; create nothing if it has none."""
    study = study_item(reference)
    if study is not None:
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, study)
        else:  # no Qt subject-hierarchy plugins (headless) to have made the item on AddNode
            hierarchy.CreateItem(study, node)
    return study


# --- displays ----------------------------------------------------------------------------------------


def set_window(node, window: tuple[float, float]) -> None:
    """Fixed (level, width) display window in HU."""
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(window[1], window[0])


def show_in_slice_views(node, scene, foreground=None) -> None:
    """``node`` as background of every slice view (``foreground`` optional, half transparent)."""
    for composite in _nodes(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(node.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
            composite.SetForegroundOpacity(0.5)


def volume_rendering(node, logic, preset: str, view_nodes=(), role: str = "rendering"):
    """The volume-rendering display ``role`` of ``node`` with a Slicer preset, shown in ``view_nodes`` (all if empty).

    The display made by an earlier call with the same role is updated; else one of the node's displays
    that no call has claimed (e.g. made in the Volume Rendering module) is taken over; else a new one is made.
    """
    display = linked_node(node.GetScene(), "vtkMRMLVolumeRenderingDisplayNode", node, role)
    if display is None:
        unclaimed = [d for d in (node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes()))
                     if d is not None and d.IsA("vtkMRMLVolumeRenderingDisplayNode") and not d.GetAttribute(ROLE)]
        if unclaimed:
            display = unclaimed[0]
            link(display, node, role)
    if display is None:
        display = logic.CreateVolumeRenderingDisplayNode()
        node.GetScene().AddNode(display)
        display.UnRegister(logic)  # Create... returned a reference of our own; the scene holds the node now
        node.AddAndObserveDisplayNodeID(display.GetID())
        logic.UpdateDisplayNodeFromVolumeNode(display, node, None, None, False)  # no hidden ROI: see cut_away_roi
        link(display, node, role)
    property_node = display.GetVolumePropertyNode()
    if property_node is None:
        property_node = node.GetScene().AddNewNodeByClass("vtkMRMLVolumePropertyNode")
        display.SetAndObserveVolumePropertyNodeID(property_node.GetID())
    property_node.Copy(logic.GetPresetByName(preset))
    display.SetViewNodeIDs([view.GetID() for view in view_nodes])
    display.SetVisibility(True)
    return display


def three_d_view(scene, layout_name: str | None = None):
    """The 3D view node with this layout name (the first 3D view other than the MIP view if None)."""
    for view in _nodes(scene, "vtkMRMLViewNode"):
        if layout_name is None and view.GetLayoutName() != MIP_VIEW or view.GetLayoutName() == layout_name:
            return view
    return None


def mip_view(scene):
    """The 3D view node that shows MIP renderings, created (singleton tag ``X2CTMIP``) if missing."""
    view = three_d_view(scene, MIP_VIEW)
    if view is None:
        view = slicer.vtkMRMLViewNode()
        view.SetSingletonTag(MIP_VIEW)
        view.SetLayoutName(MIP_VIEW)
        view.SetLayoutLabel("MIP")
        view = scene.AddNode(view)
    view.SetRaycastTechnique(slicer.vtkMRMLViewNode.MaximumIntensityProjection)
    return view


def cut_away_roi(node, display, view_nodes=(), name: str | None = None):
    """Crop the volume rendering with a markups ROI that keeps the posterior half: the inside shows from the front.

    The ROI is our own node, shown (outline and handles; in ``view_nodes``, all views if empty) and
    interactive, so the user moves or resizes it. Not the volume-rendering logic's ROI: Slicer
    creates that one hidden while cropping is off and only its module panel shows it again.
    The ROI of an earlier call is reset and reused.
    """
    bounds = np.zeros(6)
    node.GetRASBounds(bounds)
    low, high = bounds[0::2], bounds[1::2]
    high = high.copy()
    high[1] = (low[1] + high[1]) / 2.0  # RAS y: anterior is +; keep y below the centre (posterior half)
    scene = node.GetScene()
    roi = linked_node(scene, "vtkMRMLMarkupsROINode", node, "cut-away")
    if roi is None:
        roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode",
                                      scene_glue.unique_name(name or f"{node.GetName()} cut-away", scene))
        link(roi, node, "cut-away")
    roi.SetCenter(*((low + high) / 2.0))
    roi.SetSize(*(high - low))
    if roi.GetDisplayNode() is None:
        roi.CreateDefaultDisplayNodes()
    roi.GetDisplayNode().SetHandlesInteractive(True)
    roi.GetDisplayNode().SetFillOpacity(0.0)  # outline and handles only: the box must not hide the CT
    roi.GetDisplayNode().SetViewNodeIDs([view.GetID() for view in view_nodes])
    roi.SetDisplayVisibility(True)
    display.SetAndObserveROINodeID(roi.GetID())
    display.SetCroppingEnabled(True)
    return roi


def mip_volumes(volume: Volume) -> dict[str, Volume]:
    """Frontal, lateral and axial maximum intensity projections as one-slice volumes in the CT's frame.

    Each keeps the CT's in-plane geometry; its single slice lies at the
    centre of the collapsed axis, so it shows where the CT is.
    """
    canonical = to_canonical(volume)
    spacing = np.asarray(canonical.spacing)
    mips = {}
    for name, axis in MIP_AXES.items():
        array = canonical.array.max(axis=axis, keepdims=True)
        index_axis = 2 - axis  # numpy axis -> ITK index axis
        half = (canonical.array.shape[axis] - 1) / 2.0
        origin = np.asarray(canonical.origin) + CANONICAL_DIRECTION[:, index_axis] * spacing[index_axis] * half
        mips[name] = Volume(array, tuple(spacing), tuple(origin), CANONICAL_DIRECTION.copy())
    return mips


def mip_nodes(node, volume: Volume) -> dict:
    """The MIPs of ``volume`` (the CT of ``node``) as nodes named ``<ct> MIP frontal`` etc., bone window.

    Nodes made by an earlier call for the same CT are filled again rather than added.
    """
    nodes = {}
    for name, mip in mip_volumes(volume).items():
        mip_node = linked_node(node.GetScene(), "vtkMRMLScalarVolumeNode", node, f"mip-{name}")
        if mip_node is None:
            mip_node = scene_glue.volume_node_from_volume(mip, f"{node.GetName()} MIP {name}", node.GetScene())
            link(mip_node, node, f"mip-{name}")
        else:
            fill_volume_node(mip_node, mip)
        mip_node.SetAttribute(scene_glue.KIND_ATTRIBUTE, "mip")
        set_window(mip_node, MIP_WINDOW)
        nodes[name] = mip_node
    return nodes


# --- re-projection check -----------------------------------------------------------------------------


def reprojection(volume: Volume, xray: XRay) -> tuple[XRay, XRay, float]:
    """The output's DRR at the X-ray's view (X2CT mode), the X-ray prepared as the model saw it
    (``x2ct.io.prepare``: borders, field, intensity), on the DRR's grid, and their NCC."""
    from x2ct.inference import prepare_view
    from x2ct.metrics import reprojection_consistency
    from x2ct.physics import X2CT_SIZE, drr

    rendered = drr(volume, xray.view, mode="x2ct", x2ct_size=X2CT_SIZE)
    seen, _ = prepare_view(xray, X2CT_SIZE)
    prepared = XRay(np.asarray(seen, dtype=np.float32), rendered.pixel_spacing, rendered.view)
    return rendered, prepared, float(reprojection_consistency([seen], [rendered.image])["ncc"])


def reprojection_check(ct_node, xray_nodes=None) -> dict:
    """DRRs of the CT at its input X-rays' views, added beside them, and their NCC (``ReconstructionLogic.reprojectionCheck``).

    Beside each DRR, the input as the network saw it (``prepared``), so a user sees what was cropped, scaled and
    matched."""
    nodes = input_nodes(ct_node) if xray_nodes is None else list(xray_nodes)
    if not nodes:
        raise InputError(f"No X-ray nodes to check {ct_node.GetName()!r} against; select the input X-rays.")
    volume = scene_glue.volume_from_volume_node(ct_node)
    recorded = _recorded_views(ct_node)
    rendered = []
    for node in nodes:
        view = recorded.get(node.GetID())
        xray = (scene_glue.xray_for_role(node, "frontal") if view is None
                else scene_glue.xray_from_volume_node(node, view=normalise_view(view)))
        rendered.append((node, xray.view, *reprojection(volume, xray)))
    result = {"drrs": [], "prepared": [], "ncc": [], "views": []}
    for node, view, drr, prepared, ncc in rendered:
        of_input = {DRR_INPUT: node}
        earlier = linked_node(ct_node.GetScene(), "vtkMRMLScalarVolumeNode", ct_node, "drr", **of_input)
        drr_node = drr_node_beside(drr, node, f"{ct_node.GetName()} DRR {view}", existing=earlier)
        link(drr_node, ct_node, "drr", **of_input)
        drr_node.SetAttribute("X2CT.NCC", repr(ncc))
        earlier = linked_node(ct_node.GetScene(), "vtkMRMLScalarVolumeNode", ct_node, "prepared", **of_input)
        prepared_node = drr_node_beside(prepared, drr_node, f"{ct_node.GetName()} prepared input {view}",
                                        existing=earlier)  # what the network saw, beside the DRR it is compared with
        prepared_node.SetAttribute(scene_glue.KIND_ATTRIBUTE, "prepared")
        link(prepared_node, ct_node, "prepared", **of_input)
        result["drrs"].append(drr_node)
        result["prepared"].append(prepared_node)
        result["ncc"].append(ncc)
        result["views"].append(str(view))
    ct_node.SetAttribute(REPROJECTION_NCC, json.dumps(dict(zip(result["views"], result["ncc"]))))
    return result


def input_nodes(ct_node) -> list:
    """The X-ray nodes a CT node was reconstructed from that are still in the scene, in view order."""
    return [node for _, node in referenced_inputs(ct_node)]


def _recorded_views(ct_node) -> dict:
    """Current ID of each input X-ray still in the scene -> the view it was given (its ``X2CT.Views`` entry)."""
    records = _views_record(ct_node)
    return {node.GetID(): records[index].get("view") for index, node in referenced_inputs(ct_node)
            if index < len(records) and isinstance(records[index], dict)}


def _views_record(ct_node) -> list:
    try:
        records = json.loads(ct_node.GetAttribute(VIEWS) or "[]")
    except json.JSONDecodeError:
        return []
    return records if isinstance(records, list) else []


def drr_node_beside(rendered: XRay, xray_node, name: str, existing=None):
    """The DRR as an X-ray node placed beside ``xray_node`` (to its screen right, same plane).

    ``existing`` (a DRR node of an earlier check) is filled with the new DRR instead of adding a node.
    """
    bounds = np.zeros(6)
    xray_node.GetRASBounds(bounds)
    centre_lps = np.array([-(bounds[0] + bounds[1]) / 2.0, -(bounds[2] + bounds[3]) / 2.0,
                           (bounds[4] + bounds[5]) / 2.0])
    right, _ = scene_glue._screen_axes(rendered.view)
    input_width = abs(np.array([bounds[1] - bounds[0], bounds[3] - bounds[2], bounds[5] - bounds[4]]) @ np.abs(right))
    drr_width = rendered.shape[1] * rendered.pixel_spacing[1]
    centre = centre_lps + right * ((input_width + drr_width) / 2.0 + DRR_GAP_MM)
    if existing is None:
        node = scene_glue.xray_node_from_xray(rendered, name, xray_node.GetScene(), center=centre)
    else:
        node = existing
        _refill_xray_node(node, rendered, centre)
    node.SetAttribute(scene_glue.KIND_ATTRIBUTE, "drr")
    return node


def _refill_xray_node(node, xray: XRay, centre) -> None:
    """Give an existing X-ray node the voxels, placement and X-ray attributes of ``xray``.

    The node is built by ``scene.xray_node_from_xray`` in a scratch scene and
    copied over, so the placement rules live in one place.
    """
    import vtk

    fresh = scene_glue.xray_node_from_xray(xray, node.GetName(), slicer.vtkMRMLScene(), center=centre)
    matrix = vtk.vtkMatrix4x4()
    fresh.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    image = vtk.vtkImageData()
    image.DeepCopy(fresh.GetImageData())
    node.SetAndObserveImageData(image)
    for attribute in fresh.GetAttributeNames() or ():
        node.SetAttribute(attribute, fresh.GetAttribute(attribute))


# --- layouts and links -------------------------------------------------------------------------------


def mip_layout_xml() -> str:
    """Slicer layout: main 3D view and MIP 3D view side by side on top, Red / Yellow / Green slice views below."""
    def slice_view(tag: str, orientation: str, colour: str) -> str:
        return (f'<item><view class="vtkMRMLSliceNode" singletontag="{tag}">'
                f'<property name="orientation" action="default">{orientation}</property>'
                f'<property name="viewlabel" action="default">{tag[0]}</property>'
                f'<property name="viewcolor" action="default">{colour}</property></view></item>')

    top = ('<item><layout type="horizontal">'
           '<item><view class="vtkMRMLViewNode" singletontag="1">'
           '<property name="viewlabel" action="default">1</property></view></item>'
           f'<item><view class="vtkMRMLViewNode" singletontag="{MIP_VIEW}">'
           '<property name="viewlabel" action="default">MIP</property></view></item>'
           '</layout></item>')
    bottom = ('<item><layout type="horizontal">' + slice_view("Red", "Axial", "#F34A33")
              + slice_view("Yellow", "Sagittal", "#EDD54C") + slice_view("Green", "Coronal", "#6EB04B")
              + '</layout></item>')
    return f'<layout type="vertical" split="true">{top}{bottom}</layout>'


def layouts() -> dict[int, str]:
    """The module's custom layouts by id: the MIP layout and the compare layout."""
    from X2CTReconstructionLib import compare

    return {MIP_LAYOUT_ID: mip_layout_xml(), compare.COMPARE_LAYOUT_ID: compare.layout_xml()}


def register_layouts(layout=None):
    """Add (or update) the module's layout descriptions on a layout node (the scene's if None); return it.

    Called when the module is set up (at Slicer start-up) and again when the
    scene ends closing or importing. A scene file stores only the layout id,
    never its description (``vtkMRMLLayoutNode::WriteXML``), so a saved scene
    shown in one of these layouts reopens with them only because they are
    registered before it is read.
    """
    layout = layout or layout_node(slicer.mrmlScene)
    for layout_id, xml in layouts().items():
        if layout.IsLayoutDescription(layout_id):
            layout.SetLayoutDescription(layout_id, xml)
        else:
            layout.AddLayoutDescription(layout_id, xml)
    return layout


def layout_node(scene):
    """The scene's layout node; headless, where no layout logic made one, one made as Slicer's is (a singleton)."""
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is None:
        layout = slicer.vtkMRMLLayoutNode()
        layout.SetSingletonTag("vtkMRMLLayoutNode")  # as vtkMRMLLayoutLogic does: a scene read in merges into it
        layout = scene.AddNode(layout)
    return layout


def switch_layout(scene, layout_id: int):
    """Switch the scene's layout node to one of the module's layouts (registering them first)."""
    layout = register_layouts(layout_node(scene))
    layout.SetViewArrangement(layout_id)
    return layout


def link(node, source, role: str, **references) -> None:
    """Mark ``node`` as the ``role`` output made from ``source`` (see ``linked_node``).

    ``references`` maps more reference roles to nodes (e.g. ``{DRR_INPUT: xray}``).
    """
    node.SetNodeReferenceID(SOURCE, source.GetID())
    node.SetAttribute(ROLE, role)
    for reference_role, target in references.items():
        node.SetNodeReferenceID(reference_role, target.GetID())


def linked_node(scene, class_name: str, source, role: str, **references):
    """The node of ``class_name`` marked by ``link`` as the ``role`` output of ``source`` (None if none).

    ``references`` (reference role -> node) must match too, by the nodes' current IDs.
    """
    wanted = {SOURCE: source, **references}
    for node in _nodes(scene, class_name):
        if node.GetAttribute(ROLE) == role and all(
                node.GetNodeReferenceID(reference_role) == target.GetID() for reference_role, target in wanted.items()):
            return node
    return None


def slice_view_nodes(scene) -> list:
    """Every slice view node of the scene."""
    return _nodes(scene, "vtkMRMLSliceNode")


def _nodes(scene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(n, class_name) for n in range(scene.GetNumberOfNodesByClass(class_name))]

