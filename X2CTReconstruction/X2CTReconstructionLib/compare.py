"""Show a comparison of a reconstructed CT with a ground-truth CT: difference display, metrics table, layout.

The comparison itself (ground truth resampled with the centres aligned, the
difference, every metric convention) is ``x2ct.metrics.alignment.compare_centred``,
the same as ``x2ct evaluate --align-centres``; this module puts it in the scene.
"""

from __future__ import annotations

import numpy as np
import slicer

from x2ct.errors import InputError
from x2ct.image import Volume
from x2ct.metrics.alignment import ALIGNMENT, SECTION_DEFINITIONS, compare_centred
from X2CTReconstructionLib import outputs
from X2CTReconstructionLib import scene as scene_glue
#: The difference volume's window is centred on 0 HU and reaches this percentile of |difference| either side,
#: at least DIFFERENCE_MIN_HALF_WIDTH HU: a few outliers do not wash out the colours.
DIFFERENCE_PERCENTILE = 99.0
DIFFERENCE_MIN_HALF_WIDTH = 50.0
#: Diverging colour map of the difference volume: Slicer's (3D Slicer loads it from its colour files), else
#: an equivalent blue-white-red table made once per scene under FALLBACK_COLOURS (slicer-core lacks the file).
DIVERGING_COLOURS = "DivergingBlueRed"
FALLBACK_COLOURS = "X2CT DivergingBlueRed"
#: Custom layout: prediction in the top row (Red, Yellow, Green), ground truth below, slice views linked.
COMPARE_LAYOUT_ID = 7301
GT_VIEWS = {"X2CTGroundTruthAxial": ("Axial", "#F34A33"), "X2CTGroundTruthSagittal": ("Sagittal", "#EDD54C"),
            "X2CTGroundTruthCoronal": ("Coronal", "#6EB04B")}
PREDICTION_VIEWS = {"Red": ("Axial", "#F34A33"), "Yellow": ("Sagittal", "#EDD54C"),
                    "Green": ("Coronal", "#6EB04B")}


