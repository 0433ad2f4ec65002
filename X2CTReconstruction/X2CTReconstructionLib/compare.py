"""Compare a reconstructed CT with a ground-truth CT: aligned GT, difference volume, metrics table, layout.

The ground truth is resampled onto the prediction's grid (SimpleITK, linear,
-1000 HU outside) with the two volumes' centres made to coincide: a CT
reconstructed from radiographs is centred on the X-rays' isocentre and knows
nothing of the scanner's coordinates, and the models' protocols crop the
training CTs about their centre. Metrics are ``x2ct.metrics.evaluate_volumes``
on exactly those two volumes (every convention, lung Dice included).
"""

from __future__ import annotations

import numpy as np
import slicer

from x2ct.image import Volume, volume_from_sitk, volume_to_sitk
from x2ct.metrics import CONVENTIONS, evaluate_volumes
from X2CTReconstructionLib import outputs

#: HU given to ground-truth voxels outside its field.
OUTSIDE_HU = -1000.0
#: How the ground truth is placed on the prediction's grid (recorded on the metrics table).
ALIGNMENT = "ground truth resampled onto the prediction grid (linear), volume centres aligned"
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


def centre(volume: Volume) -> np.ndarray:
    """Physical (LPS) centre of a volume's voxel grid."""
    half = (np.asarray(volume.array.shape[::-1]) - 1) / 2.0 * np.asarray(volume.spacing)
    return np.asarray(volume.origin) + np.asarray(volume.direction) @ half


def resample_centred(gt: Volume, reference: Volume) -> Volume:
    """``gt`` resampled onto ``reference``'s grid, the centres made to coincide (see module docstring)."""
    import SimpleITK as sitk

    shift = sitk.TranslationTransform(3, tuple(float(v) for v in centre(gt) - centre(reference)))
    reference_image = volume_to_sitk(reference.with_array(np.zeros(reference.array.shape, np.float32)))
    image = sitk.Cast(volume_to_sitk(gt), sitk.sitkFloat32)
    resampled = sitk.Resample(image, reference_image, shift, sitk.sitkLinear, OUTSIDE_HU, sitk.sitkFloat32)
    return volume_from_sitk(resampled)


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
        columns[3].InsertNextValue(CONVENTIONS.get(convention, ""))
    table.RemoveAllColumns()
    for column in columns:
        table.AddColumn(column)


def table_values(table) -> dict[tuple[str, str], float]:
    """{(convention, metric): value} read back from a metrics table node (values as stored, full precision)."""
    values = table.GetTable().GetColumnByName("Value")
    return {(table.GetCellText(r, 0), table.GetCellText(r, 1)): values.GetValue(r)
            for r in range(table.GetNumberOfRows())}


def compare_volumes(pred: Volume, gt: Volume) -> tuple[Volume, Volume, dict]:
    """(GT on the prediction grid, difference pred - GT in HU, metrics of every convention)."""
    aligned = resample_centred(gt, pred)
    difference = pred.with_array(np.asarray(pred.array, np.float32) - aligned.array)
    return aligned, difference, evaluate_volumes(pred, aligned)


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
    outputs.switch_layout(scene, COMPARE_LAYOUT_ID, layout_xml())
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
