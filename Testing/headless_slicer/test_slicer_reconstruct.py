"""X-ray nodes -> CT node through the background CLI, on Slicer's real MRML scene.

The inputs are DRRs of a small phantom with a bright marker rod on the
patient's left-anterior side. The built-in back-projection model runs in a
child process (``x2ct reconstruct``), and the node that comes back must hold
exactly what the same model gives in-process, placed as the CLI's file says,
with the marker left-anterior in RAS; bad inputs and cancels must leave the
scene as it was.
"""

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

import slicer  # noqa: E402
import vtk  # noqa: E402
from X2CTReconstructionLib import dependencies, outputs  # noqa: E402
from X2CTReconstructionLib import scene as glue  # noqa: E402
from X2CTReconstructionLib.logic import ReconstructionLogic  # noqa: E402
from X2CTReconstructionLib.outputs import input_nodes  # noqa: E402

from x2ct import inference, jobs  # noqa: E402
from x2ct.errors import InputError, X2CTError  # noqa: E402

pytestmark = pytest.mark.slicer

def snapshot(scene) -> list[tuple[str, str]]:
    """(id, name) of every node, to show that nothing was added, removed or renamed."""
    nodes = scene.GetNodes()
    return sorted((nodes.GetItemAsObject(n).GetID(), nodes.GetItemAsObject(n).GetName() or "")
                  for n in range(nodes.GetNumberOfItems()))


def study(scene, node) -> int:
    """Put ``node`` under a new patient / study in subject hierarchy; return the study item."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Phantom patient")
    item = hierarchy.CreateStudyItem(patient, "Phantom study")
    hierarchy.CreateItem(item, node)  # Slicer's Qt plugins do this on load; headless, the test does
    return item


def test_xray_nodes_become_a_ct_node_with_geometry_provenance_and_study(scene, phantom_xrays):
    frontal, lateral = phantom_xrays
    study_id = study(scene, frontal)
    logic = ReconstructionLogic(scene)
    progress, finished = [], []
    run = logic.startReconstruction(frontal, lateral, model="back-projection", device="cpu",
                                    onProgress=lambda f, s: progress.append((f, s)), onDone=finished.append)
    folder = run._folder
    node = run.wait(timeout=120)

    assert finished == [run] and run.error is None and run.fraction == 1.0 and not folder.exists()
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 4
    assert node.GetName() == "phantom frontal CT (back-projection)"

    # the same voxels and grid as the model gives in-process on the same X-rays
    expected = inference.reconstruct([glue.xray_from_volume_node(frontal), glue.xray_from_volume_node(lateral)],
                                     "back-projection", device="cpu").volume
    got = glue.volume_from_volume_node(node)
    np.testing.assert_allclose(got.array, expected.array, atol=1e-3)
    np.testing.assert_allclose(got.spacing, expected.spacing, atol=1e-6)
    np.testing.assert_allclose(got.origin, expected.origin, atol=1e-4)
    np.testing.assert_allclose(got.direction, expected.direction, atol=1e-6)
    geometry = json.loads(node.GetAttribute(outputs.GEOMETRY))
    assert geometry["spacing_mm"] == pytest.approx(list(expected.spacing))
    assert geometry["origin_lps_mm"] == pytest.approx(list(expected.origin))

    # RAS: the marker rod (left-anterior) is where the reconstruction is brightest
    array = slicer.util.arrayFromVolume(node)
    k, j, i = np.unravel_index(np.argmax(array), array.shape)
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    r, a, _, _ = ijk_to_ras @ np.array([i, j, k, 1.0])
    assert r < -20 and a > 20, f"brightest voxel at R={r:.0f} A={a:.0f} mm, expected left (R<0) and anterior (A>0)"

    assert node.GetAttribute(outputs.MODEL) == "back-projection"
    assert node.GetAttribute(outputs.MODEL_SHA256).startswith("none")
    views = json.loads(node.GetAttribute(outputs.VIEWS))
    assert [(v["node"], v["view"]) for v in views] == [("phantom frontal", "frontal"), ("phantom lateral", "lateral")]
    software = json.loads(node.GetAttribute(outputs.SOFTWARE))
    import x2ct

    assert software["x2ct"] == x2ct.__version__ and software["torch"] != "not installed"  # no metadata in Slicer
    assert any("device" in note for note in json.loads(node.GetAttribute(outputs.NOTES)))
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study_id

    # a second run never overwrites; an explicitly chosen output node is filled in place
    second = logic.reconstruct(frontal, lateral, device="cpu")
    assert second.GetID() != node.GetID() and second.GetName() == "phantom frontal CT (back-projection)_1"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chosen output")
    target.CreateDefaultDisplayNodes()
    before = snapshot(scene)
    assert logic.reconstruct(frontal, device="cpu", outputNode=target) is target
    assert snapshot(scene) == before
    assert target.GetImageData().GetDimensions() == (128, 128, 128) and target.GetAttribute(outputs.MODEL)
    assert len(json.loads(target.GetAttribute(outputs.VIEWS))) == 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny two-view model folder (x2ct-cnn, random weights) saved as a user would import it."""
    from x2ct.models import build
    from x2ct.modelfile import save_model

    folder = tmp_path_factory.mktemp("models") / "tiny-x2ct-cnn"
    save_model(build("x2ct-cnn", "tiny"), folder)
    return folder


