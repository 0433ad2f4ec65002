"""The X2CT Training logic on the headless Slicer scene: background training, loss curve, cancel, resume.

Training really runs (x2ct-cnn, tiny preset, simulated pseudo-patients) in a
child ``python -m x2ct train --progress json`` process, as the module does
inside Slicer with PythonSlicer.
"""

import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

import x2ct.jobs
from x2ct.errors import InputError, X2CTError

pytestmark = pytest.mark.slicer

SIMULATED = "simulated"


@pytest.fixture
def logic(scene):
    from X2CTTrainingLib.logic import TrainingLogic

    return TrainingLogic()


def _poll_until(run, condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.05)
    assert condition(), f"timed out at step {run.step}: {run.error or list(run.log)[-5:]}"


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_trains_in_the_background_and_fills_the_loss_curve(logic, scene, tmp_path):
    out = tmp_path / "run"
    progressed, done = [], []
    run = logic.startTraining(SIMULATED, "x2ct-cnn", "tiny", 2, out,
                              onProgress=lambda r: progressed.append((r.step, r.finished)), onDone=done.append)
    assert not run.finished and run.job.running  # startTraining returned at once
    _poll_until(run, lambda: run.finished)

    assert run.error is None and done == [run]
    assert progressed and progressed[-1][0] == 2 and not any(finished for _, finished in progressed)
    assert [step for step, _ in run.losses] == [1, 2]
    assert {"loss", "mse", "projection"} <= set(run.losses[0][1]) and "lr" not in run.losses[0][1]
    assert [e["step"] for e in run.evaluations] == [2] and "honest.psnr_db" in run.evaluations[-1]
    assert run.summary["steps"] == 2 and run.fraction == 1.0

    # The loss curve: a table with step + one column per loss, one plot series per loss in the chart.
    curve = run.lossCurve
    assert scene.GetNodeByID(curve.tableNode.GetID()) is curve.tableNode
    rows = curve.rows()
    assert [row["step"] for row in rows] == [1.0, 2.0]
    assert rows[1]["loss"] == pytest.approx(run.losses[1][1]["loss"])
    assert curve.chartNode.GetNumberOfPlotSeriesNodes() == len(curve.names()) == len(rows[0]) - 1
    for name, series in curve.seriesNodes.items():
        assert series.GetTableNode() is curve.tableNode and series.GetYColumnName() == name

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["method"], config["preset"], config["data"]["kind"]) == ("x2ct-cnn", "tiny", "simulated")

    from x2ct.inference import load

    model = load(Path(run.summary["model"]))
    assert model is not None and logic.resumableRun(out)
    assert "Trained 2 steps" in run.statusText()


def test_fine_tunes_a_trained_model_in_the_background(logic, scene, tmp_path):
    from x2ct.modelfile import load_model
    from x2ct.training import load, train

    first = tmp_path / "first"
    train(load("x2ct-cnn-tiny"), first, steps=1, progress="none")
    summary = logic.train(SIMULATED, "x2ct-cnn", "tiny", 1, tmp_path / "tuned", initFrom=str(first / "model"))
    _, card = load_model(Path(summary["model"]))
    assert card["training"]["init_from"]["from"] == str(first / "model")
    assert card["training"]["init_from"]["sha256"] == load_model(first / "model")[1]["sha256"]
    with pytest.raises(InputError, match="x2ct-cnn network at preset tiny; choose that method and preset"):
        logic.startTraining(SIMULATED, "x2ct-gan", "tiny", 1, tmp_path / "other", initFrom=str(first / "model"))
    assert not (tmp_path / "other" / "config.yaml").exists()
    assert logic.modelNetwork(str(first / "model")) == ("x2ct-cnn", "tiny")
    (problem,) = logic.settingsProblems(SIMULATED, "x2ct-gan", "tiny", 1, tmp_path / "other", initFrom="gone")
    assert "'gone' is neither a model folder nor a usable model id" in problem
    assert logic.settingsProblems(SIMULATED, "x2ct-gan", "tiny", 1, tmp_path / "tuned", resume=True,
                                  initFrom="gone") != [] and "gone" not in " ".join(
        logic.settingsProblems(SIMULATED, "x2ct-cnn", "tiny", 1, tmp_path / "tuned", resume=True, initFrom="gone"))


def test_cancel_stops_the_process_tree_and_the_run_resumes(logic, tmp_path):
    out = tmp_path / "run"
    run = logic.startTraining(SIMULATED, "x2ct-cnn", "tiny", 20, out)  # far more than run before the cancel
    _poll_until(run, lambda: run.step >= 3 or run.finished)  # checkpoint 2 is written before step 3 starts
    pgid = run.job.pid
    assert not run.finished and _group_members(pgid)
    run.cancel()
    assert run.finished and run.cancelled and "cancelled at step" in run.error
    assert _group_members(pgid) == []
    with pytest.raises(X2CTError, match="cancelled"):
        run.wait(timeout=1)

    assert logic.resumableRun(out)
    assert logic.settingsProblems(SIMULATED, "x2ct-cnn", "tiny", 5, out)[0].startswith(
        f"Output folder {out} already holds a training run")
    assert "trains x2ct-cnn (tiny)" in logic.settingsProblems(SIMULATED, "x2ct-gan", "tiny", 5, out, resume=True)[0]

    # The child may have run ahead of the progress we polled, so read which checkpoint it left (2 or later).
    from x2ct.training import checkpoint

    saved = checkpoint.read_pointer(out, checkpoint.LATEST)["step"]
    assert saved >= 2 and saved % 2 == 0

    # Resume two steps further (the steps field is the total to reach): exactly those two steps run.
    resumed = logic.startTraining(SIMULATED, "x2ct-cnn", "tiny", saved + 2, out, resume=True)
    summary = resumed.wait(timeout=120)
    assert summary["steps"] == saved + 2
    assert [row["step"] for row in resumed.lossCurve.rows()] == [saved + 1.0, saved + 2.0]


