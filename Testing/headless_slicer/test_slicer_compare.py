"""Compare with a ground truth: aligned GT, difference volume, metrics table, linked side-by-side layout.

The ground truth sits in scanner coordinates (LPS-aligned, far from the
origin); the "prediction" is the same anatomy plus noise on the model's
canonical grid centred at 0. Aligning the centres must therefore give back
the ground truth voxel for voxel, the difference must be exactly the noise,
and the table must hold what x2ct.metrics computes on those arrays.
"""

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

import slicer  # noqa: E402
from X2CTReconstructionLib import compare  # noqa: E402
from X2CTReconstructionLib import outputs  # noqa: E402
from X2CTReconstructionLib import scene as glue  # noqa: E402
from X2CTReconstructionLib.logic import ReconstructionLogic  # noqa: E402

from x2ct.errors import InputError  # noqa: E402
from x2ct.image import CANONICAL_DIRECTION, Volume, XRay, to_canonical  # noqa: E402
from x2ct.metrics import alignment, evaluate_volumes  # noqa: E402

pytestmark = pytest.mark.slicer

SIZE, SPACING = 32, 5.0


def chest() -> np.ndarray:
    """Canonical (S->I, A->P, R->L) HU array: body, two lungs, spine."""
    axis0, axis1, axis2 = np.mgrid[:SIZE, :SIZE, :SIZE].astype(np.float32)
    hu = np.full((SIZE,) * 3, -1000.0, np.float32)
    hu[((axis0 - 16) / 15) ** 2 + ((axis1 - 16) / 11) ** 2 + ((axis2 - 16) / 14) ** 2 < 1] = 0.0
    for centre in (9, 23):
        hu[((axis0 - 14) / 9) ** 2 + ((axis1 - 15) / 6) ** 2 + ((axis2 - centre) / 5) ** 2 < 1] = -850.0
    hu[((axis1 - 23) ** 2 + (axis2 - 16) ** 2 < 4)] = 700.0
    return hu


def noisy_pair() -> tuple[Volume, Volume, np.ndarray]:
    """(prediction, ground truth, noise): the truth in scanner coordinates, the prediction = truth + noise on
    the canonical grid centred at 0."""
    canonical = chest()
    # scanner frame: LPS axes, k running inferior -> superior, so the canonical array flipped on axis 0
    truth = Volume(np.ascontiguousarray(canonical[::-1]), (SPACING,) * 3, (100.0, -50.0, 300.0), np.eye(3))
    noise = np.random.default_rng(0).normal(0.0, 30.0, canonical.shape).astype(np.float32)
    origin = CANONICAL_DIRECTION @ np.full(3, -(SIZE - 1) / 2.0 * SPACING)
    prediction = Volume(to_canonical(truth).array + noise, (SPACING,) * 3, tuple(origin), CANONICAL_DIRECTION.copy())
    return prediction, truth, noise


def pair_of_nodes(scene):
    """``noisy_pair``'s prediction and ground truth as volume nodes."""
    prediction, truth, _ = noisy_pair()
    return (glue.volume_node_from_volume(prediction, "prediction", scene),
            glue.volume_node_from_volume(truth, "truth", scene))


def test_compare_fills_table_difference_and_layout(scene):
    prediction, truth, noise = noisy_pair()
    predicted_node = glue.volume_node_from_volume(prediction, "prediction", scene)
    truth_node = glue.volume_node_from_volume(truth, "truth", scene)

    table = ReconstructionLogic(scene).compare(predicted_node, truth_node)

    aligned_node = table.GetNodeReference(outputs.ALIGNED_GROUND_TRUTH)
    difference_node = table.GetNodeReference(outputs.DIFFERENCE)
    assert table.GetNodeReference(outputs.PREDICTION) is predicted_node
    for node in (aligned_node, difference_node, table):
        assert node.GetNodeReference(outputs.SOURCE) is predicted_node
        assert node.GetNodeReference(outputs.GROUND_TRUTH) is truth_node
    aligned = glue.volume_from_volume_node(aligned_node)
    np.testing.assert_allclose(aligned.array, to_canonical(truth).array, atol=1e-3)
    np.testing.assert_allclose(aligned.origin, prediction.origin, atol=1e-6)
    np.testing.assert_allclose(glue.volume_from_volume_node(difference_node).array, noise, atol=1e-3)

    values = compare.table_values(table)
    expected = compare.metric_rows(evaluate_volumes(prediction, aligned))
    assert len(values) == len(expected) + 1 > 16
    for convention, metric, value in expected:
        assert values[(convention, metric)] == pytest.approx(value, rel=1e-9, nan_ok=True)
    assert {convention for convention, _ in values} == {"x2ct", "repeat_concatenate", "honest", "lung_dice",
                                                        "alignment"}
    assert values[("alignment", "ground_truth_coverage")] == 1.0
    assert values[("lung_dice", "threshold")] > 0.9
    assert 15 < values[("honest", "mae_hu")] < 35  # |N(0, 30)| has mean 24 HU
    assert table.GetAttribute("X2CT.Alignment") == alignment.ALIGNMENT

    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == compare.COMPARE_LAYOUT_ID
    composites = {}
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
        composites[node.GetLayoutName()] = node
    for tag in compare.PREDICTION_VIEWS:
        assert composites[tag].GetBackgroundVolumeID() == predicted_node.GetID() and composites[tag].GetLinkedControl()
    for tag in compare.GT_VIEWS:
        assert composites[tag].GetBackgroundVolumeID() == aligned_node.GetID() and composites[tag].GetLinkedControl()


