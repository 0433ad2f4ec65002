"""`x2ct train` killed with SIGKILL mid-run resumes from its last complete checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

from x2ct.modelfile import load_model


def cli(*args):
    return [sys.executable, "-m", "x2ct", "train", "--config", "x2ct-cnn-tiny", *args]


def test_sigkill_then_resume(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(cli("--out", str(out), "--steps", "400", "--progress", "none"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (out / "latest.json").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.2)
    time.sleep(1.0)  # let it get into a later step (or a later checkpoint write)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    pointer = json.loads((out / "latest.json").read_text())
    model, card = load_model(out / pointer["folder"])  # complete and checksum-valid
    assert card["training"]["steps"] == pointer["step"] >= 2
    target = pointer["step"] + 2
    done = subprocess.run(cli("--out", str(out), "--resume", "--steps", str(target), "--progress", "json"),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["event"] == "start" and events[0]["step"] == pointer["step"]
    assert events[-1]["event"] == "done" and events[-1]["steps"] == target
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".partial")]
