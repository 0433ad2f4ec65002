"""Hostile run folders for ``x2ct train --resume``, and the logs of resumed, failed and finished runs.

Training promises (for the README section on bad input and faults):
- Resuming never unpickles: the state is safetensors + JSON; a pickled, random, truncated or foreign state,
  a damaged latest.json/best.json or a pointer to a missing folder is refused in one line (exit 2) that
  names the file and what to do, and nothing in the run folder changes.
- Checkpoints, the final model, config.yaml, latest.json/best.json and a resumed log.csv are written
  atomically (temporary name, fsync, rename); config.yaml is only rewritten when it changed, so a kill or a
  failed write never makes a run unresumable.
- Configs are read by one strict YAML loader (size, depth, aliases, duplicate keys, UTF-8) and every
  section and number is validated with limits (train.lr in (0, 1], steps, batch size ...), one line each.
- Logs stay consistent: a resumed run's log.csv and TensorBoard drop the steps it replays; a new run never
  appends to an earlier run's files (--resume or --overwrite); resuming a finished run keeps its metrics.
"""

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from hostile import refused, run_x2ct, snapshot
from tiny_training import Pairs
from tiny_training import tiny as tiny_config
from x2ct.errors import InputError
from x2ct.training import checkpoint, train


def tiny(steps=2, every=2):
    return tiny_config(steps, every)


def sets():
    return Pairs(3), Pairs(1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-step run (checkpoint at step 2) made once; tests work on copies."""
    out = tmp_path_factory.mktemp("pristine") / "run"
    train(tiny(), out, progress="none", datasets=sets())
    return out


@pytest.fixture
def run(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def resume_argv(out: Path) -> list[str]:
    return ["train", "--config", str(out / "config.yaml"), "--out", str(out), "--resume", "--steps", "4",
            "--progress", "none"]


class RunsCode:
    """A pickle that runs code when loaded: it creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _state_of(out: Path) -> Path:
    return out / json.loads((out / checkpoint.LATEST).read_text())["folder"] / checkpoint.STATE


def test_a_checkpoint_state_is_safetensors_and_holds_no_pickle(run):
    state = _state_of(run)
    assert state.is_file() and not list(run.rglob("*.pt"))
    assert not state.read_bytes().startswith(b"\x80")  # no pickle protocol header


def _pickle_as_state(out, tmp_path):
    marker = tmp_path / "pwned"
    _state_of(out).write_bytes(pickle.dumps(RunsCode(marker)))
    return marker


def _pickle_as_old_state(out, tmp_path):
    marker = tmp_path / "pwned"
    state = _state_of(out)
    torch.save({"step": RunsCode(marker)}, state.with_name(checkpoint.PICKLED_STATE))
    state.unlink()
    return marker


def _random_bytes(out, tmp_path):
    _state_of(out).write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                             dtype=torch.uint8).numpy().tobytes())


def _truncated(out, tmp_path):
    state = _state_of(out)
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])


def _truncated_header(out, tmp_path):
    state = _state_of(out)
    state.write_bytes(state.read_bytes()[:20])


def _empty(out, tmp_path):
    _state_of(out).write_bytes(b"")


def _weights_not_state(out, tmp_path):
    state = _state_of(out)
    shutil.copy(state.with_name("model.safetensors"), state)


def _foreign_skeleton(out, tmp_path):
    from safetensors.torch import save_file

    save_file({"t0": torch.zeros(2)}, str(_state_of(out)),
              metadata={"x2ct.training_state": json.dumps({"version": 1, "state": {"step": {"$tensor": "t9"}}})})


def _deep_skeleton(out, tmp_path):
    from safetensors.torch import save_file

    deep = "[" * 100_000 + "]" * 100_000
    save_file({"t0": torch.zeros(2)}, str(_state_of(out)),
              metadata={"x2ct.training_state": '{"version": 1, "state": ' + deep + "}"})


