"""GPU: training and inference at paper presets, and the GPU-only checks (issue 14, point 5).

The questions: does Repeat-and-Concatenate's 5,001-step schedule fit in
2.8 h on one H100-class GPU (at least 0.496 steps/s at its batch of 8 and
64^3)? Is a reconstruction's network time under 0.1 s and the whole
``x2ct reconstruct`` command under 1 s? Do bf16 autocast, the training
loop's evaluation and checkpoints, the CUDA projector and NCCL work?

Every measurement is a fresh child process (the other sections' own
children: ``x2ct.benchmarks.training``, ``.models``, ``.endtoend``), and
each result is appended to a JSON-lines record file as soon as it is known,
so a run cut short still reports what it measured. A machine that cannot
simulate the training cases or render the end-to-end inputs (no sample CTs,
no network) is handed them as files: ``scripts/gpu-benchmark prepare``
writes them here, ``scripts/gpu-benchmark measure`` runs there, and
``scripts/gpu-benchmark report`` turns the record into this section.

    x2ct benchmark --only gpu                              # on a GPU machine with the sample data
    python -m x2ct.benchmarks.gpu --measure RECORD.jsonl [--cases F] [--views DIR] [--budget S]
    python -m x2ct.benchmarks.gpu --report RECORD.jsonl [MORE.jsonl]   # docs/benchmarks/gpu.md, BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from x2ct.benchmarks import child_result, report_child

TITLE = "GPU: training and inference at paper presets"
NEEDS_GPU = True  # `x2ct benchmark` skips this section on a machine without CUDA and keeps its saved result

TRAIN_STEPS, TRAIN_WARM_UP = 10, 3  # GPU steps are short: more of them, after cuDNN's first-call tuning
GOAL_BATCH = 8  # Repeat-and-Concatenate's batch (its paper)
INFERENCE_REPEATS = 5
DEFAULT_BUDGET = 480.0  # seconds after which no further measurement starts
CHILD_LIMIT = 240.0  # seconds per child process at most
PROJECTOR_TEST = "Testing/core/test_physics_projector.py::test_cuda_matches_cpu"  # skipped without CUDA


def cpu_threads() -> int:
    """CPU threads of a training child: a GPU server's cores feed its data and augmentation (at most 8)."""
    return max(1, min(8, os.cpu_count() or 1))


# --- the measurements (on the GPU machine) ------------------------------------------------------


def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"kind": "environment", "node": platform.node(), "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory if cuda else None,
            "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def nccl_check() -> dict:
    """Join an NCCL process group of one (this GPU) and all-reduce and broadcast through it.

    One GPU allows one rank (NCCL refuses two ranks on one device), so this
    checks that NCCL initialises and its collectives run here; it is not a
    multi-GPU measurement.
    """
    import torch
    import torch.distributed as dist

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        flat = torch.arange(4, dtype=torch.float32, device="cuda")
        dist.all_reduce(flat)
        box = [{"rank": 0}]
        dist.broadcast_object_list(box, src=0)
        ok = torch.equal(flat.cpu(), torch.arange(4, dtype=torch.float32)) and box == [{"rank": 0}]
        return {"kind": "nccl", "backend": dist.get_backend(), "world": dist.get_world_size(),
                "result": "ok" if ok else f"wrong all-reduce result {flat.tolist()}"}
    finally:
        dist.destroy_process_group()


def projector_test(time_limit: float) -> dict:
    """The test suite's CUDA test of the projector (CPU and GPU line integrals and gradients agree)."""
    if not Path(PROJECTOR_TEST.split("::")[0]).is_file():
        return {"kind": "projector", "result": "skipped: the tests are not in this folder"}
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", PROJECTOR_TEST, "-q", "-p", "no:cacheprovider"],
                              capture_output=True, text=True, timeout=time_limit)
    except subprocess.TimeoutExpired:
        return {"kind": "projector", "result": f"over the {time_limit:g} s time limit"}
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    result = "failed" if done.returncode != 0 else "ok" if "1 passed" in summary else "not run"
    return {"kind": "projector", "result": result, "summary": summary}