def test_bad_inputs_give_a_message_and_leave_the_scene_unchanged(scene, phantom, phantom_xrays, tiny_model,
                                                                  tmp_path, monkeypatch):
    import shutil

    frontal, lateral = phantom_xrays
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    flat = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "zero spacing")
    slicer.util.updateVolumeFromArray(flat, np.ones((1, 8, 8), np.float32))
    flat.SetSpacing(0.0, 1.0, 1.0)
    logic = ReconstructionLogic(scene)
    before = snapshot(scene)

    with pytest.raises(InputError, match="3D volume"):
        logic.startReconstruction(ct, lateral)
    with pytest.raises(InputError, match="zero-length axis"):
        logic.startReconstruction(flat, lateral)
    with pytest.raises(InputError, match="needs 2 view.*select a lateral"):
        logic.startReconstruction(frontal, None, model=str(tiny_model))
    with pytest.raises(InputError, match="Unknown model id 'no-such-model'"):
        logic.startReconstruction(frontal, lateral, model="no-such-model")

    # the card is read in Slicer, the weights hashed once, by the child that loads them
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_model, tampered)
    weights = tampered / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    weights.rename(tampered / "elsewhere.safetensors")
    with monkeypatch.context() as patched:
        patched.setattr("x2ct.jobs.Job", lambda *args, **kwargs: pytest.fail("a child process was started"))
        with pytest.raises(InputError, match="Weights file .* missing"):  # refused before any child process
            logic.startReconstruction(frontal, lateral, model=str(tampered), device="cpu")
    (tampered / "elsewhere.safetensors").rename(weights)
    import x2ct.modelfile

    hashed = []
    with monkeypatch.context() as patched:
        patched.setattr(x2ct.modelfile, "sha256_file", lambda path: hashed.append(path) or "")
        with pytest.raises(X2CTError, match="Checksum mismatch"):  # the child's message
            logic.reconstruct(frontal, lateral, model=str(tampered), device="cpu")
    assert hashed == [], "the weights were hashed in Slicer's process too"

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model, pickled)
    import torch

    from x2ct.checksum import sha256_file

    torch.save({"weight": torch.zeros(2)}, pickled / "model.safetensors")
    card = json.loads((pickled / "model.json").read_text())
    card["sha256"] = sha256_file(pickled / "model.safetensors")
    (pickled / "model.json").write_text(json.dumps(card))
    run = logic.startReconstruction(frontal, lateral, model=str(pickled), device="cpu")
    with pytest.raises(X2CTError, match="not a safetensors weights file"):
        run.wait(timeout=120)
    assert run.error and "\n" not in run.error and not run.error.startswith("x2ct")
    assert run.outputNode is None and run.stage == "failed"

    assert snapshot(scene) == before


def test_the_console_call_refuses_an_input_x_ray_as_its_output(scene, phantom, phantom_xrays, monkeypatch):
    """The logic itself, not only the panel, refuses to write the CT over an input (frontal, lateral or extra)."""
    from x2ct.physics import drr

    frontal, lateral = phantom_xrays
    back = glue.xray_node_from_xray(drr(phantom, 180.0), "phantom back", scene)
    logic = ReconstructionLogic(scene)
    before = snapshot(scene)
    monkeypatch.setattr("x2ct.jobs.Job", lambda *args, **kwargs: pytest.fail("a child process was started"))
    for output in (frontal, lateral, back):
        with pytest.raises(InputError, match="output is one of the input X-rays"):
            logic.reconstruct(frontal, lateral, device="cpu", outputNode=output, extraViews=[(back, 180)])
    assert snapshot(scene) == before


