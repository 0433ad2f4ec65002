"""Training speed and peak memory of every trainable method (issue 5's performance question).

How many optimiser steps per second does each method's published schedule
run at preset ``small`` on 2 CPU cores (and at ``paper`` on a GPU when there
is one), batch 1, and what does that say about Repeat-and-Concatenate's goal:
its 5,000-step schedule in under 2.8 hours on one H100?

Each (method, preset, device) runs in a fresh child process
(``python -m x2ct.benchmarks.training --one METHOD PRESET --json``) so its
peak memory is its own and a failure or a time-out is reported, not fatal.
The child reads the method's paper config (its optimiser, EMA, k critic
steps, loss weights, augmentation), sets the preset, batch 1 and simulated
data, makes the cases first (timed apart: 'data'), then runs ``warm_up``
trainer steps and times ``steps`` more (``Trainer.train_step``: augmentation,
forward, losses, backward, all-reduce-free optimiser and EMA steps; no
evaluation and no checkpoints).

    python -m x2ct.benchmarks.training                    # the section as Markdown
    python -m x2ct.benchmarks.training --one repeat-concat small --json
    python -m x2ct.benchmarks.training --methods x2ct-cnn henzler   # a subset, old and new side by side
    python -m x2ct.benchmarks.training --save-cases FILE    # cases for a machine without the sample CTs
    python -m x2ct.benchmarks.training --one repeat-concat paper --device cuda --batch 8 --cases FILE --json

Every CPU row is measured twice, the baseline commit's code (``old``, from a
``git worktree`` checkout: ``x2ct.benchmarks.baseline_tree``) just before the
current code, and the table gives the ratio of their steps per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from x2ct.benchmarks import baseline_tree, child_result, peak_memory, report_child
from x2ct.benchmarks.models import blueprint, pin_cores

TITLE = "Training: steps per second and memory"

THREADS = 2
STEPS, WARM_UP = 2, 1  # short: the machine is shared; the old code needs about a minute a step
TIME_LIMIT = {"tiny": 120, "small": 600, "paper": 900}  # seconds per child process
GOAL_STEPS, GOAL_HOURS, PAPER_HOURS = 5001, 2.8, 28.0  # Repeat-and-Concatenate: 5,000 steps, 28 h on a TITAN RTX
GB = 1e9


def trainable() -> list[str]:
    from x2ct.training.schedules import FAMILIES

    return sorted(FAMILIES)


def benchmark_config(method: str, preset: str, device: str = "cpu", batch: int = 1, bf16: bool = True):
    """The method's published schedule (its paper config) at ``preset``, batch ``batch``, on simulated cases.

    ``bf16``: bf16 autocast on CUDA (the trainer's default; no effect on the CPU).
    """
    from x2ct.training import config as cfg

    base = cfg.load(f"{method}-paper" if f"{method}-paper" in cfg.shipped_names() else f"{method}-tiny").to_dict()
    base["preset"] = preset
    base["data"] = {"kind": "simulated", "train_count": 2, "validation_count": 1,
                    "angles": base["data"].get("angles", [0.0, 90.0])}
    base["train"].update(batch_size=batch, accumulate=1, device=device, bf16=bf16)
    return cfg.from_dict(base)


class Cases(torch.utils.data.Dataset):
    """Cases held in memory, so the timed steps do not simulate or project anything."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def save_cases(path: str, methods: list[str], preset: str) -> None:
    """Write each method's first simulated benchmark case at ``preset`` into one safetensors file.

    For a machine without the sample CTs (a GPU server that cannot download
    them): ``measure(cases=path)`` then times the same steps on that case
    (every step draws it; it is also the validation case, which the timed
    steps do not use). Floating tensors are stored as float16 to keep the
    file small (about 5 MB) and read back as float32: a step's arithmetic
    does not depend on the last bits of its inputs. A tensor several methods
    share (most share their CT) is stored once.
    """
    import hashlib
    import json

    from safetensors.torch import save_file

    from x2ct.training import data

    tensors, index = {}, {}

    def stored(item: dict) -> dict:
        entry = {}
        for key, value in item.items():
            if torch.is_tensor(value):
                value = value.to(torch.float16 if value.is_floating_point() else value.dtype).contiguous()
                name = hashlib.sha256(value.numpy().tobytes() + repr((value.shape, value.dtype)).encode()).hexdigest()
                tensors.setdefault(name, value)
                entry[key] = {"tensor": name}
            else:
                entry[key] = value
        return entry

    for method in methods:
        config = benchmark_config(method, preset)
        first = stored(data.make(config, _spec(method, preset))[0][0])
        index[f"{method}/{preset}"] = {"train": [first], "validation": [first]}
    partial = f"{path}.partial"
    save_file(tensors, partial, metadata={"cases": json.dumps(index)})
    os.replace(partial, path)


def _as_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() else tensor


def load_cases(path: str, method: str, preset: str) -> tuple[list[dict], list[dict]]:
    """The (train, validation) cases ``save_cases`` wrote for ``method`` at ``preset``."""
    import json

    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        index = json.loads(handle.metadata()["cases"])
        if f"{method}/{preset}" not in index:
            raise KeyError(f"{path} holds no cases for {method} at preset {preset}")
        entry = index[f"{method}/{preset}"]

        def item(stored: dict) -> dict:
            return {key: _as_float32(handle.get_tensor(value["tensor"])) if isinstance(value, dict) else value
                    for key, value in stored.items()}

        return [item(s) for s in entry["train"]], [item(s) for s in entry["validation"]]


def measure(method: str, preset: str, device: str = "cpu", steps: int = STEPS, warm_up: int = WARM_UP,
            threads: int = THREADS, profile: str | None = None, batch: int = 1, bf16: bool = True,
            cases: str | None = None) -> dict:
    """Time ``steps`` training steps after ``warm_up`` of ``method`` at ``preset`` on ``device``.

    ``profile``: also write torch.profiler's table of the timed steps (top 25 operators by own CPU time) there.
    ``cases``: read the cases from that file (``save_cases``) instead of simulating them.
    """
    from x2ct.models import count_parameters
    from x2ct.training import data
    from x2ct.training.trainer import Trainer

    torch.set_num_threads(threads)
    config = benchmark_config(method, preset, device, batch, bf16)
    started = time.perf_counter()
    spec = _spec(method, preset)
    if cases is None:
        train_set, val_set = data.make(config, spec)
        train, validation = [train_set[i] for i in range(len(train_set))], [val_set[0]]
    else:
        train, validation = load_cases(cases, method, preset)
    data_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out, progress="none", datasets=(Cases(train), Cases(validation)))
        target = trainer.device
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        for _ in range(warm_up):
            trainer.train_step()
            trainer.step += 1
        _sync(target)
        with _profiler(profile) as profiler:
            begin = time.perf_counter()
            for _ in range(steps):
                if trainer.train_step() is None:
                    raise RuntimeError(f"step {trainer.step} had a non-finite loss")
                trainer.step += 1
            _sync(target)
            seconds = time.perf_counter() - begin
        if profile:
            _write_profile(profile, profiler, method, preset, steps, seconds)
        loop = _check_loop(trainer) if target.type == "cuda" else None
        result = {"name": method, "preset": preset, "device": target.type, "steps": steps, "warm_up": warm_up,
                  "threads": threads, "batch": batch, "bf16": bool(bf16 and target.type == "cuda"),
                  "cases": "simulated" if cases is None else "read from a file",
                  "parameters": count_parameters(trainer.model),
                  "critic_parameters": count_parameters(trainer.critic) if trainer.critic is not None else 0,
                  "volume_size": spec.volume_size, "view_size": spec.view_size,
                  "k": config.train.generator_steps_per_critic_step if trainer.critic is not None else None,
                  "seconds_per_step": seconds / steps, "steps_per_second": steps / seconds,
                  "data_seconds_per_case": data_seconds / len(train)}
        if loop is not None:
            result["evaluate_and_checkpoint"] = loop
    result.update(peak_memory(target))
    return result