def import_times(stderr: str, top: int = 8) -> list[list]:
    """[package, cumulative seconds] of the top-level packages whose import took longest (``-X importtime``).

    A package's time includes what it imported first (monai's includes torchvision's when MONAI pulled it in).
    """
    found = {}
    for line in stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if "." not in name and not name.startswith("_"):
            found[name] = max(found.get(name, 0.0), int(parts[1]) / 1e6)
    return [[name, round(seconds, 2)] for name, seconds in sorted(found.items(), key=lambda x: -x[1])[:top]]


def plan(cases: str | None, views: Path | None) -> list[tuple[str, object]]:
    """The measurements in the order they run: (label, function returning one record)."""
    from x2ct import models
    from x2ct.benchmarks import endtoend, training
    from x2ct.benchmarks import models as inference

    jobs = [("nccl", lambda limit: child_result("x2ct.benchmarks.gpu", ["--nccl"], {"kind": "nccl"}, limit, 2)),
            ("projector", projector_test)]

    def train(method: str, batch: int = 1, bf16: bool = True):
        def job(limit: float) -> dict:
            result = training.measure_in_child(method, "paper", "cuda", TRAIN_STEPS, limit, batch=batch, bf16=bf16,
                                               cases=cases, threads=cpu_threads(), warm_up=TRAIN_WARM_UP)
            return {"kind": "training", "name": method, "batch": batch, "bf16": bf16, **result}
        return job

    def infer(name: str, preset: str, same: list[str]):
        def job(limit: float) -> dict:
            result = inference.measure_in_child(name, preset, "cuda", INFERENCE_REPEATS, limit)
            return {"kind": "inference", "name": name, "preset": preset, "same": same, **result}
        return job

    def inference_jobs(preset: str) -> list:
        groups: dict[tuple[str, str], list[str]] = {}  # names building one network, the first measured
        for (name, _), first in inference.same_network([(name, preset) for name in models.names()]).items():
            groups.setdefault(first, []).append(name)
        return [(f"inference {names[0]} {preset}", infer(names[0], preset, names[1:])) for names in groups.values()]

    def inputs(tmp: str) -> dict[str, Path]:
        return {"frontal": views / "chest-drr-frontal.nrrd", "lateral": views / "chest-drr-lateral.nrrd"} \
            if views is not None else endtoend.write_inputs(Path(tmp))

    def imports(limit: float) -> dict:
        """Where the end-to-end command's start-up goes: ``python -X importtime -m x2ct reconstruct ...``."""
        model, _ = endtoend.default_model()
        with tempfile.TemporaryDirectory(prefix="x2ct-gpu-") as tmp:
            command = [sys.executable, "-X", "importtime", "-m", "x2ct",
                       *endtoend.reconstruct_arguments(inputs(tmp), model, "cuda", Path(tmp) / "CT.nrrd")]
            began = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
            return {"kind": "imports", "returncode": done.returncode, "seconds": time.perf_counter() - began,
                    "packages": import_times(done.stderr)}

    def end_to_end(limit: float) -> dict:
        model, why = endtoend.default_model()
        with tempfile.TemporaryDirectory(prefix="x2ct-gpu-") as tmp:
            paths = endtoend.measure_paths(inputs(tmp), model, "cuda", Path(tmp), 3, min(limit, 60.0))  # per child
            return {"kind": "endtoend", "model": model, "why": why, **paths}

    # The goals first (a run cut short keeps them): R&C at batch 8, paper inference, end to end.
    jobs += [("training repeat-concat batch 8 bf16", train("repeat-concat", GOAL_BATCH)),
             ("training repeat-concat batch 8 fp32", train("repeat-concat", GOAL_BATCH, bf16=False))]
    jobs += inference_jobs("paper")
    jobs += [("end to end", end_to_end), ("imports", imports)]
    jobs += [(f"training {method}", train(method)) for method in training.trainable()]
    jobs += inference_jobs("small")
    return jobs


