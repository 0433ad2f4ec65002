"""Training onto a disk that fills up: one "disk full" line, the last checkpoint intact, and the run resumes."""

import json
import subprocess

import pytest

from test_io_disk_full import full_disk  # noqa: F401 - the 1 MiB tmpfs fixture of the suite
from test_training_resume import sets, tiny
from x2ct.errors import X2CTError
from x2ct.modelfile import load_model
from x2ct.training import checkpoint, statefile, train


def test_a_full_disk_stops_training_in_one_line_and_the_run_resumes(full_disk):  # noqa: F811
    out = full_disk / "run"
    with pytest.raises(X2CTError, match=r"^disk full: could not write .*step-0000004") as caught:
        train(tiny(steps=6, every=2), out, progress="none", datasets=sets())  # a checkpoint is about 0.55 MiB
    assert len(str(caught.value).splitlines()) == 1
    assert json.loads((out / checkpoint.LATEST).read_text())["step"] == 2
    folder = out / "checkpoints" / "step-0000002"
    load_model(folder)
    assert statefile.read(folder / checkpoint.STATE)["step"] == 2
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    if subprocess.run(["mount", "-o", "remount,size=4m", str(full_disk)], capture_output=True).returncode:
        pytest.skip("the tmpfs cannot be grown here to check the resume")
    summary = train(tiny(steps=6, every=2), out, resume=True, progress="none", datasets=sets())
    assert summary["steps"] == 6 and summary["steps_this_run"] == 4
    assert [int(row.split(",")[0]) for row in (out / "log.csv").read_text().splitlines()[1:]] == [1, 2, 3, 4, 5, 6]