def test_cancel_mid_run_adds_nothing(scene, phantom_xrays):
    frontal, lateral = phantom_xrays
    logic = ReconstructionLogic(scene)
    before = snapshot(scene)
    done = []
    run = logic.startReconstruction(frontal, lateral, device="cpu", onDone=done.append)
    folder: Path = run._folder
    for _ in range(300):  # until the child reports its first stage (it is then loading the model)
        assert run.poll() and folder.is_dir()
        if run.stage != "starting":
            break
        time.sleep(0.1)
    assert run.stage != "starting", "the child never reported progress"
    run.cancel()

    assert run.cancelled and run.finished and done == [run] and run.outputNode is None
    assert run._job.returncode is not None, "the child process is still running"
    assert not folder.exists()
    assert not run.poll()
    with pytest.raises(X2CTError, match="cancelled"):
        run.wait()

    # the panel's Cancel: returns at once; the polls that follow see the child gone and end the run
    run = logic.startReconstruction(frontal, lateral, device="cpu", onDone=done.append)
    began = time.monotonic()
    run.cancel(wait=False)
    assert time.monotonic() - began < 0.5 and run.cancelled and not run.finished and run.stage == "cancelling"
    while run.poll():
        assert time.monotonic() - began < 30, "the cancelled child never ended"
        time.sleep(0.05)
    assert run.finished and run.stage == "cancelled" and done[-1] is run and run.outputNode is None
    assert run._job.returncode is not None and not run._folder.exists()
    assert snapshot(scene) == before
    assert snapshot(scene) == before


def test_nodes_removed_during_the_run_lose_nothing(scene, phantom_xrays, caplog):
    """The user deletes the frontal X-ray, or the chosen output node, while the child runs.

    It raised AttributeError from the poll timer (the removed X-ray has no
    scene to find its study in), and filled a node no longer in the scene
    (a CT nobody sees). Now the CT is added as a new node, named after the
    view, with a note, and references only the inputs still there. Warnings
    name the nodes (not the child's temporary files) and are logged for the console.
    """
    frontal, lateral = phantom_xrays
    logic = ReconstructionLogic(scene)
    study(scene, lateral)
    run = logic.startReconstruction(frontal, lateral, device="cpu")
    scene.RemoveNode(frontal)
    node = run.wait(timeout=300)
    assert scene.IsNodePresent(node) and node.GetName() == "phantom frontal CT (back-projection)"
    assert input_nodes(node) == [lateral] and outputs.referenced_inputs(node) == [(1, lateral)]
    assert outputs.study_item(node) == outputs.study_item(lateral) is not None
    assert any("input X-ray node was removed" in note for note in run.notes)
    warnings = [note for note in run.notes if note.startswith("WARNING")]  # phantom DRRs are not chest films
    assert [note.split(" (")[0] for note in warnings] == ["WARNING 'phantom frontal'", "WARNING 'phantom lateral'"]
    logged = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert logged == [f"X2CT: {note}" for note in warnings]

    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my CT")
    run = logic.startReconstruction(lateral, None, model="back-projection", device="cpu", outputNode=target)
    before = {n for n, _ in snapshot(scene)}
    scene.RemoveNode(target)
    node = run.wait(timeout=300)
    assert node is not target and scene.IsNodePresent(node) and slicer.util.arrayFromVolume(node).any()
    added = {n for n, _ in snapshot(scene)} - before
    assert node.GetID() in added and not scene.GetNodeByID(target.GetID())
    assert all("DisplayNode" in other for other in added - {node.GetID()}), added  # one new volume, its display
    assert any("'my CT' was removed" in note for note in run.notes)


def test_the_next_reconstruction_runs_in_the_spare_left_by_the_last_one(scene, phantom_xrays, monkeypatch):
    frontal, lateral = phantom_xrays
    jobs.drop_spare()
    try:
        logic = ReconstructionLogic(scene)
        first = logic.startReconstruction(frontal, lateral, model="back-projection", device="cpu")
        assert type(first._job) is jobs.Job  # nothing was waiting
        first_node = first.wait(timeout=300)
        spare = jobs._spare
        assert spare is not None and spare.usable(), "a finished run leaves a spare for the next one"
        assert logic.prepareSpare() and jobs._spare is spare  # the panel's enter() keeps it, starts no other
        second = logic.startReconstruction(frontal, lateral, model="back-projection", device="cpu")
        assert second._job is spare and jobs._spare is None
        second_node = second.wait(timeout=300)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(second_node),
                                      slicer.util.arrayFromVolume(first_node))
        jobs.drop_spare()

        cancelled = logic.startReconstruction(frontal, lateral, model="back-projection", device="cpu")
        cancelled.cancel()
        assert jobs._spare is None, "a cancel (Slicer closing, say) starts no spare"
        logic.keepSpare = False
        logic.reconstruct(frontal, lateral, model="back-projection", device="cpu")
        assert jobs._spare is None and not logic.prepareSpare()
        logic.keepSpare = True
        monkeypatch.setattr(dependencies, "missing", lambda: [dependencies.requirements()[0]])
        assert not logic.prepareSpare() and jobs._spare is None, "no spare while a package it imports is missing"
    finally:
        jobs.drop_spare()


