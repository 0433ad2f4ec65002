"""The GPU benchmark section's machinery, on the CPU: carried training cases, the record, the report.

The measurements themselves need CUDA (``scripts/gpu-benchmark``); here the
parts around them are checked: cases written on one machine and trained on
another, a record that survives a failed or unfinished measurement, records
of two runs merged into the section, and ``x2ct benchmark`` keeping the saved
section on a machine without a GPU.
"""

import json
import time

import pytest
import torch

from x2ct import cli
from x2ct.benchmarks import gpu
from x2ct.benchmarks import training as bench
from x2ct.training import data

ENVIRONMENT = {"kind": "environment", "node": "gpu-box", "cpus": 16, "cpu": "x86_64", "python": "3.12.3",
               "torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": 91900, "gpu": "NVIDIA H200",
               "gpu_memory_bytes": 150109880320, "bf16_supported": True, "nccl": "2.28.9",
               "date": "2026-12-04T13:28:39"}
TRAINING = {"kind": "training", "name": "repeat-concat", "batch": 8, "bf16": True, "preset": "paper",
            "device": "cuda", "steps": 10, "warm_up": 3, "threads": 8, "parameters": 62188387,
            "critic_parameters": 41325793, "volume_size": 64, "view_size": 128, "k": 10, "seconds_per_step": 0.25,
            "steps_per_second": 4.0, "evaluate_and_checkpoint": "ok", "gpu_peak_bytes": 15.6e9,
            "label": "training repeat-concat batch 8 bf16"}


@pytest.fixture(scope="module")
def tiny_cases(tmp_path_factory):
    path = tmp_path_factory.mktemp("cases") / "cases.safetensors"
    bench.save_cases(str(path), ["x2ct-cnn", "henzler"], "tiny")
    return path


def test_carried_cases_are_the_simulated_first_case_in_float16_read_back_as_float32(tiny_cases):
    train, validation = bench.load_cases(str(tiny_cases), "x2ct-cnn", "tiny")
    expected = data.make(bench.benchmark_config("x2ct-cnn", "tiny"), bench._spec("x2ct-cnn", "tiny"))[0][0]
    assert len(train) == 1 and validation[0]["id"] == train[0]["id"] == expected["id"]
    for key in ("ct", "views", "angles", "hu_range"):
        assert train[0][key].dtype == torch.float32 and train[0][key].shape == expected[key].shape
        assert torch.allclose(train[0][key], expected[key], rtol=1e-3, atol=1e-3)
    with pytest.raises(KeyError, match="holds no cases for x2ct-gan at preset tiny"):
        bench.load_cases(str(tiny_cases), "x2ct-gan", "tiny")


def test_a_method_trains_on_carried_cases_at_a_chosen_batch(tiny_cases):
    result = bench.measure("henzler", "tiny", steps=1, warm_up=0, threads=torch.get_num_threads(), batch=2,
                           cases=str(tiny_cases))
    assert (result["batch"], result["cases"], result["bf16"]) == (2, "read from a file", False)  # bf16: CUDA only
    assert result["steps_per_second"] > 0


def test_the_training_loops_evaluation_and_checkpoint_are_checked_not_raised(tiny_cases, tmp_path):
    from x2ct.training.trainer import Trainer

    train, validation = bench.load_cases(str(tiny_cases), "x2ct-cnn", "tiny")
    trainer = Trainer(bench.benchmark_config("x2ct-cnn", "tiny"), tmp_path, progress="none",
                      datasets=(bench.Cases(train), bench.Cases(validation)))
    assert bench._check_loop(trainer) == "ok"
    trainer.val_set = bench.Cases([{**validation[0], "views": validation[0]["views"][:1]}])  # one view: refused
    assert bench._check_loop(trainer) != "ok"


def test_the_record_keeps_every_measurement_a_failure_and_what_the_budget_left_out(tmp_path, monkeypatch):
    def failing(limit):
        time.sleep(1.0)
        raise RuntimeError("CUDA error: an illegal memory access")

    def slow(limit):
        time.sleep(1.0)
        return {"kind": "nccl", "backend": "nccl", "world": 1, "result": "ok"}

    monkeypatch.setattr(gpu, "environment", lambda: dict(ENVIRONMENT))
    monkeypatch.setattr(gpu, "plan", lambda cases, views: [("nccl", slow), ("projector", failing),
                                                            ("training x", slow)])
    record = tmp_path / "record.jsonl"
    gpu.measure(record, budget=11.5)  # 10 s must be left to start one: the third is skipped
    lines = gpu.read_record(record)
    assert [r["kind"] for r in lines] == ["environment", "nccl", "failed", "skipped"]
    assert lines[2]["error"] == "RuntimeError: CUDA error: an illegal memory access"
    assert lines[3] == {"kind": "skipped", "label": "training x", "why": "the 11.5 s budget was spent"}
    record.unlink()
    gpu.measure(record, budget=60, only=["training x"])
    assert [r.get("label") for r in gpu.read_record(record)] == [None, "training x"]