def test_bad_settings_give_problems_and_start_nothing(logic, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(x2ct.jobs, "Job", lambda *args, **kwargs: started.append(args))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no CT volumes"):
        logic.startTraining(empty, "x2ct-cnn", "tiny", 2, tmp_path / "out")
    with pytest.raises(InputError, match="does not exist"):
        logic.startTraining(tmp_path / "missing", "x2ct-cnn", "tiny", 2, tmp_path / "out")
    with pytest.raises(InputError, match="Nothing to resume"):
        logic.startTraining(SIMULATED, "x2ct-cnn", "tiny", 2, tmp_path / "out", resume=True)
    with pytest.raises(InputError, match="Choose a method"):
        logic.startTraining(SIMULATED, "no-such-method", "tiny", 2, tmp_path / "out")
    assert started == [] and not (tmp_path / "out").exists()


def test_a_run_stopped_before_its_first_checkpoint_is_replaced_only_when_asked(logic, tmp_path):
    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    (out / "log.csv").write_text("step,loss\n1,0.5\n")  # what a run that failed at step 1 leaves
    assert logic.stoppedRunFiles(out) == ["log.csv", "tensorboard"] and not logic.resumableRun(out)
    with pytest.raises(InputError, match=r"stopped before its first checkpoint \(log.csv, tensorboard\); start "
                                         "with overwrite=True"):
        logic.startTraining(SIMULATED, "x2ct-cnn", "tiny", 1, out)
    assert (out / "log.csv").read_text() == "step,loss\n1,0.5\n"  # kept

    run = logic.startTraining(SIMULATED, "x2ct-cnn", "tiny", 1, out, overwrite=True)
    _poll_until(run, lambda: run.finished)
    assert run.error is None and "--overwrite" in run.job.args
    assert "1,0.5" not in (out / "log.csv").read_text() and logic.resumableRun(out)
    assert logic.stoppedRunFiles(out) == []  # a run with a checkpoint is resumed, not replaced


def _write_ct(path: Path, size: int = 24) -> None:
    image = sitk.GetImageFromArray(np.full((size, size, size), -1000, np.int16))
    image.SetSpacing((1.5, 1.5, 1.5))
    sitk.WriteImage(image, str(path))


def test_config_data_kind_and_base_config(logic, tmp_path):
    cts = tmp_path / "cts"
    (cts / "sub").mkdir(parents=True)
    for index in range(2):
        _write_ct(cts / "sub" / f"case-{index}.nrrd")
    assert logic.dataKind(cts) == "ct-folder"
    dicom = tmp_path / "dicom" / "patient" / "series"
    dicom.mkdir(parents=True)
    (dicom / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert logic.dataKind(tmp_path / "dicom") == "dicom-tree"
    h5 = tmp_path / "h5" / "LIDC-0001"
    h5.mkdir(parents=True)
    (h5 / "ct_xray_data.h5").write_bytes(b"")
    assert logic.dataKind(tmp_path / "h5") == "x2ct-hdf5"
    assert logic.dataKind("simulated") == "simulated"

    # small: no shipped x2ct-cnn-small, so the published (paper) schedule is the base, with this data and steps.
    path = logic.writeConfig(cts, "x2ct-cnn", "small", 7, tmp_path / "a")
    config = yaml.safe_load(path.read_text())
    assert path == tmp_path / "a" / "config.yaml"
    assert config["preset"] == "small" and config["train"]["steps"] == 7
    assert config["data"] == {"kind": "ct-folder", "source": str(cts.resolve())}
    assert config["train"]["lr_schedule"] == "linear-decay"  # from x2ct-cnn-paper.yaml
    # tiny has its own shipped config (simulated data, 4 cases); the dataset replaces the data source only.
    config = yaml.safe_load(logic.writeConfig(cts, "henzler", "tiny", 9, tmp_path / "b").read_text())
    assert config["data"] == {"kind": "ct-folder", "source": str(cts.resolve()), "train_count": 4,
                              "validation_count": 1}
    assert config["evaluate"]["every"] == 2 and config["preset"] == "tiny"
    with pytest.raises(InputError, match="already holds a training run"):
        (tmp_path / "b" / "latest.json").write_text('{"step": 2, "folder": "checkpoints/step-0000002"}')
        (tmp_path / "b" / "checkpoints" / "step-0000002").mkdir(parents=True)
        (tmp_path / "b" / "checkpoints" / "step-0000002" / "state.safetensors").write_bytes(b"")
        logic.writeConfig(cts, "henzler", "tiny", 9, tmp_path / "b")
    from x2ct.training.config import load

    assert load(tmp_path / "b" / "config.yaml").train.steps == 9  # what the trainer will read
