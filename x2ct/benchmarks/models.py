"""Inference time and peak memory of every model's ``small`` and ``paper`` presets.

The question (issue 4): how long does one reconstruction take, batch 1,
128^3 from two 128^2 views, on 2 CPU cores (and on a GPU when there is
one), and does ``small`` stay within 5 s and 4 GB on CPU, 0.1 s on a GPU?

Each (model, preset, device) is measured in a fresh child process
(``python -m x2ct.benchmarks.models --one NAME PRESET --json``), so its
peak resident memory is its own and a preset that runs out of memory or
time is reported, not fatal. A pass is what a user gets: the two 128^2
views resized to the model's view size, the forward pass, and the volume
resized (trilinear) to 128^3 when the model's native output is smaller.
Registered names that build the very same network (x2ct-cnn, x2ct-gan and
projection-gan share a generator) are measured once.

    python -m x2ct.benchmarks.models                       # the section as Markdown
    python -m x2ct.benchmarks.models --one henzler small --json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from x2ct import models
from x2ct.benchmarks import child_result, peak_memory, report_child

TITLE = "Model inference: time and memory"

PRESETS = ("small", "paper")
SIZE = 128  # the views (SIZE^2) a user gives and the volume (SIZE^3) a user gets
THREADS = 2
GOAL_CPU_SECONDS, GOAL_CPU_GB, GOAL_GPU_SECONDS = 5.0, 4.0, 0.1
TIME_LIMIT = {"tiny": 60, "small": 180, "paper": 300}  # seconds per child process
QUICK_TIME_LIMIT = {"tiny": 60, "small": 180, "paper": 120}
GB = 1e9


# --- one measurement (runs inside the child process) --------------------------------------------


def pick_views(view_counts, wanted: int = 2) -> int:
    """``wanted`` views if the model takes them, else the nearest count it accepts."""
    return wanted if wanted in view_counts else min(view_counts, key=lambda n: (abs(n - wanted), n))


def pin_cores(threads: int) -> None:
    """Keep this process on ``threads`` cores, so a 16-core GPU machine measures like 2 cores."""
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, allowed[:threads])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, preset: str, views: int | None = None, view_size: int = SIZE, volume_size: int = SIZE,
            threads: int = THREADS, repeats: int = 3, device: str = "cpu", budget: float | None = None) -> dict:
    """Time one warm-up and then the median of ``repeats`` passes of ``name``/``preset``, batch 1.

    A pass: ``views`` random views of ``view_size``^2 resized to the model's view
    size, the forward pass, the volume resized to ``volume_size``^3.
    ``seconds`` is the forward pass alone, ``seconds_total`` the whole pass.
    With a ``budget`` (seconds from the call), no further pass starts that
    would likely end past it, so a slow model gets fewer timed passes
    (``timed``) rather than none; when not even one fits after the warm-up,
    the warm-up is the measurement (``timed`` = 0).
    Peak memory is this process's peak RSS (CPU) or torch's peak allocation (CUDA).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _measure(name, preset, views, view_size, volume_size, threads, repeats, torch.device(device),
                        time.perf_counter() + budget if budget else None)
    finally:
        torch.set_num_threads(previous)


def _measure(name, preset, views, view_size, volume_size, threads, repeats, target, deadline) -> dict:
    model = models.build(name, preset).eval().to(target)
    spec = model.spec
    n_views = pick_views(spec.view_counts) if views is None else views
    generator = torch.Generator().manual_seed(0)
    given = torch.rand(1, n_views, view_size, view_size, generator=generator).to(target)
    angles = torch.tensor([model.default_angles(n_views)], dtype=torch.float32, device=target)
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)

    def one_pass() -> tuple[float, float, tuple]:
        _sync(target)
        start = time.perf_counter()
        inputs = given
        if view_size != spec.view_size:
            inputs = F.interpolate(given, size=(spec.view_size,) * 2, mode="bilinear", align_corners=False,
                                   antialias=spec.view_size < view_size)
        _sync(target)
        forward_start = time.perf_counter()
        volume = model(inputs, angles)
        _sync(target)
        forward_end = time.perf_counter()
        native = tuple(volume.shape[2:])
        if native != (volume_size,) * 3:
            volume = F.interpolate(volume, size=(volume_size,) * 3, mode="trilinear", align_corners=False)
        _sync(target)
        return forward_end - forward_start, time.perf_counter() - start, native

    def fits(last) -> bool:
        return deadline is None or time.perf_counter() + last[1] < deadline

    with torch.inference_mode():
        warm_up = one_pass()  # allocator, kernels, caches
        passes = [one_pass()] if fits(warm_up) else []
        while passes and len(passes) < repeats and fits(passes[-1]):
            passes.append(one_pass())
    timed = len(passes)
    passes = passes or [warm_up]
    result = {
        "name": name, "preset": preset, "device": target.type,
        "parameters": models.count_parameters(model), "views": n_views, "view_counts": list(spec.view_counts),
        "given_view_size": view_size, "view_size": spec.view_size, "native_output": list(passes[0][2]),
        "volume_size": volume_size, "threads": threads, "repeats": repeats, "timed": timed,
        "seconds": statistics.median(p[0] for p in passes),
        "seconds_total": statistics.median(p[1] for p in passes),
    }
    result.update(peak_memory(target))
    return result