def metric_rows(metrics: dict) -> list[tuple[str, str, float]]:
    """(convention, metric, value) rows of an ``evaluate`` result, nested keys joined with '/'."""
    rows = []

    def walk(convention: str, prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(convention, f"{prefix}/{key}" if prefix else key, item)
        else:
            rows.append((convention, prefix, float(value)))

    for convention, section in metrics.items():
        walk(convention, "", section)
    return rows


def fill_table(table, metrics: dict) -> None:
    """Write metric rows into a table node: convention, metric, value (a number column), definition."""
    import vtk

    rows = metric_rows(metrics)
    columns = [vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkDoubleArray(), vtk.vtkStringArray()]
    for column, name in zip(columns, ("Convention", "Metric", "Value", "Definition")):
        column.SetName(name)
    for convention, metric, value in rows:
        columns[0].InsertNextValue(convention)
        columns[1].InsertNextValue(metric)
        columns[2].InsertNextValue(value)
        columns[3].InsertNextValue(SECTION_DEFINITIONS.get(convention, ""))
    table.RemoveAllColumns()
    for column in columns:
        table.AddColumn(column)


def table_values(table) -> dict[tuple[str, str], float]:
    """{(convention, metric): value} read back from a metrics table node (values as stored, full precision)."""
    values = table.GetTable().GetColumnByName("Value")
    return {(table.GetCellText(r, 0), table.GetCellText(r, 1)): values.GetValue(r)
            for r in range(table.GetNumberOfRows())}


def difference_window(difference: Volume) -> tuple[float, float]:
    """(level, width) in HU: symmetric about 0, so 0 HU sits at the colour map's neutral middle."""
    magnitudes = np.abs(np.asarray(difference.array, np.float32))
    half = float(np.percentile(magnitudes, DIFFERENCE_PERCENTILE)) if magnitudes.size else 0.0
    return 0.0, 2.0 * max(half, DIFFERENCE_MIN_HALF_WIDTH)


def diverging_colours(scene):
    """Slicer's DivergingBlueRed colour node, else (headless slicer-core) a blue-white-red table in the scene."""
    for name in (DIVERGING_COLOURS, FALLBACK_COLOURS):
        node = scene.GetFirstNodeByName(name)
        if node is not None and node.IsA("vtkMRMLColorNode"):
            return node
    table = slicer.vtkMRMLColorTableNode()
    table.SetName(FALLBACK_COLOURS)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    for index in range(256):
        t = index / 255.0 * 2.0 - 1.0  # -1 (blue) .. 0 (white) .. 1 (red)
        red, blue = (1.0, 1.0 - t) if t > 0 else (1.0 + t, 1.0)
        table.SetColor(index, f"{t:+.2f}", red, 1.0 - abs(t), blue, 1.0)
    table.SetSaveWithScene(True)
    return scene.AddNode(table)


def show_difference(node, difference: Volume) -> None:
    """Diverging colour map and a window symmetric about 0 HU on the difference volume node."""
    outputs.set_window(node, difference_window(difference))
    node.GetDisplayNode().SetAndObserveColorNodeID(diverging_colours(node.GetScene()).GetID())


def layout_xml() -> str:
    """Slicer layout: two rows of axial / sagittal / coronal slice views, prediction above, ground truth below."""
    def row(views: dict) -> str:
        items = "".join(
            f'<item><view class="vtkMRMLSliceNode" singletontag="{tag}">'
            f'<property name="orientation" action="default">{orientation}</property>'
            f'<property name="viewlabel" action="default">{tag[:1] if tag in PREDICTION_VIEWS else "GT" + orientation[0]}'
            f'</property><property name="viewcolor" action="default">{colour}</property></view></item>'
            for tag, (orientation, colour) in views.items())
        return f'<item><layout type="horizontal">{items}</layout></item>'

    return f'<layout type="vertical">{row(PREDICTION_VIEWS)}{row(GT_VIEWS)}</layout>'


def show_side_by_side(scene, prediction, ground_truth) -> dict:
    """Switch to the compare layout and show prediction (top row) and ground truth (bottom row), linked.

    Returns the slice composite nodes by view name. Slice views the layout
    has not created yet (e.g. headless) are created here with their
    composite nodes; Slicer's layout manager then uses the same nodes.
    """
    outputs.switch_layout(scene, COMPARE_LAYOUT_ID)
    composites = {}
    for views, volume in ((PREDICTION_VIEWS, prediction), (GT_VIEWS, ground_truth)):
        for tag, (orientation, _) in views.items():
            composite = _composite_node(scene, tag, orientation)
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetLinkedControl(True)
            composites[tag] = composite
    return composites


def _composite_node(scene, tag: str, orientation: str):
    """The slice composite node of slice view ``tag``, creating the slice view's nodes if needed."""
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
        if composite.GetLayoutName() == tag:
            return composite
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLScene(scene)
    slice_node = logic.AddSliceNode(tag)
    slice_node.SetOrientation(orientation)
    composite = logic.GetSliceCompositeNode()
    logic.SetMRMLScene(None)
    return composite


def compare_nodes(predictedNode, groundTruthNode):
    """Score a reconstruction node against a ground-truth CT node in the scene; the metrics table node.

    ``x2ct.metrics.alignment.compare_centred`` runs before any node is
    added; then the aligned ground truth, the difference volume and the table
    are added (or, for a pair compared before, refilled) and the compare
    layout shows prediction above, ground truth below.
    """
    for node, role in ((predictedNode, "Prediction"), (groundTruthNode, "Ground truth")):
        if node is None:
            raise InputError(f"{role}: select a CT volume node.")
        if not outputs.in_scene(node, predictedNode.GetScene()):
            raise InputError(f"{role}: node {node.GetName()!r} is no longer in the scene; load or select it again.")
    prediction = _checked_volume(predictedNode, "Prediction")
    truth = _checked_volume(groundTruthNode, "Ground truth")
    aligned, difference, metrics = compare_centred(prediction, truth)  # before any node is added
    scene = predictedNode.GetScene()
    pair = {outputs.GROUND_TRUTH: groundTruthNode}
    aligned_node = _compare_output(scene, aligned, predictedNode, "aligned-ground-truth", pair,
                                   f"{groundTruthNode.GetName()} on {predictedNode.GetName()} grid")
    outputs.set_window(aligned_node, outputs.CT_WINDOW)
    difference_node = _compare_output(scene, difference, predictedNode, "difference", pair,
                                      f"{predictedNode.GetName()} - {groundTruthNode.GetName()} (HU)")
    show_difference(difference_node, difference)
    table = outputs.linked_node(scene, "vtkMRMLTableNode", predictedNode, "metrics", **pair)
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene_glue.unique_name(
            f"{predictedNode.GetName()} vs {groundTruthNode.GetName()} metrics", scene))
        outputs.link(table, predictedNode, "metrics", **pair)
    fill_table(table, metrics)
    for role, node in ((outputs.PREDICTION, predictedNode), (outputs.ALIGNED_GROUND_TRUTH, aligned_node),
                       (outputs.DIFFERENCE, difference_node)):
        table.SetNodeReferenceID(role, node.GetID())
    table.SetAttribute("X2CT.Alignment", ALIGNMENT)
    for node in (aligned_node, difference_node, table):
        outputs.place_in_study(node, predictedNode)
    show_side_by_side(scene, predictedNode, aligned_node)
    return table


def _compare_output(scene, volume, predictedNode, role: str, pair: dict, name: str):
    """The volume node ``role`` of an earlier compare of the same pair, filled with ``volume``, else a new one."""
    node = outputs.linked_node(scene, "vtkMRMLScalarVolumeNode", predictedNode, role, **pair)
    if node is None:
        node = scene_glue.volume_node_from_volume(volume, name, scene)
        outputs.link(node, predictedNode, role, **pair)
    else:
        outputs.fill_volume_node(node, volume)
    return node


def _checked_volume(node, role: str):
    try:
        return scene_glue.volume_from_volume_node(node).check_finite()
    except InputError as error:
        raise InputError(f"{role}: {error}") from None