def _check_loop(trainer) -> str:
    """Untimed: do the training loop's evaluation and checkpoint also run on this device? 'ok' or the error."""
    try:
        trainer.evaluate()
        trainer.save()
    except Exception as error:  # reported in the table, not fatal to the timing
        return f"{type(error).__name__}: {str(error).strip()[:200]}"
    return "ok"


def _spec(method: str, preset: str):
    """The model's sizes, read from a network built on the meta device when its builder allows."""
    from x2ct.models import build

    return (blueprint(method, preset) or build(method, preset)).spec


def _profiler(path: str | None):
    import contextlib

    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU], record_shapes=True) if path else contextlib.nullcontext()


def _write_profile(path: str, profiler, method: str, preset: str, steps: int, seconds: float) -> None:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    head = (f"{method} {preset}: {steps} profiled training step(s) after {WARM_UP} warm-up, {seconds / steps:.2f} s "
            f"per step under the profiler, {torch.get_num_threads()} threads, load average {load}\n"
            f"python -m x2ct.benchmarks.training --one {method} {preset} --steps {steps} --profile FILE\n\n")
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    by_shape = profiler.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=32, max_shapes_column_width=100)
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(head + table + "\n\nThe same step by operator and input shapes (which layer the time is in):\n\n"
                     + by_shape + "\n")
    os.replace(partial, path)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_in_child(method: str, preset: str, device: str = "cpu", steps: int = STEPS,
                     time_limit: float = 600, tree=None, batch: int = 1, bf16: bool = True,
                     cases: str | None = None, threads: int = THREADS, warm_up: int = WARM_UP) -> dict:
    """Run ``measure`` in a fresh interpreter; failures and time-outs come back as ``{"error": ...}``.

    ``tree``: a checkout of the baseline commit, whose own benchmark child then measures its code.
    ``batch``, ``bf16``, ``cases``, ``threads``, ``warm_up``: as ``measure``'s (the baseline's child knows none
    of them).
    """
    arguments = ["--one", method, preset, "--device", device, "--steps", str(steps)]
    if (batch, bf16, cases, threads, warm_up) != (1, True, None, THREADS, WARM_UP):
        arguments += ["--batch", str(batch), "--threads", str(threads), "--warm-up", str(warm_up)] \
            + ([] if bf16 else ["--fp32"]) + (["--cases", cases] if cases else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = child_result("x2ct.benchmarks.training", arguments,
                          {"name": method, "preset": preset, "device": device, "batch": batch}, time_limit, threads,
                          tree)
    return {**result, "load": load}


def run(quick: bool = False, methods: list[str] | None = None) -> str:
    """``small`` on the CPU for every method and ``paper`` on CUDA when available; ``quick``: x2ct-cnn tiny only."""
    if quick:
        methods, cpu_preset, steps = methods or ["x2ct-cnn"], "tiny", 2
    else:
        methods, cpu_preset, steps = methods or trainable(), "small", STEPS
    gpu = torch.cuda.is_available() and not quick
    baseline = baseline_tree()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for method in methods:  # old then new for each method, so both see about the same load
        old = measure_in_child(method, cpu_preset, "cpu", steps, TIME_LIMIT[cpu_preset], baseline) \
            if baseline is not None else None
        cpu = measure_in_child(method, cpu_preset, "cpu", steps, TIME_LIMIT[cpu_preset])
        cuda = measure_in_child(method, "paper", "cuda", steps, TIME_LIMIT["paper"]) if gpu else None
        rows.append({"name": method, "cpu": cpu, "cuda": cuda, "old": old})
    load = None if load_before is None else (load_before, os.getloadavg()[0])
    return render(rows, cpu_preset, steps, gpu, load, baseline is not None)


def _cell(result: dict | None, key: str, scale: float = 1.0, digits: int = 2) -> str:
    if result is None:
        return "no GPU"
    if "error" in result:
        return result["error"].replace("|", "/")
    return f"{result[key] / scale:.{digits}f}"


def _ratio(new: dict, old: dict | None) -> str:
    if old is None or "error" in old or "error" in new:
        return "–"
    return f"{new['steps_per_second'] / old['steps_per_second']:.1f}x"


def render(rows: list[dict], cpu_preset: str, steps: int, gpu: bool, load=None, baseline: bool = False) -> str:
    header = ["method", "parameters (critic)", f"CPU {cpu_preset}: steps/s", "s/step", "peak RSS (GB)",
              "data s/case", "GPU paper: steps/s", "GPU peak (GB)"]
    if baseline:
        header += ["old code: steps/s", "old peak RSS (GB)", "new / old steps/s", "load (1 min) old / new"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cpu, cuda = row["cpu"], row["cuda"]
        size = "" if "error" in cpu else (f"{cpu['parameters'] / 1e6:.2f} M"
                                          + (f" ({cpu['critic_parameters'] / 1e6:.2f} M)" if cpu["critic_parameters"]
                                             else ""))
        cells = [row["name"], size, _cell(cpu, "steps_per_second", digits=3), _cell(cpu, "seconds_per_step"),
                 _cell(cpu, "peak_rss_bytes", GB), _cell(cpu, "data_seconds_per_case", digits=1),
                 _cell(cuda, "steps_per_second", digits=3), _cell(cuda, "gpu_peak_bytes", GB)]
        if baseline:
            old = row.get("old")
            loads = " / ".join("?" if r is None or r.get("load") is None else f"{r['load']:.1f}" for r in (old, cpu))
            cells += [_cell(old, "steps_per_second", digits=3), _cell(old, "peak_rss_bytes", GB), _ratio(cpu, old),
                      loads]
        lines.append("| " + " | ".join(cells) + " |")
    needed = GOAL_STEPS / (GOAL_HOURS * 3600)
    notes = [
        "Command: `x2ct benchmark --only training` (or `python -m x2ct.benchmarks.training`); one method: "
        "`python -m x2ct.benchmarks.training --one METHOD PRESET --json`.",
        f"Each method's paper config (optimiser, EMA, loss weights, k generator steps per critic step, "
        f"augmentation) at preset {cpu_preset} (CPU, {THREADS} threads pinned to {THREADS} cores) and paper "
        f"(GPU, bf16 autocast), batch 1, no accumulation, simulated cases made before the timing ('data s/case': "
        f"simulation and DRR views, per case); {WARM_UP} warm-up step, then the mean of {steps} timed steps "
        "(augmentation, forward, losses, backward, optimiser, EMA; no evaluation, no checkpoint writes). The "
        "critic trains at steps that are multiples of k (the warm-up is step 0), so with k > 1 (repeat-concat: "
        "10) the timed steps are generator-only and the long-run rate is a little lower (one critic update "
        "per k steps). code-diffusion: its prior stage (its paper config has stage1_steps 0).",
        "Peak RSS: the child process's maximum resident memory (Python, torch, the cases). GPU peak: "
        "torch.cuda.max_memory_allocated.",
        f"Goal (issue 5): Repeat-and-Concatenate's {GOAL_STEPS}-step schedule in under {GOAL_HOURS:g} h on one "
        f"H100 (the paper: {PAPER_HOURS:g} h on a TITAN RTX), i.e. at least {needed:.3f} steps/s at its batch "
        "of 8 and 64^3 (the 'paper' preset). Only a GPU measurement at paper settings can check it.",
    ]
    rc = next((row["cpu"] for row in rows if row["name"] == "repeat-concat" and "error" not in row["cpu"]), None)
    if rc is not None:
        hours = GOAL_STEPS / rc["steps_per_second"] / 3600
        notes.append(f"On this CPU, repeat-concat {cpu_preset} ({rc['volume_size']}^3, batch 1) runs "
                     f"{rc['steps_per_second']:.3f} steps/s: the {GOAL_STEPS}-step schedule would take "
                     f"{hours:.1f} h at this size and batch 1, which says nothing about the H100 goal at paper "
                     "settings.")
    if baseline:
        notes.append("Old code: the same child run from a checkout of the baseline commit (the code before issue "
                     "14's speed work, `x2ct.benchmarks.BASELINE_COMMIT`, made with `git worktree` under the temp "
                     "folder; `X2CT_BENCHMARK_BASELINE=none` skips it), just before the new code, so both see about "
                     "the same load; 'load' is the 1-minute load average when each child started.")
    if not gpu:
        notes.append("No GPU in this run: the GPU columns say 'no GPU'. GPU figures, measured on a GPU machine: "
                     "section 'GPU: training and inference at paper presets' (`scripts/gpu-benchmark`).")
    if load is not None:
        notes.append(f"Load average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} "
                     "cores; other work on the machine slows the CPU timings.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x2ct.benchmarks.training", description=__doc__.split("\n")[0])
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "PRESET"), help="measure one method in this process")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=STEPS, help="timed steps after the warm-up")
    parser.add_argument("--json", action="store_true", help="with --one: print the result as one JSON line")
    parser.add_argument("--quick", action="store_true", help="x2ct-cnn at tiny only")
    parser.add_argument("--methods", nargs="+", metavar="METHOD", help="only these methods (default: all)")
    parser.add_argument("--profile", metavar="FILE", help="with --one: write the timed steps' per-operator table")
    parser.add_argument("--batch", type=int, default=1, help="with --one: samples per step")
    parser.add_argument("--threads", type=int, default=THREADS, help="with --one: CPU threads")
    parser.add_argument("--warm-up", type=int, default=WARM_UP, help="with --one: untimed steps first")
    parser.add_argument("--fp32", action="store_true", help="with --one on CUDA: no bf16 autocast")
    parser.add_argument("--cases", metavar="FILE", help="with --one: read the cases from FILE (see --save-cases)")
    parser.add_argument("--save-cases", metavar="FILE",
                        help="write every method's simulated cases at --preset to FILE, for a machine without "
                             "the sample CTs")
    parser.add_argument("--preset", default="paper", help="with --save-cases: the preset (default: paper)")
    args = parser.parse_args(argv)
    if args.save_cases:
        save_cases(args.save_cases, args.methods or trainable(), args.preset)
        print(f"wrote {args.save_cases}")
        return 0
    if args.one is None:
        print(run(quick=args.quick, methods=args.methods))
        return 0
    method, preset = args.one
    if args.device == "cpu":
        pin_cores(args.threads)
    return report_child(lambda: measure(method, preset, device=args.device, steps=args.steps, warm_up=args.warm_up,
                                        threads=args.threads, profile=args.profile, batch=args.batch,
                                        bf16=not args.fp32, cases=args.cases),
                        {"name": method, "preset": preset, "device": args.device, "batch": args.batch}, args.json)


if __name__ == "__main__":
    sys.exit(main())