def test_four_views_with_angles_become_a_ct_node_with_every_view_in_its_provenance(scene, phantom):
    from x2ct.physics import drr

    frontal, lateral, ap, right = (glue.xray_node_from_xray(drr(phantom, view), f"phantom {name}", scene)
                                   for view, name in (("frontal", "frontal"), ("lateral", "lateral"),
                                                      (180.0, "AP"), (270.0, "right lateral")))
    logic = ReconstructionLogic(scene)
    node = logic.reconstruct(frontal, lateral, model="back-projection", device="cpu",
                             extraViews=[(ap, 180), (right, 270.0)])

    views = json.loads(node.GetAttribute(outputs.VIEWS))
    assert [(v["node"], v["role"], v["angle_deg"]) for v in views] == [
        ("phantom frontal", "frontal", 0.0), ("phantom lateral", "lateral", 90.0),
        ("phantom AP", "extra", 180.0), ("phantom right lateral", "extra", 270.0)]
    ids = [n.GetID() for n in (frontal, lateral, ap, right)]
    assert [node.GetNodeReferenceID(f"{outputs.INPUT}{i}") for i in range(4)] == ids  # view i <-> input i
    assert [n.GetID() for n in input_nodes(node)] == ids
    assert all("node_id" not in view for view in views), "IDs do not survive a scene import; references do"

    # the child was given all four views at their angles: the same voxels as the model gives in-process
    xrays = [glue.xray_from_volume_node(frontal), glue.xray_from_volume_node(lateral),
             glue.xray_from_volume_node(ap, view=180.0), glue.xray_from_volume_node(right, view=270.0)]
    expected = inference.reconstruct(xrays, "back-projection", device="cpu").volume
    np.testing.assert_allclose(glue.volume_from_volume_node(node).array, expected.array, atol=1e-3)
    two_views = inference.reconstruct(xrays[:2], "back-projection", device="cpu").volume
    assert np.abs(expected.array - two_views.array).max() > 1.0  # the extra views changed the result

    # the re-projection check renders each input at the angle it was given
    check = logic.reprojectionCheck(node)
    assert check["views"] == ["frontal", "lateral", "180.0", "270.0"] and len(check["drrs"]) == 4


def test_extra_views_with_a_duplicate_angle_or_a_count_the_model_refuses_add_nothing(scene, phantom,
                                                                                     phantom_xrays, tiny_model):
    from x2ct.physics import drr

    frontal, lateral = phantom_xrays
    ap = glue.xray_node_from_xray(drr(phantom, 180.0), "phantom AP", scene)
    ct = glue.volume_node_from_volume(phantom, "phantom CT", scene)
    logic = ReconstructionLogic(scene)
    before = snapshot(scene)

    with pytest.raises(InputError, match=r"Two views have the same angle \(0, 90, 90 deg\)"):
        logic.startReconstruction(frontal, lateral, extraViews=[(ap, 90)])
    with pytest.raises(InputError, match=r"Two views have the same angle \(0, 90, 0 deg\)"):
        logic.startReconstruction(frontal, lateral, extraViews=[(ap, 360)])
    with pytest.raises(InputError, match=r"View at 180 deg: .*3D volume"):
        logic.startReconstruction(frontal, lateral, extraViews=[(ct, 180)])
    with pytest.raises(InputError, match="'phantom lateral' is already used for another view"):
        logic.startReconstruction(frontal, lateral, extraViews=[(lateral, 180)])
    with pytest.raises(InputError, match=r"View at 180 deg: select an X-ray"):
        logic.startReconstruction(frontal, lateral, extraViews=[(None, 180)])
    message = r"Model tiny-x2ct-cnn needs 2 views \(frontal, lateral\) but got 3: remove views under More views\."
    with pytest.raises(InputError, match=message):
        logic.startReconstruction(frontal, lateral, model=str(tiny_model), extraViews=[(ap, 180)])
    assert logic.modelFacts(str(tiny_model)).view_counts == (2,)
    assert logic.modelFacts("back-projection").view_counts == tuple(range(1, 9))
    assert snapshot(scene) == before