def test_compare_refuses_an_xray_as_ground_truth(scene):
    prediction = glue.volume_node_from_volume(Volume(chest(), (SPACING,) * 3), "prediction", scene)
    xray = glue.xray_node_from_xray(XRay(np.ones((16, 16), np.float32)), "xray", scene)
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="Ground truth:.*X-ray"):
        ReconstructionLogic(scene).compare(prediction, xray)
    with pytest.raises(InputError, match="Ground truth: select"):
        ReconstructionLogic(scene).compare(prediction, None)
    assert scene.GetNumberOfNodes() == before



def test_difference_volume_has_a_diverging_colour_map_and_symmetric_window(scene):
    predicted_node, truth_node = pair_of_nodes(scene)
    table = ReconstructionLogic(scene).compare(predicted_node, truth_node)
    difference_node = table.GetNodeReference(outputs.DIFFERENCE)
    display = difference_node.GetDisplayNode()
    difference = slicer.util.arrayFromVolume(difference_node)
    assert display.GetLevel() == 0.0 and not display.GetAutoWindowLevel()
    half = display.GetWindow() / 2
    assert half == pytest.approx(np.percentile(np.abs(difference), compare.DIFFERENCE_PERCENTILE), rel=1e-5)
    assert 60 < half < 110  # 99th percentile of |N(0, 30)| is 77 HU

    colours = scene.GetNodeByID(display.GetColorNodeID())
    assert colours.GetName() in (compare.DIVERGING_COLOURS, compare.FALLBACK_COLOURS)
    lookup = colours.GetLookupTable()
    low, high = lookup.GetTableRange()
    rgb = []
    for value in (low, (low + high) / 2, high):
        colour = [0.0, 0.0, 0.0]
        lookup.GetColor(value, colour)
        rgb.append(np.array(colour))
    assert rgb[0][2] > 0.5 > rgb[0][0], "negative differences are not blue"
    assert rgb[2][0] > 0.5 > rgb[2][2], "positive differences are not red"
    assert rgb[1].min() > 0.8 or np.ptp(rgb[1]) < 0.2, "zero difference is not neutral"

    flat = glue.volume_node_from_volume(Volume(chest(), (SPACING,) * 3), "flat prediction", scene)
    same = glue.volume_node_from_volume(Volume(chest(), (SPACING,) * 3), "same", scene)
    table = ReconstructionLogic(scene).compare(flat, same)
    display = table.GetNodeReference(outputs.DIFFERENCE).GetDisplayNode()
    assert display.GetWindow() == 2 * compare.DIFFERENCE_MIN_HALF_WIDTH  # all zero: the window's floor
    assert display.GetColorNodeID() == colours.GetID(), "the colour map is made once per scene"



def test_compare_twice_updates_the_same_nodes(scene, node_counts):
    predicted_node, truth_node = pair_of_nodes(scene)
    logic = ReconstructionLogic(scene)
    first = logic.compare(predicted_node, truth_node)
    after_first = node_counts(scene)
    ids = [first.GetNodeReferenceID(role) for role in (outputs.ALIGNED_GROUND_TRUTH, outputs.DIFFERENCE)]

    slicer.util.updateVolumeFromArray(predicted_node, slicer.util.arrayFromVolume(predicted_node) + 100.0)
    second = logic.compare(predicted_node, truth_node)
    assert node_counts(scene) == after_first
    assert second.GetID() == first.GetID()
    assert [second.GetNodeReferenceID(role) for role in (outputs.ALIGNED_GROUND_TRUTH, outputs.DIFFERENCE)] == ids
    difference = slicer.util.arrayFromVolume(scene.GetNodeByID(ids[1]))
    aligned = slicer.util.arrayFromVolume(scene.GetNodeByID(ids[0]))
    np.testing.assert_allclose(difference, slicer.util.arrayFromVolume(predicted_node) - aligned, atol=1e-3)
    assert compare.table_values(second)[("honest", "mae_hu")] > 60  # the metrics follow the shifted prediction

    other_truth = glue.volume_node_from_volume(glue.volume_from_volume_node(truth_node), "other truth", scene)
    third = logic.compare(predicted_node, other_truth)
    assert third.GetID() != first.GetID(), "another ground truth gets its own table"


def test_x2ct_evaluate_with_aligned_centres_reports_what_the_compare_button_shows(scene, tmp_path, capsys):
    """One comparison rule (x2ct.metrics.alignment): the CLI on the two files gives the table's numbers."""
    import json

    from x2ct.cli import main
    from x2ct.io import write_volume

    prediction, truth, _ = noisy_pair()
    pred_path = write_volume(prediction, tmp_path / "prediction.nrrd")
    cropped = Volume(np.ascontiguousarray(truth.array[:, 2:-3]), truth.spacing, truth.origin, truth.direction)
    truth_path = write_volume(cropped, tmp_path / "truth.nrrd")  # on another grid than the prediction
    predicted_node = glue.volume_node_from_volume(prediction, "prediction", scene)
    truth_node = ReconstructionLogic(scene).loadCT(truth_path)
    table = compare.table_values(ReconstructionLogic(scene).compare(predicted_node, truth_node))

    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred_path), "--gt", str(truth_path), "--align-centres", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rows = compare.metric_rows({section: {k: (float("nan") if v is None else v) for k, v in values.items()}
                                for section, values in printed.items()})
    assert len(rows) == len(table) > 15
    for convention, metric, value in rows:
        assert table[(convention, metric)] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), metric
    assert main(["evaluate", "--pred", str(pred_path), "--gt", str(truth_path)]) != 0  # refused without the flag
    assert "grid" in capsys.readouterr().err
