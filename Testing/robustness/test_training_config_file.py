"""A run's config.yaml: written atomically, only when it changed, so a failed write never breaks the run."""

import json
import signal

import pytest

from hostile import run_x2ct
from test_training_resume import sets
from x2ct.training import config as cfg
from x2ct.training import train

try:
    import resource
except ImportError:  # Windows: no file-size limit to fail a write with
    resource = None

HEADER = "# Written by hand: this comment must survive.\n"


def test_config_yaml_is_not_rewritten_when_unchanged(tmp_path):
    """The Slicer module writes config.yaml (with a header) before the run: the run keeps that file as it is."""
    out = tmp_path / "run"
    out.mkdir()
    path = out / "config.yaml"
    path.write_text(HEADER + "method: x2ct-cnn\npreset: tiny\nloss:\n  mse: 1.0\ntrain:\n  steps: 2\n"
                    "evaluate:\n  every: 2\ncheckpoint:\n  every: 2\n")
    written = (path.read_bytes(), path.stat().st_mtime_ns)
    train(cfg.load(path), out, progress="none", datasets=sets())
    train(cfg.load(path), out, resume=True, progress="none", datasets=sets())  # a finished run: nothing new
    assert (path.read_bytes(), path.stat().st_mtime_ns) == written
    train(cfg.load(path), out, resume=True, steps=3, progress="none", datasets=sets())
    assert cfg.load(path).train.steps == 3  # changed: rewritten, complete
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _limited(max_bytes):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return limit


@pytest.mark.skipif(resource is None or not hasattr(signal, "SIGXFSZ"),
                    reason="needs a POSIX file-size limit")
def test_a_config_write_that_fails_midway_leaves_the_run_resumable(tmp_path):
    """``x2ct train --resume --steps 3`` must rewrite config.yaml (steps changed); a file-size limit makes
    that write fail after a few hundred bytes, as a kill or a full disk would. The old config.yaml stays
    whole, nothing is left beside it, the error is one line, and the run resumes afterwards."""
    out = tmp_path / "run"
    train(cfg.load("x2ct-cnn-tiny"), out, steps=2, progress="none", datasets=sets())
    config = out / "config.yaml"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert len(before["config.yaml"]) > 300
    argv = ["train", "--config", config, "--out", out, "--resume", "--steps", "3", "--progress", "none"]
    failed = run_x2ct(argv, timeout=300, preexec_fn=_limited(300))
    err = failed.stderr.decode()
    assert failed.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "config.yaml" in lines[0] and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    summary = train(cfg.load(config), out, resume=True, steps=3, progress="none", datasets=sets())
    assert summary["steps"] == 3 and summary["steps_this_run"] == 1
    assert json.loads((out / "latest.json").read_text())["step"] == 3