def test_import_model_checks_the_weights_and_copies_nothing_else(scene, tiny_model, tmp_path, monkeypatch):
    import shutil

    import torch

    from x2ct import catalog
    from x2ct.checksum import sha256_file

    monkeypatch.setenv(catalog.MODELS_ENV, str(tmp_path / "user-models"))
    logic = ReconstructionLogic(scene)
    assert logic.importModel(tiny_model) == "tiny-x2ct-cnn"
    assert "tiny-x2ct-cnn" in logic.modelIds()
    assert logic.importModel(tiny_model, "second-copy") == "second-copy"
    assert sorted(p.name for p in (tmp_path / "user-models" / "second-copy").iterdir()) == [
        "model.json", "model.safetensors"]

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_model, tampered)
    data = bytearray((tampered / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="Checksum mismatch"):
        logic.importModel(tampered)

    pickled = tmp_path / "pickled"  # a pickle with a matching checksum: refused by its format, never unpickled
    shutil.copytree(tiny_model, pickled)
    torch.save({"weight": torch.zeros(2)}, pickled / "model.safetensors")
    card = json.loads((pickled / "model.json").read_text())
    card["sha256"] = sha256_file(pickled / "model.safetensors")
    (pickled / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="not a safetensors weights file"):
        logic.importModel(pickled)

    with pytest.raises(InputError, match="No model card"):
        logic.importModel(tmp_path)
    assert sorted(p.name for p in (tmp_path / "user-models").iterdir()) == ["second-copy", "tiny-x2ct-cnn"]


def test_samples_of_a_generative_model_add_an_uncertainty_node_linked_to_the_ct(scene, phantom_xrays, tmp_path,
                                                                             monkeypatch):
    from x2ct import catalog
    from x2ct.models import build
    from x2ct.modelfile import save_model

    monkeypatch.setenv(catalog.MODELS_ENV, str(tmp_path / "user-models"))
    save_model(build("code-diffusion", "tiny"), tmp_path / "user-models" / "tiny-diffusion")
    frontal, lateral = phantom_xrays
    logic = ReconstructionLogic(scene)
    before = snapshot(scene)
    with pytest.raises(InputError, match="back-projection is deterministic"):  # refused before anything starts
        logic.startReconstruction(frontal, lateral, model="back-projection", device="cpu", samples=2)
    assert snapshot(scene) == before

    item = study(scene, frontal)
    run = logic.startReconstruction(frontal, lateral, model="tiny-diffusion", device="cpu", samples=2)
    ct = run.wait(timeout=180)
    spread = run.uncertaintyNode
    assert spread is not None and spread.GetNodeReference(outputs.UNCERTAINTY_OF) is ct
    assert spread.GetName() == f"{ct.GetName()} uncertainty (SD, HU)"
    assert outputs.study_item(spread) == outputs.study_item(ct) == item
    values = slicer.util.arrayFromVolume(spread)
    assert values.shape == slicer.util.arrayFromVolume(ct).shape and values.min() >= 0 and values.max() > 0
    matrices = [vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()]
    ct.GetIJKToRASMatrix(matrices[0])
    spread.GetIJKToRASMatrix(matrices[1])
    assert [matrices[0].GetElement(r, c) for r in range(4) for c in range(4)] == pytest.approx(
        [matrices[1].GetElement(r, c) for r in range(4) for c in range(4)])

    # refilled with samples again: the same uncertainty node, refilled; then without samples: removed, with a note
    first = values.copy()
    again = logic.startReconstruction(frontal, lateral, model="tiny-diffusion", device="cpu", samples=3,
                                      outputNode=ct)
    assert again.wait(timeout=180) is ct and again.uncertaintyNode is spread
    assert not np.array_equal(slicer.util.arrayFromVolume(spread), first)
    deterministic = logic.startReconstruction(frontal, lateral, model="tiny-diffusion", device="cpu", outputNode=ct)
    assert deterministic.wait(timeout=180) is ct and deterministic.uncertaintyNode is None
    assert not outputs.in_scene(spread, scene)
    assert any(spread.GetName() in note and "uncertainty" in note for note in deterministic.notes)
    kind = "vtkMRMLScalarVolumeNode"
    assert not any(scene.GetNthNodeByClass(i, kind).GetNodeReference(outputs.UNCERTAINTY_OF) is ct
                   for i in range(scene.GetNumberOfNodesByClass(kind)))