def measure(record: Path, cases: str | None = None, views: Path | None = None,
            budget: float = DEFAULT_BUDGET, only: list[str] | None = None) -> list[dict]:
    """Run the measurements of ``plan`` while ``budget`` seconds last; append each result to ``record``.

    ``only``: just the measurements with these labels (e.g. ``training henzler``).
    """
    started = time.perf_counter()
    results = []

    def keep(result: dict) -> None:
        results.append(result)
        with open(record, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")

    keep(environment())
    for label, job in plan(cases, views):
        if only and label not in only:
            continue
        left = budget - (time.perf_counter() - started)
        if left < 10:
            keep({"kind": "skipped", "label": label, "why": f"the {budget:g} s budget was spent"})
            continue
        began = time.perf_counter()
        print(f"x2ct gpu benchmark: {label} ...", flush=True)
        try:
            result = job(min(CHILD_LIMIT, left))
        except Exception as error:  # one broken measurement must not lose the others
            result = {"kind": "failed", "label": label, "error": f"{type(error).__name__}: {error}"[:300]}
        keep({**result, "label": label, "wall_seconds": round(time.perf_counter() - began, 1)})
    return results


# --- the Markdown section -----------------------------------------------------------------------


def _gpu_peak(result: dict) -> str:
    peak = result.get("gpu_peak_bytes")
    return "–" if peak is None else f"{peak / 1e9:.2f}"


def _error(result: dict) -> str | None:
    """The failure as a table cell; a child killed at a limit shorter than CHILD_LIMIT was cut by the budget."""
    if "error" not in result:
        return None
    found = re.fullmatch(r"over the ([0-9.]+) s time limit", result["error"])
    if found and float(found.group(1)) < CHILD_LIMIT - 1:
        return f"not measured: the run's time budget ended during it ({float(found.group(1)):.0f} s were left)"
    return result["error"].replace("|", "/")


def _training_rows(records: list[dict]) -> list[str]:
    from x2ct.benchmarks.training import GOAL_HOURS, GOAL_STEPS

    header = ["method", "batch", "autocast", "volume / views", "parameters (critic)", "steps/s", "s/step",
              "GPU peak (GB)", "evaluation and checkpoint on the GPU"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    needed = GOAL_STEPS / (GOAL_HOURS * 3600)
    for r in records:
        precision = "bf16" if r.get("bf16", True) else "none (fp32)"
        error = _error(r)
        if error:
            lines.append(f"| {r['name']} | {r['batch']} | {precision} | {error} | | | | | |")
            continue
        critic = f" ({r['critic_parameters'] / 1e6:.2f} M)" if r["critic_parameters"] else ""
        rate = f"{r['steps_per_second']:.3f}"
        if r["name"] == "repeat-concat" and r["batch"] == GOAL_BATCH:
            rate += f" ({'≥' if r['steps_per_second'] >= needed else '<'} {needed:.3f}: " \
                    f"{GOAL_STEPS / r['steps_per_second'] / 3600:.2f} h for {GOAL_STEPS} steps)"
        lines.append(f"| {r['name']} | {r['batch']} | {precision} | {r['volume_size']}³ / {r['view_size']}² | "
                     f"{r['parameters'] / 1e6:.2f} M{critic} | {rate} | {r['seconds_per_step']:.3f} | "
                     f"{_gpu_peak(r)} | {r.get('evaluate_and_checkpoint', '–')} |")
    return lines


def _inference_rows(records: list[dict]) -> list[str]:
    from x2ct.benchmarks.models import GOAL_GPU_SECONDS, SIZE, _seconds

    header = ["model", "preset", "parameters", "views", "forward (s)", f"to {SIZE}³ (s)", "GPU peak (GB)",
              f"forward < {GOAL_GPU_SECONDS:g} s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        name = r["name"] + (f" (= {', '.join(r['same'])})" if r.get("same") else "")
        error = _error(r)
        if error:
            lines.append(f"| {name} | {r['preset']} | {error} | | | | | |")
            continue
        lines.append(f"| {name} | {r['preset']} | {r['parameters'] / 1e6:.2f} M | {r['views']} × {r['view_size']}² | "
                     f"{_seconds(r, 'seconds', 4)} | {_seconds(r, 'seconds_total', 4)} | "
                     f"{_gpu_peak(r)} | {'yes' if r['seconds'] < GOAL_GPU_SECONDS else 'no'} |")
    return lines


def _sampling_notes(records: list[dict]) -> list[str]:
    """A sampled model's time is its sampling steps' (one network pass each): say how many."""
    from x2ct.benchmarks.models import blueprint

    notes = []
    for r in records:
        model = blueprint(r["name"], r["preset"])
        if getattr(model, "sample_steps", None):
            notes.append(f"{r['name']} {r['preset']}: {model.sample_steps} sampling steps (one network pass each) "
                         f"per sample, {getattr(model, 'samples', None) or 1} sample(s).")
    return notes + [""] if notes else []


def _end_to_end_rows(record: dict) -> list[str]:
    from x2ct.benchmarks.endtoend import GOAL_GPU_SECONDS, _runs_cell

    header = ["model", "end to end (s)", "model load (s)", "reconstruct, first (s)", "reconstruct, warm (s)",
              "in a spare process (s)", f"end to end < {GOAL_GPU_SECONDS:g} s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cli, inner = record["cli"], record["inprocess"]
    parts = [record["model"], _runs_cell(cli)]
    parts += [_error(inner), "", ""] if "error" in inner else \
        [f"{inner['load']:.3f}", f"{inner['first']:.3f}", f"{inner['warm']:.3f}"
         + ("" if inner["device"] == "cuda" else f" (ran on {inner['device']})")]
    parts.append(_runs_cell(record["spare"]))
    parts.append("no (failed)" if "error" in cli else ("yes" if cli["seconds"] < GOAL_GPU_SECONDS else "no"))
    return lines + ["| " + " | ".join(parts) + " |"]


def header(environment_record: dict) -> str:
    """The machine the record was measured on (not the one rendering it)."""
    e = environment_record
    memory = f", {e['gpu_memory_bytes'] / 2**30:.0f} GiB" if e.get("gpu_memory_bytes") else ""
    return (f"- machine: {e['node'] or 'unknown'}, {e['cpus']} CPU cores ({e['cpu']}), GPU: {e['gpu']}{memory}\n"
            f"- software: Python {e['python']}, torch {e['torch']}, CUDA {e['cuda']}, cuDNN {e['cudnn']}, "
            f"NCCL {e['nccl']}\n- date: {e['date'][:10]}\n")


def render(records: list[dict]) -> str:
    from x2ct.benchmarks.training import GOAL_HOURS, GOAL_STEPS

    by_kind: dict[str, list[dict]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    parts = []
    if by_kind.get("training"):
        parts += ["Training at preset paper (`python -m x2ct.benchmarks.training --one METHOD paper --device cuda "
                  f"--batch B --steps {TRAIN_STEPS} --warm-up {TRAIN_WARM_UP}`):", ""] + \
            _training_rows(by_kind["training"]) + [""]
    if by_kind.get("inference"):
        parts += ["Inference, batch 1 (`python -m x2ct.benchmarks.models --one NAME PRESET --device cuda`):", ""] + \
            _inference_rows(by_kind["inference"]) + [""] + _sampling_notes(by_kind["inference"])
    if by_kind.get("endtoend"):
        parts += ["End to end, `x2ct reconstruct --device cuda` (`x2ct.benchmarks.endtoend`'s measurements):", ""] + \
            _end_to_end_rows(by_kind["endtoend"][0]) + [""]
    for r in by_kind.get("imports", []):
        packages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in r["packages"])
        parts += [f"Where the end-to-end command's time goes: `python -X importtime -m x2ct reconstruct ...` took "
                  f"{r['seconds']:.1f} s (importtime's own bookkeeping included); the slowest top-level imports "
                  f"(cumulative, each including what it imported first): {packages}." + (
                      f" ({r['how']})" if r.get("how") else ""), ""]
    checks = []
    for r in by_kind.get("nccl", []):
        checks.append("NCCL: " + (_error(r) or f"{r['result']} (backend {r['backend']}, a process group of "
                                                f"{r['world']}: one GPU allows one rank, so multi-GPU training "
                                                "is not measured)"))
    for r in by_kind.get("projector", []):
        checks.append(f"CUDA projector test (`{PROJECTOR_TEST}`): "
                      f"{r['result']}" + (f" ({r['summary']})" if r.get("summary") else ""))
    environment_record = (by_kind.get("environment") or [{}])[0]
    if environment_record:
        checks.append(f"bf16 supported by the GPU: {'yes' if environment_record['bf16_supported'] else 'no'}; "
                      "the training rows say which ran under bf16 autocast.")
    checks += [f"Not measured ({r['label']}): {r['why']}." for r in by_kind.get("skipped", [])]
    checks += [f"Failed to run ({r['label']}): {r['error']}." for r in by_kind.get("failed", [])]
    notes = [
        "Command: `scripts/gpu-benchmark measure RECORD.jsonl` on the GPU machine, then `scripts/gpu-benchmark "
        "report RECORD.jsonl`; on a GPU machine with the sample data, `x2ct benchmark --only gpu` does both. "
        "`x2ct benchmark` skips this section on a machine without CUDA and keeps the saved result.",
        f"Training: each method's paper config at preset paper on CUDA, bf16 autocast unless the row says fp32; "
        f"{TRAIN_WARM_UP} untimed steps (cuDNN's first-call tuning, allocator), then the mean of {TRAIN_STEPS} timed "
        "steps (augmentation on the CPU, forward, losses, backward, optimiser, EMA). The cases are the CPU "
        "section's simulated pseudo-patients (the first one, drawn at every step), written by "
        "`python -m x2ct.benchmarks.training --save-cases` and stored in float16. After the timing, one "
        "evaluation and one checkpoint ran on the GPU (untimed): the last column says whether they worked. "
        "code-diffusion: its prior stage, as in the CPU section.",
        f"Goal (issue 14): Repeat-and-Concatenate's {GOAL_STEPS}-step schedule in under {GOAL_HOURS:g} h, "
        f"i.e. at least {GOAL_STEPS / (GOAL_HOURS * 3600):.3f} steps/s at batch {GOAL_BATCH}, 64³ (its 10 timed "
        "steps include one critic update: k = 10).",
        f"Inference: the models section's child on CUDA: batch 1, two 128² views resized to the model's view size, "
        f"one warm-up then the median of {INFERENCE_REPEATS} passes; random weights of the preset's shapes (the "
        "time does not depend on the values). Goal: network time under 0.1 s.",
        "End to end: the endtoend section's three measurements with `--device cuda`: the whole command as a child "
        "process (interpreter start, imports, reading the views, loading and checking the model, inference, "
        "writing the CT; median of 3), model load and `inference.reconstruct` inside one process, and the "
        "command handed to a spare process whose imports are done (the Slicer module's path). 'model load' in a "
        "fresh process includes the first import of the network code (MONAI and what it pulls in). Inputs: the "
        "sample CT's frontal and lateral X2CT-mode DRRs (written by `scripts/gpu-benchmark prepare`).",
    ]
    threads = sorted({r["threads"] for r in by_kind.get("training", []) if "threads" in r})
    if threads:
        notes.append(f"Training children used {'/'.join(map(str, threads))} CPU threads (data, augmentation); "
                     "inference children 2, as the models section's.")
    return "\n".join(parts) + "\nChecks:\n\n" + "\n".join(f"- {c}" for c in checks) + "\n\n" + \
        "\n".join(f"- {n}" for n in notes) + "\n"


def read_record(path: Path) -> list[dict]:
    """The JSON lines of a ``--measure`` record; ValueError naming the line that is not one."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not a JSON record ({error.msg})") from None
        if not isinstance(record, dict) or "kind" not in record:
            raise ValueError(f"{path}, line {number}: not a record of `--measure` (no 'kind')")
        records.append(record)
    return records


def merge(records: list[list[dict]]) -> list[dict]:
    """Several runs' records as one: a later measurement of a label replaces an earlier one, unless the later
    was skipped; the first run's environment stays first (the header), the others' are dropped."""
    merged: dict[str, dict] = {}
    environments = [r for run in records for r in run if r["kind"] == "environment"]
    for run in records:
        for r in run:
            if r["kind"] == "environment" or (r["kind"] == "skipped" and r["label"] in merged):
                continue
            merged[r["label"]] = r
    return environments[:1] + list(merged.values())


def report(records: list[Path], folder: Path = Path("docs/benchmarks"),
           report_file: Path = Path("BENCHMARKS.md")) -> Path:
    """Write this section from records measured elsewhere, under that machine's header; regenerate the report.

    Records of several runs (``--only`` reruns of what a first run did not finish) are merged in order.
    """
    from x2ct import benchmarks

    runs = [read_record(path) for path in records]
    for path, run in zip(records, runs):
        environment_record = next((r for r in run if r["kind"] == "environment"), None)
        if environment_record is None:
            raise ValueError(f"{path} holds no environment record: not a record of `--measure`")
        missing = sorted(set(environment()) - set(environment_record))
        if missing:
            raise ValueError(f"{path}: its environment record lacks {', '.join(missing)}")
    gpus = {r["gpu"] for run in runs for r in run if r["kind"] == "environment"}
    if len(gpus) > 1:
        raise ValueError(f"The records were measured on different GPUs ({', '.join(sorted(map(str, gpus)))}); "
                         "report them one at a time.")
    merged = merge(runs)
    seconds = sum(r.get("wall_seconds", 0) for r in merged)
    runs_note = "" if len(runs) == 1 else f"- runs: {len(runs)} on machines of this kind, merged\n"
    target = benchmarks.save_section("gpu", TITLE, render(merged), folder, header(merged[0]) + runs_note, seconds,
                                     measured=merged[0]["date"])
    benchmarks.write_report(folder, report_file)
    return target


def run(quick: bool = False) -> str:
    """``x2ct benchmark --only gpu`` on a machine with CUDA and the sample data: measure, then render."""
    with tempfile.TemporaryDirectory(prefix="x2ct-gpu-") as tmp:
        record = Path(tmp) / "record.jsonl"
        return render(measure(record, budget=120.0 if quick else DEFAULT_BUDGET))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x2ct.benchmarks.gpu", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--measure", type=Path, metavar="RECORD", help="measure; append JSON lines to RECORD")
    action.add_argument("--report", type=Path, nargs="+", metavar="RECORD",
                        help="write docs/benchmarks/gpu.md from RECORD(s) (later runs' measurements replace earlier)")
    action.add_argument("--nccl", action="store_true", help="(child) the NCCL check")
    parser.add_argument("--json", action="store_true", help="with --nccl: print the result as one JSON line")
    parser.add_argument("--cases", help="with --measure: training cases from this file (training --save-cases)")
    parser.add_argument("--views", type=Path, help="with --measure: folder of chest-drr-{frontal,lateral}.nrrd")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                        help="with --measure: seconds after which no further measurement starts")
    parser.add_argument("--only", nargs="+", metavar="LABEL",
                        help="with --measure: only the measurements with these labels ('training henzler')")
    args = parser.parse_args(argv)
    if args.nccl:
        return report_child(nccl_check, {"kind": "nccl"}, args.json)
    elif args.measure:
        measure(args.measure, args.cases, args.views, args.budget, args.only)
        print(f"wrote {args.measure}")
    else:
        try:
            print(f"wrote {report(args.report)}")
        except (OSError, ValueError) as error:
            print(f"x2ct gpu benchmark: error: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