def test_two_runs_merge_into_the_section_under_the_gpu_machines_header(tmp_path):
    first = [ENVIRONMENT, {"kind": "training", "name": "henzler", "batch": 1, "bf16": True,
                           "error": "over the 12.3 s time limit", "label": "training henzler"},
             {"kind": "skipped", "label": "training x2ct-gan", "why": "the 420 s budget was spent"}, TRAINING]
    second = [{**ENVIRONMENT, "date": "2026-12-04T13:37:43"},
              {**TRAINING, "name": "henzler", "batch": 1, "label": "training henzler", "steps_per_second": 28.0},
              {"kind": "skipped", "label": "training repeat-concat batch 8 bf16", "why": "budget"}]
    paths = []
    for name, run in (("a.jsonl", first), ("b.jsonl", second)):
        paths.append(tmp_path / name)
        paths[-1].write_text("".join(json.dumps(r) + "\n" for r in run))
    section = gpu.report(paths, tmp_path / "sections", tmp_path / "BENCHMARKS.md")
    text = section.read_text()
    assert "- machine: gpu-box, 16 CPU cores (x86_64), GPU: NVIDIA H200, 140 GiB" in text
    assert "- runs: 2 on machines of this kind, merged" in text and "<!-- measured 2026-12-04T13:28:39" in text
    assert "| henzler | 1 | bf16 | 64³ / 128² |" in text and "| 28.000 |" in text  # the rerun replaced the cut one
    assert "| repeat-concat | 8 | bf16 | 64³ / 128² | 62.19 M (41.33 M) | 4.000 (≥ 0.496: 0.35 h for 5001 steps)" \
        in text  # a later 'skipped' does not replace a measurement
    assert "Not measured (training x2ct-gan): the 420 s budget was spent." in text
    assert text in (tmp_path / "BENCHMARKS.md").read_text()
    (tmp_path / "c.jsonl").write_text(json.dumps({**ENVIRONMENT, "gpu": "NVIDIA A100"}) + "\n")
    with pytest.raises(ValueError, match="different GPUs"):
        gpu.report([paths[0], tmp_path / "c.jsonl"], tmp_path / "sections", tmp_path / "BENCHMARKS.md")
    (tmp_path / "d.jsonl").write_text(json.dumps(TRAINING) + "\n")
    with pytest.raises(ValueError, match="holds no environment record"):
        gpu.report([tmp_path / "d.jsonl"], tmp_path / "sections", tmp_path / "BENCHMARKS.md")


def test_a_child_cut_by_the_budget_is_not_reported_as_too_slow():
    cut = {"kind": "training", "name": "x2ct-cnn", "batch": 1, "bf16": True, "error": "over the 15.8 s time limit"}
    slow = {**cut, "error": f"over the {gpu.CHILD_LIMIT:g} s time limit"}
    rows = gpu._training_rows([cut, slow])
    assert "not measured: the run's time budget ended during it (16 s were left)" in rows[2]
    assert f"over the {gpu.CHILD_LIMIT:g} s time limit" in rows[3]


def test_import_times_lists_the_slowest_top_level_packages():
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:      1000 |    6000000 |   torch\n"
              "import time:       500 |    2000000 |       transformers\n"
              "import time:       700 |   16000000 |     monai\n"
              "import time:       300 |    9000000 |   monai.networks\n"
              "import time:        10 |      40000 |   _io\n"
              "note: device: cuda as requested\n")
    assert gpu.import_times(stderr, top=2) == [["monai", 16.0], ["torch", 6.0]]


def test_x2ct_benchmark_keeps_the_saved_gpu_section_on_a_machine_without_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = tmp_path / "sections"
    folder.mkdir()
    (folder / "gpu.md").write_text("## GPU: saved\n")
    assert cli.main(["benchmark", "--only", "gpu", "--results", str(folder), "--report",
                     str(tmp_path / "BENCHMARKS.md")]) == 0
    assert "skipped gpu: it measures a GPU and this machine has none" in capsys.readouterr().out
    assert (folder / "gpu.md").read_text() == "## GPU: saved\n"
    assert "## GPU: saved" in (tmp_path / "BENCHMARKS.md").read_text()


def test_a_missing_or_damaged_record_is_one_line_naming_it(tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(ENVIRONMENT) + "\n" + '{"kind": "training", "name"\n')
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"kind": "environment", "gpu": "NVIDIA H200"}) + "\n")
    for record, words in ((tmp_path / "none.jsonl", "No such file"), (broken, "broken.jsonl, line 2: not a JSON"),
                          (partial, "its environment record lacks bf16_supported, cpu, cpus")):
        assert gpu.main(["--report", str(record)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("x2ct gpu benchmark: error: ") and words in error and "Traceback" not in error
