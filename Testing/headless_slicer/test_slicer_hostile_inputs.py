"""The robustness suite's hostile files and model folders through the Slicer logic (issue 12).

Where a case applies to the module (loading an X-ray or a CT, importing or
choosing a model, reconstructing), the logic raises one X2CTError line and
no node is added or changed: every node's ID, class, name and modified time
are the same before and after.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robustness"))

import slicer  # noqa: E402
from hostile import hostile_files, small_ct, snapshot, tiny_model, xray_views  # noqa: E402
from X2CTReconstructionLib.logic import ReconstructionLogic  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from x2ct import catalog  # noqa: E402
from x2ct.checksum import sha256_file  # noqa: E402
from x2ct.errors import X2CTError  # noqa: E402

pytestmark = pytest.mark.slicer

FILES = ["empty.nrrd", "truncated-xray.nrrd", "truncated-ct.nrrd", "header-only.nrrd", "random.png",
         "random.nii.gz", "text.nrrd", "pickle.dcm", "huge-size.nrrd", "nan-xray.nrrd", "folder.png", "fifo.nrrd",
         "loop.nrrd", "missing.nrrd"]


def _nodes(scene) -> dict:
    """Every node: ID -> (class, name, modified time)."""
    found = {}
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        found[node.GetID()] = (node.GetClassName(), node.GetName(), node.GetMTime())
    return found


def _refused(scene, call) -> str:
    before = _nodes(scene)
    with pytest.raises(X2CTError) as caught:
        call()
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and len(message) < 1000, message
    assert _nodes(scene) == before, "a node was added or changed"
    return message


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.MODELS_ENV, str(tmp_path / "user-models"))
    (tmp_path / "good").mkdir()
    views = xray_views(tmp_path / "good")
    ct = small_ct(tmp_path / "good" / "ct.nrrd")
    return {"root": tmp_path, "views": views, "ct": ct, "model": tiny_model(tmp_path / "gan"),
            "files": hostile_files(tmp_path / "bad", views["frontal"], ct), "users": tmp_path / "user-models"}


def test_hostile_files_are_refused_by_load_xray_and_load_ct(scene, work):
    logic = ReconstructionLogic(scene)
    before = snapshot(work["root"])
    for name in FILES:
        if name in work["files"]:
            _refused(scene, lambda: logic.loadXRay(work["files"][name]))
            _refused(scene, lambda: logic.loadCT(work["files"][name]))
    assert snapshot(work["root"]) == before


def _nan_weights(folder: Path) -> None:
    state = load_file(str(folder / "model.safetensors"))
    name = next(n for n, t in state.items() if t.is_floating_point() and t.numel() > 1)
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(folder / "model.safetensors"))
    card = json.loads((folder / "model.json").read_text())
    card["sha256"] = sha256_file(folder / "model.safetensors")
    (folder / "model.json").write_text(json.dumps(card))


def test_hostile_model_folders_are_refused_by_import_and_install_nothing(scene, work):
    logic = ReconstructionLogic(scene)
    card = json.loads((work["model"] / "model.json").read_text())
    (work["model"] / "model.json").write_text(json.dumps({**card, "weights": "../model.safetensors"}))
    assert "outside its folder" in _refused(scene, lambda: logic.importModel(work["model"]))
    _refused(scene, lambda: logic.modelFacts(work["model"]))
    (work["model"] / "model.json").write_text(json.dumps({**card, "description": "x" * 5000}))
    assert "longer than" in _refused(scene, lambda: logic.importModel(work["model"]))
    (work["model"] / "model.json").write_text(json.dumps(card))
    _nan_weights(work["model"])
    assert "NaN" in _refused(scene, lambda: logic.importModel(work["model"]))
    assert not work["users"].exists()


def test_a_broken_user_card_leaves_the_other_models_usable(scene, work):
    logic = ReconstructionLogic(scene)
    assert logic.importModel(work["model"], "bad") == "bad"
    (work["users"] / "bad" / "model.json").write_text("{")
    ids = logic.modelIds()
    assert "bad" in ids and "x2ct-cnn-2v" in ids and "back-projection" in ids
    assert logic.modelFacts("x2ct-cnn-2v").source == "shipped"
    assert "cannot run" in _refused(scene, lambda: logic.modelFacts("bad"))


def test_a_model_with_nan_weights_adds_no_node(scene, work):
    """The background run refuses the weights; the logic reports its one line and the scene is as it was."""
    logic = ReconstructionLogic(scene)
    frontal = logic.loadXRay(work["views"]["frontal"], view="frontal")
    lateral = logic.loadXRay(work["views"]["lateral"], view="lateral")
    _nan_weights(work["model"])
    message = _refused(scene, lambda: logic.reconstruct(frontal, lateral, model=str(work["model"]), device="cpu"))
    assert "NaN" in message


def test_a_published_checkpoint_that_is_not_one_is_refused_and_installs_nothing(scene, work, tmp_path):
    """Import published... runs x2ct catalog import-published in the background; its refusal is the logic's line."""
    logic = ReconstructionLogic(scene)
    garbage = tmp_path / "90_net_G.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 40)
    message = _refused(scene, lambda: logic.importPublished(garbage))
    assert "checkpoint" in message and "90_net_G.pth" in message
    marker = tmp_path / "ran"
    hostile = tmp_path / "30_net_G.pth"
    torch.save({"x": _RunsCode(str(marker))}, hostile)
    assert "refused" in _refused(scene, lambda: logic.importPublished(hostile, views=1))
    assert not marker.exists() and not work["users"].exists()


class _RunsCode:
    """A pickle payload that would create ``path`` when unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_nodes_removed_from_the_scene_are_refused_by_reconstruct_and_compare(scene, work):
    """A script may hold a node that was removed meanwhile: refused by name, before anything runs or is added."""
    logic = ReconstructionLogic(scene)
    frontal = logic.loadXRay(work["views"]["frontal"], view="frontal")
    lateral = logic.loadXRay(work["views"]["lateral"], view="lateral")
    ct, truth = logic.loadCT(work["ct"], name="prediction"), logic.loadCT(work["ct"], name="truth")
    scene.RemoveNode(lateral)
    scene.RemoveNode(truth)
    assert logic.inputProblems(frontal, lateral) == [
        f"Node {lateral.GetName()!r} is no longer in the scene; load or select it again."]
    assert "no longer in the scene" in _refused(scene, lambda: logic.reconstruct(frontal, lateral, device="cpu"))
    assert "Ground truth: node 'truth' is no longer" in _refused(scene, lambda: logic.compare(ct, truth))
    if "cuda" not in logic.deviceChoices():  # no CUDA here: refused at once, in the console's terms
        message = _refused(scene, lambda: logic.reconstruct(frontal, device="cuda"))
        assert message.endswith("choose auto or cpu.") and "--device" not in message
    slicer.util.updateVolumeFromArray(ct, np.full(slicer.util.arrayFromVolume(ct).shape, np.nan, np.float32))
    other = logic.loadCT(work["ct"], name="other")
    assert "Ground truth: The volume has" in _refused(scene, lambda: logic.compare(other, ct))
