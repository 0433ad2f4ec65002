"""The end-to-end benchmark section's machinery (timings are measured, never asserted)."""

import re
import sys

import pytest

from x2ct import catalog, inference, sampledata
from x2ct.benchmarks import endtoend as bench


def _manifest(*views_required):
    entry = {"folder": "m", "sha256": "0" * 64, "description": "d", "training_data": "t", "metrics": {},
             "licence": "l", "intended_use": "u"}
    return {"catalog_version": 1,
            "models": [{**entry, "id": f"model-{n}", "views_required": list(views)}
                       for n, views in enumerate(views_required)]}


def test_default_model_is_the_first_shipped_two_view_model_else_the_baseline(monkeypatch):
    monkeypatch.setattr(catalog, "read_manifest", lambda: _manifest(["frontal"]))
    assert bench.default_model()[0] == bench.FALLBACK_MODEL == "back-projection"
    monkeypatch.setattr(catalog, "read_manifest",
                        lambda: _manifest(["frontal"], ["frontal", "lateral"], ["frontal", "lateral"]))
    model, why = bench.default_model()
    assert model == "model-1" and "shipped" in why


def test_a_child_reports_its_own_memory_and_is_killed_at_the_limit(tmp_path, monkeypatch):
    (tmp_path / "allocate.py").write_text("import sys\nblock = bytearray(int(sys.argv[1]))\n"
                                          "block[::4096] = b'x' * len(block[::4096])\nprint('done')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    ballast = bytearray(400_000_000)  # this process's memory must not count as the child's
    ballast[::4096] = b"x" * len(ballast[::4096])
    big = bench.run_child(bench.python_command("allocate", "300000000"), "cpu")
    small = bench.run_child(bench.python_command("allocate", "1000"), "cpu")
    assert big["returncode"] == small["returncode"] == 0 and small["stdout"] == "done\n"
    assert bench.PEAK_MARKER not in big["stderr"] + small["stderr"]
    assert 300e6 < big["peak_rss_bytes"] < 400e6 and small["peak_rss_bytes"] < 100e6
    failed = bench.run_child([sys.executable, "-c", "import sys; sys.exit('error: no such file')"], "cpu")
    assert failed["returncode"] == 1 and bench._failure(failed, 60) == "exit code 1: error: no such file"
    slow = bench.run_child([sys.executable, "-c", "import time; time.sleep(30)"], "cpu", time_limit=1)
    assert slow["killed"] and slow["seconds"] < 20 and bench._failure(slow, 1) == "over the 1 s time limit"
    del ballast


def test_the_table_states_goals_failures_and_a_missing_gpu():
    cli = {"seconds": 12.3, "runs": [12.3, 12.0, 13.1], "peak_rss_bytes": 0.5e9, "output_shape": [128] * 3,
           "output_spacing": [2.5] * 3}
    inner = {"load": 0.2, "first": 1.5, "warm": 1.0, "device": "cpu"}
    rows = [{"device": "cpu", "cli": cli, "inprocess": inner, "old": {**cli, "seconds": 20.0, "runs": [20.0, 21.5]},
             "spare": {"seconds": 2.0, "runs": [2.0, 1.5, 3.0]}},
            {"device": "cuda", "cli": {**cli, "seconds": 0.9}, "inprocess": {**inner, "device": "cuda"}}]
    text = bench.render(rows, "m", "why", 3, quick=False, gpu=True)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[1] == ("| cpu | m | 12.30 | 12.30 / 12.00 / 13.10 | 0.50 | 128×128×128 of 2.5 mm | 0.200 | 1.500 "
                        "| 1.000 | no (≤ 10 s) | 20.00 (20.00 / 21.50) | 2.00 (2.00 / 1.50 / 3.00) ≤ 2.5 s |")
    assert lines[2].startswith("| cuda | m | 0.90 |") and lines[2].endswith("| yes (< 1 s) | – | – |")
    assert "no GPU" not in text

    rows = [{"device": "cpu", "cli": {"error": "exit code 1: error: bad | file"}, "inprocess": inner,
             "spare": {"error": "exit code 2: x2ct reconstruct: error: a | b"}}]
    text = bench.render(rows, "m", "why", 1, quick=True, gpu=False)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| cpu | m | exit code 1: error: bad / file |")
    assert lines[1].endswith("no (failed) | – | exit code 2: x2ct reconstruct: error: a / b |")
    assert lines[2].startswith("| GPU | m | no GPU on this machine (see section GPU) |")
    assert "Median of 1 run(s)" in text and "quick run" in text


@pytest.mark.skipif(not sampledata.is_cached("chest-ct"), reason="the chest CT sample is not cached")
def test_quick_section_reconstructs_the_chest_drrs_end_to_end():
    text = bench.run(quick=True)
    model, _ = bench.default_model()
    (row,) = [line for line in text.splitlines() if line.startswith("| cpu |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == model
    seconds, peak = float(cells[2]), float(cells[4])
    assert seconds > 0 and 0.05 < peak < 16  # Python + torch at least, far from the machine's memory
    if model == "back-projection":
        size = catalog.BUILTIN[model][2]
        state = inference.output_state("x2ct", size)
        assert cells[5] == f"{size}×{size}×{size} of {state.spacing[0]:g} mm"
    load, first, warm = (float(re.match(r"[0-9.]+", cell).group()) for cell in cells[6:9])
    assert 0 <= load and 0 < warm and 0 < first
    assert re.fullmatch(r"(yes|no) \(≤ 10 s\)", cells[9])
    assert re.fullmatch(r"[0-9.]+ \([0-9.]+\) (≤|>) 2.5 s", cells[11]), cells[11]
    assert f"--model {model}" in text