def _wrong_shapes(out, tmp_path):
    from x2ct.training import statefile

    state = statefile.read(_state_of(out))
    state["model"] = {name: torch.zeros(3) for name in state["model"]}
    statefile.write(state, _state_of(out))


def _missing_keys(out, tmp_path):
    from x2ct.training import statefile

    statefile.write({"step": 2}, _state_of(out))


def _absurd_step(out, tmp_path):
    from x2ct.training import statefile

    state = statefile.read(_state_of(out))
    state["step"] = 10**12
    statefile.write(state, _state_of(out))


def _latest(text):
    def damage(out, tmp_path):
        (out / checkpoint.LATEST).write_bytes(text if isinstance(text, bytes) else text.encode())
    return damage


def _missing_folder(out, tmp_path):
    shutil.rmtree(out / "checkpoints")


def _missing_state(out, tmp_path):
    _state_of(out).unlink()


def _best(text):
    def damage(out, tmp_path):
        (out / checkpoint.BEST).write_text(text)
    return damage


HOSTILE = {
    "pickle as state": (_pickle_as_state, ["state.safetensors", "damaged"]),
    "old pickled state.pt": (_pickle_as_old_state, ["state.pt", "unpickling can run code", "another --out"]),
    "random bytes": (_random_bytes, ["state.safetensors", "damaged"]),
    "truncated": (_truncated, ["state.safetensors", "damaged"]),
    "truncated header": (_truncated_header, ["state.safetensors", "damaged"]),
    "empty": (_empty, ["state.safetensors", "damaged"]),
    "model weights as state": (_weights_not_state, ["no training-state record"]),
    "missing tensor": (_foreign_skeleton, ["state.safetensors", "damaged"]),
    "deep record": (_deep_skeleton, ["state.safetensors", "damaged"]),
    "wrong shapes": (_wrong_shapes, ["does not fit this run", "another --out"]),
    "missing keys": (_missing_keys, ["does not fit this run"]),
    "absurd step": (_absurd_step, ["does not fit this run", "out of range"]),
    "latest not json": (_latest("{step: 2"), ["latest.json", "not valid JSON", "checkpoints/step-0000002"]),
    "latest not utf-8": (_latest(b"\xff\xfe{}"), ["latest.json", "UTF-8"]),
    "latest a list": (_latest("[]"), ["latest.json", "damaged"]),
    "latest outside": (_latest('{"step": 2, "folder": "../../etc"}'), ["latest.json", "damaged", "step-0000002"]),
    "latest absolute": (_latest('{"step": 2, "folder": "/etc"}'), ["latest.json", "damaged"]),
    "latest wrong step": (_latest('{"step": 3, "folder": "checkpoints/step-0000002"}'), ["latest.json"]),
    "latest huge": (_latest('{"step": 2, "folder": "' + "x" * 100_000 + '"}'), ["latest.json"]),
    "latest to missing": (_latest('{"step": 9, "folder": "checkpoints/step-0000009"}'),
                          ["step-0000009", "does not exist", "checkpoints/step-0000002"]),
    "checkpoints gone": (_missing_folder, ["does not exist", "no complete checkpoint", "another --out"]),
    "state gone": (_missing_state, ["has no state.safetensors"]),
    "best damaged": (_best('{"step": "two"}'), ["best.json", "delete"]),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_run_folder_is_refused_in_one_line_and_left_unchanged(run, tmp_path, capfd, case):
    damage, words = HOSTILE[case]
    marker = damage(run, tmp_path)
    refused(resume_argv(run), capfd, run, "x2ct train: error:", *words)
    assert marker is None or not marker.exists(), "a pickle in the run folder was executed"


def test_a_pickle_in_the_run_folder_never_runs_in_a_real_process(run, tmp_path):
    marker = _pickle_as_old_state(run, tmp_path)
    before = snapshot(run)
    done = run_x2ct(resume_argv(run), timeout=300)
    err = done.stderr.decode()
    assert done.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "weights_only" not in err
    assert not marker.exists() and snapshot(run) == before


def test_nothing_to_resume(tmp_path, capfd):
    missing = tmp_path / "nowhere"
    argv = ["train", "--config", "x2ct-cnn-tiny", "--out", missing, "--resume", "--progress", "none"]
    refused(argv, capfd, tmp_path, "Nothing to resume", "drop --resume")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(["train", "--config", "x2ct-cnn-tiny", "--out", empty, "--resume"], capfd, tmp_path, "Nothing to resume")


def test_resume_and_overwrite_together_are_refused(run, capfd):
    refused(resume_argv(run) + ["--overwrite"], capfd, run, "pass only one")


def _stop_at(monkeypatch, step):
    """Make the run die (as a kill would) when it writes the checkpoint of ``step``."""
    real = checkpoint.save

    def save(out, at, *args):
        if at == step:
            raise KeyboardInterrupt
        return real(out, at, *args)

    monkeypatch.setattr(checkpoint, "save", save)


def _logged_steps(out):
    rows = (out / "log.csv").read_text().splitlines()
    return [int(row.split(",")[0]) for row in rows[1:]]


def test_resume_does_not_log_replayed_steps_twice(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    c = tiny(steps=4, every=2)
    c["evaluate"]["every"] = 1
    with monkeypatch.context() as patch:
        _stop_at(patch, 3)
        c["checkpoint"]["every"] = 1
        with pytest.raises(KeyboardInterrupt):
            train(c, out, progress="none", datasets=sets())
    assert _logged_steps(out) == [1, 2, 3] and json.loads((out / "latest.json").read_text())["step"] == 2
    train(c, out, resume=True, progress="none", datasets=sets())
    assert _logged_steps(out) == [1, 2, 3, 4]
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert all(len(row.split(",")) == len(header) for row in (out / "log.csv").read_text().splitlines())
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]


def test_a_log_row_cut_by_a_kill_is_dropped_on_resume(run):
    log = run / "log.csv"
    log.write_text(log.read_text() + "3,0.5,0.2")  # step 3 half-written, no newline: replayed by the resume
    train(tiny(steps=3), run, resume=True, progress="none", datasets=sets())
    assert _logged_steps(run) == [1, 2, 3]
    rows = [row.split(",") for row in log.read_text().splitlines()]
    assert {len(row) for row in rows} == {len(rows[0])}  # the cut row was not glued to the replayed one


def test_a_new_run_refuses_the_folder_of_a_failed_run(tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _stop_at(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(tiny(), out, progress="none", datasets=sets())
    assert _logged_steps(out) == [1, 2] and not (out / "latest.json").exists()
    before = snapshot(out)
    with pytest.raises(InputError, match=r"no checkpoint to resume .*log\.csv.*pass --overwrite"):
        train(tiny(), out, progress="none", datasets=sets())
    with pytest.raises(InputError, match=r"Nothing to resume.*add --overwrite"):
        train(tiny(), out, resume=True, progress="none", datasets=sets())
    assert snapshot(out) == before
    train(tiny(), out, overwrite=True, progress="none", datasets=sets())
    assert _logged_steps(out) == [1, 2]


def test_a_new_run_refuses_a_finished_run(run, capfd):
    argv = ["train", "--config", run / "config.yaml", "--out", run, "--progress", "none"]
    refused(argv, capfd, run, "already holds a training run", "--resume", "--overwrite")


def test_resuming_a_finished_run_keeps_its_metrics(run):
    card = json.loads((run / "model" / "model.json").read_text())
    assert card["metrics"]["honest.psnr_db"] > 0
    summary = train(tiny(), run, resume=True, progress="none", datasets=sets())
    assert summary["steps_this_run"] == 0
    assert json.loads((run / "model" / "model.json").read_text())["metrics"] == card["metrics"]
    assert summary["metrics"] == pytest.approx(card["metrics"], nan_ok=True)