# --- orchestration (the parent process) ---------------------------------------------------------


def blueprint(name: str, preset: str):
    """The model built on the meta device (no memory, no time), or None if its builder needs real tensors."""
    try:
        with torch.device("meta"):
            return models.build(name, preset)
    except Exception:  # measured anyway, just not compared with the others
        return None


def architecture(model) -> str:
    """Fingerprint of a built network: classes, their plain settings, tensor shapes (not the values).

    Two registered names with the same fingerprint run the same computation.
    """
    parts = [repr(dataclasses.replace(model.spec, name=""))]
    for path, module in model.named_modules():
        settings = sorted((key, repr(value)) for key, value in vars(module).items()
                          if not key.startswith("_") and isinstance(value, (bool, int, float, str, tuple)))
        parts.append(f"{path} {type(module).__module__}.{type(module).__qualname__} {settings}")
    parts += [f"{key} {tuple(value.shape)} {value.dtype}" for key, value in model.state_dict().items()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def same_network(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
    """Each (name, preset) -> the first of ``pairs`` that builds the very same network (itself if none).

    A pair whose builder cannot run on the meta device is its own network.
    """
    first_of: dict[str, tuple[str, str]] = {}
    same = {}
    for pair in pairs:
        model = blueprint(*pair)
        same[pair] = pair if model is None else first_of.setdefault(architecture(model), pair)
    return same


def measure_in_child(name: str, preset: str, device: str = "cpu", repeats: int = 3,
                     time_limit: float = 300) -> dict:
    """Run ``measure`` in a fresh interpreter; failures come back as ``{"error": ...}``.

    The child stops adding timed passes at 80 % of ``time_limit`` and is killed at the limit.
    """
    arguments = ["--one", name, preset, "--device", device, "--repeats", str(repeats),
                 "--budget", str(0.8 * time_limit)]
    return child_result("x2ct.benchmarks.models", arguments, {"name": name, "preset": preset, "device": device},
                        time_limit, THREADS)


def run(quick: bool = False, names: list[str] | None = None, presets=PRESETS) -> str:
    """Measure every (model, preset) on CPU, and on CUDA when available; return the Markdown section."""
    repeats, limits = (1, QUICK_TIME_LIMIT) if quick else (3, TIME_LIMIT)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    pairs = [(name, preset) for name in names or models.names() for preset in presets]
    rows, measured = [], {}
    for (name, preset), first in same_network(pairs).items():
        if first != (name, preset):
            rows.append({**measured[first], "name": name, "same_as": first[0]})
            continue
        model = blueprint(name, preset)
        row = {"name": name, "preset": preset, "sample_steps": getattr(model, "sample_steps", None),
               "samples": getattr(model, "samples", None),
               "results": {device: measure_in_child(name, preset, device, repeats, limits[preset])
                           for device in devices}}
        rows.append(row)
        measured[name, preset] = row
    load = None if load_before is None else (load_before, os.getloadavg()[0])
    return render(rows, devices, repeats, limits, load)


# --- the Markdown table -------------------------------------------------------------------------


def _cube(sizes) -> str:
    return f"{sizes[0]}³" if len(set(sizes)) == 1 else "×".join(map(str, sizes))


def _goal(row: dict) -> str:
    if row["preset"] != "small":
        return "–"
    cpu, cuda = row["results"]["cpu"], row["results"].get("cuda")
    if "error" in cpu:
        return "no (failed)"
    misses = []
    if cpu["seconds_total"] > GOAL_CPU_SECONDS:
        misses.append("CPU time")
    if cpu["peak_rss_bytes"] > GOAL_CPU_GB * GB:
        misses.append("memory")
    if cuda is not None and ("error" in cuda or cuda["seconds_total"] >= GOAL_GPU_SECONDS):
        misses.append("GPU time")
    return "yes" if not misses else "no: " + ", ".join(misses)


def _cell(text: str) -> str:
    return text.replace("|", "/")


def _seconds(result: dict, key: str, digits: int) -> str:
    text = f"{result[key]:.{digits}f}"
    if result["timed"] == result["repeats"]:
        return text
    return f"{text} ({result['timed']} run)" if result["timed"] else f"{text} (warm-up only)"


def render(rows: list[dict], devices: list[str], repeats: int, limits: dict, load=None) -> str:
    gpu = "cuda" in devices
    header = ["model", "preset", "parameters", "views", "native output", "CPU forward (s)",
              f"CPU to {SIZE}³ (s)", "peak RSS (GB)"]
    if gpu:
        header += ["GPU forward (s)", f"GPU to {SIZE}³ (s)", "GPU peak (GB)"]
    header.append("meets goal")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for row in rows:
        cpu = row["results"]["cpu"]
        model = row["name"] + (f" (= {row['same_as']})" if "same_as" in row else "")
        if "error" in cpu:
            cells = [model, row["preset"], "", "", "", _cell(cpu["error"]), "", ""]
        else:
            views = f"{cpu['views']} × {cpu['view_size']}²"
            if cpu["view_size"] != cpu["given_view_size"]:
                views += f" (from {cpu['given_view_size']}²)"
            cells = [model, row["preset"], f"{cpu['parameters'] / 1e6:.2f} M", views, _cube(cpu["native_output"]),
                     _seconds(cpu, "seconds", 2), _seconds(cpu, "seconds_total", 2),
                     f"{cpu['peak_rss_bytes'] / GB:.2f}"]
            if cpu["views"] != 2:
                notes.append(f"{row['name']} takes {'/'.join(map(str, cpu['view_counts']))} view(s); "
                             f"measured with {cpu['views']}.")
        if gpu:
            cuda = row["results"]["cuda"]
            cells += ([_cell(cuda["error"]), "", ""] if "error" in cuda else
                      [_seconds(cuda, "seconds", 3), _seconds(cuda, "seconds_total", 3),
                       f"{cuda['gpu_peak_bytes'] / GB:.2f}"])
        if row.get("sample_steps") and "same_as" not in row:
            notes.append(f"{row['name']} {row['preset']}: its default sampling, {row['sample_steps']} steps "
                         f"(one network pass each) per sample, {row.get('samples') or 1} sample(s).")
        cells.append(_goal(row))
        lines.append("| " + " | ".join(cells) + " |")
    settings = [
        "Command: `x2ct benchmark --only models` (or `python -m x2ct.benchmarks.models`); one model: "
        "`python -m x2ct.benchmarks.models --one NAME PRESET --json`.",
        f"Batch 1, {THREADS} threads pinned to {THREADS} cores, torch.inference_mode; each (model, preset, device) "
        f"in a fresh process; one warm-up, then the median of {repeats} timed pass(es) (fewer, marked "
        f"'(n run)', when more would not fit in 80 % of the time limit; '(warm-up only)' when none would); "
        f"time limit {limits['small']} s (small) / {limits['paper']} s (paper) per process.",
        f"Inputs: {SIZE}² random views resized (bilinear) to the model's view size. 'forward' is the model "
        f"alone; 'to {SIZE}³' adds the input resize and a trilinear resize of the output to {SIZE}³, "
        "which is what a user gets.",
        "Peak RSS: the child process's maximum resident memory (includes Python and torch, about 0.3-0.5 GB). "
        "GPU peak: torch.cuda.max_memory_allocated (excludes the CUDA context).",
        f"Goal for small: ≤ {GOAL_CPU_SECONDS:g} s to {SIZE}³ and ≤ {GOAL_CPU_GB:g} GB on {THREADS} CPU cores; "
        f"< {GOAL_GPU_SECONDS:g} s on a GPU. '(= X)': the same network as X (same classes, settings and "
        "weights' shapes), measured once.",
    ]
    if load is not None:
        settings.append(f"Load average (1 min) of this machine before / after: {load[0]:.1f} / {load[1]:.1f} "
                        f"on {os.cpu_count()} cores; other work on the machine slows the CPU timings.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {line}" for line in settings + notes) + "\n"


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x2ct.benchmarks.models", description=__doc__.split("\n")[0])
    parser.add_argument("--one", nargs=2, metavar=("NAME", "PRESET"), help="measure one model in this process")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=3, help="timed passes after the warm-up (median)")
    parser.add_argument("--budget", type=float, help="seconds after which no further timed pass starts")
    parser.add_argument("--json", action="store_true", help="with --one: print the result as one JSON line")
    parser.add_argument("--quick", action="store_true", help="one timed pass per model")
    args = parser.parse_args(argv)
    if args.one is None:
        print(run(quick=args.quick))
        return 0
    name, preset = args.one
    pin_cores(THREADS)
    return report_child(lambda: measure(name, preset, repeats=args.repeats, device=args.device, budget=args.budget),
                        {"name": name, "preset": preset, "device": args.device}, args.json)


if __name__ == "__main__":
    sys.exit(main())
