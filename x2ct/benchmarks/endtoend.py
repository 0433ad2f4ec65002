"""End to end: two X-ray files in, a CT file out, with the default two-view model.

The question (issue 6): how long does a user wait for
``x2ct reconstruct --view F:frontal --view L:lateral --model M --out CT.nrrd``,
interpreter start, imports and model loading included, on 2 CPU cores (goal
at most 10 s) and on a GPU when there is one (goal under 1 s)? And how much
memory does it take?

The command runs as a child process, pinned to 2 cores with 2 threads; its
wall time is the end-to-end time (median of 3); its peak resident memory is
the child's own VmHWM, read as it exits. A second
child (``python -m x2ct.benchmarks.endtoend --inprocess ...``) times the
parts inside one interpreter: loading the model, then
``inference.reconstruct`` on the loaded model, the first call (cold) and the
median of the following ones (warm).

The inputs are frontal and lateral DRRs of the sample chest CT, made the
way the X2CT benchmark made its views (``x2ct.physics.drr``, ``x2ct`` mode)
and written as NRRD. The model is the first two-view model shipped in
``Resources/Models/Models.json``, else the ``back-projection`` baseline; the
table says which.

    python -m x2ct.benchmarks.endtoend            # the section as Markdown
    python -m x2ct.benchmarks.endtoend --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from x2ct.benchmarks import baseline_tree

TITLE = "End to end: X-ray files to a CT file"

THREADS = 2
GOAL_CPU_SECONDS, GOAL_GPU_SECONDS = 10.0, 1.0
GOAL_SPARE_SECONDS = 2.5  # issue 14, on 2 CPU cores
FALLBACK_MODEL = "back-projection"
TIME_LIMIT = 300  # seconds per child process
GB = 1e9


def default_model() -> tuple[str, str]:
    """(model id, why it was chosen): the first shipped two-view model, else the back-projection baseline."""
    from x2ct import catalog

    for item in catalog.read_manifest()["models"]:
        if len(item["views_required"]) == 2:
            return item["id"], "the first two-view model shipped in Models.json"
    return FALLBACK_MODEL, "no two-view model is shipped in Models.json yet, so the built-in baseline"


def write_inputs(folder: Path, quick: bool = False) -> dict[str, Path]:
    """Frontal and lateral X2CT-mode DRRs of the sample chest CT as NRRD files in ``folder``.

    ``quick`` renders from every 4th voxel in-plane and every 2nd slice (same
    field of view, coarser CT), to keep a unit test short; the files the
    model sees have the same size and spacing either way.
    """
    from x2ct import io, physics, sampledata
    from x2ct.image import Volume

    ct = io.read_ct(sampledata.path("chest-ct"))
    if quick:
        step = (2, 4, 4)
        ct = Volume(ct.array[::step[0], ::step[1], ::step[2]],
                    tuple(s * n for s, n in zip(ct.spacing, step[::-1])), ct.origin, ct.direction)
    folder.mkdir(parents=True, exist_ok=True)
    return {view: io.write_xray(physics.drr(ct, view, mode="x2ct"), folder / f"chest-drr-{view}.nrrd")
            for view in ("frontal", "lateral")}


# --- child processes ----------------------------------------------------------------------------


def _child_env(device: str, tree: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # no CUDA initialisation at all, as on a machine without a GPU
    if tree is not None:  # run that checkout's x2ct (the baseline commit)
        env["PYTHONPATH"] = str(tree)
    return env


def _pin_to_cores() -> None:
    """Runs in the child before exec: keep it on THREADS cores, so a many-core machine measures like 2."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:THREADS])


#: Child program: run a module as ``python -m`` does, then print the process's own peak resident memory.
#: Linux's VmHWM counts only what this program touched after exec; the kernel's ru_maxrss of a child
#: would also count the benchmark's own memory, copied at fork.
_WRAPPER = """
import atexit, runpy, sys
def _peak():
    try:
        with open("/proc/self/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return
    sys.stderr.write(f"{marker} {{kib}}\\n")
atexit.register(_peak)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
PEAK_MARKER = "x2ct-benchmark-peak-rss-kib"


def python_command(module: str, *args: str) -> list[str]:
    """``python -m module args...`` that also reports its own peak memory (see ``run_child``)."""
    return [sys.executable, "-c", _WRAPPER.format(marker=PEAK_MARKER), module, *args]


def run_child(command: list[str], device: str, time_limit: float = TIME_LIMIT, tree: Path | None = None) -> dict:
    """Run ``command``; return its wall seconds, peak RSS (bytes), exit code and output.

    The peak RSS is the one a ``python_command`` child reports at exit;
    otherwise (no /proc) the child's ru_maxrss from ``os.wait4``, an upper
    bound that includes this process's memory at fork. A child still
    running at ``time_limit`` is killed.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=_child_env(device, tree), cwd=tree,
                                 preexec_fn=_pin_to_cores if os.name == "posix" else None)
        timer = threading.Timer(time_limit, child.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    reported = [line for line in stderr.splitlines() if line.startswith(PEAK_MARKER + " ")]
    if reported:
        peak = int(reported[-1].split()[1]) * 1024
        stderr = "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith(PEAK_MARKER))
    else:
        peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"seconds": seconds, "peak_rss_bytes": peak, "returncode": child.returncode,
            "stdout": stdout, "stderr": stderr, "killed": seconds >= time_limit}


def _failure(result: dict, time_limit: float) -> str:
    if result["killed"]:
        return f"over the {time_limit:g} s time limit"
    lines = (result["stderr"].strip() or result["stdout"].strip() or "no output").splitlines()
    return f"exit code {result['returncode']}: {lines[-1][:200]}"


def reconstruct_arguments(views: dict[str, Path], model: str, device: str, out: Path) -> list[str]:
    """The ``x2ct`` arguments of the timed command: both views in, ``out`` written (over an earlier run's)."""
    return ["reconstruct", "--view", f"{views['frontal']}:frontal", "--view", f"{views['lateral']}:lateral",
            "--model", model, "--device", device, "--out", str(out), "--overwrite"]


def measure_cli(views: dict[str, Path], model: str, device: str, out: Path, repeats: int = 3,
                time_limit: float = TIME_LIMIT, tree: Path | None = None) -> dict:
    """End-to-end runs of ``x2ct reconstruct``: median wall seconds, peak RSS, and the CT it wrote.

    ``tree``: run the ``x2ct`` of that checkout (the baseline commit) instead of this one.
    """
    command = python_command("x2ct", *reconstruct_arguments(views, model, device, out))
    runs = []
    for _ in range(repeats):
        result = run_child(command, device, time_limit, tree)
        if result["returncode"] != 0:
            return {"error": _failure(result, time_limit)}
        runs.append(result)
    from x2ct import io

    volume = io.read_ct(out)
    return {"seconds": statistics.median(r["seconds"] for r in runs), "runs": [r["seconds"] for r in runs],
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs), "output_shape": list(volume.shape),
            "output_spacing": [round(s, 4) for s in volume.spacing]}


def measure_spare(views: dict[str, Path], model: str, device: str, out: Path, repeats: int = 3,
                  time_limit: float = TIME_LIMIT) -> dict:
    """The same command handed to a spare process whose imports are done (``x2ct.jobs.Spare``, what the
    Slicer module's next reconstruction runs in): median wall seconds from hand-over to exit."""
    from x2ct import jobs

    command = reconstruct_arguments(views, model, device, out)
    runs = []
    for _ in range(repeats):
        spare = jobs.Spare(env=_child_env(device), python=sys.executable)
        if hasattr(os, "sched_setaffinity"):  # before its threads start, so they inherit it
            os.sched_setaffinity(spare.pid, sorted(os.sched_getaffinity(0))[:THREADS])
        if not spare.wait_ready(time_limit):
            spare.drop()
            return {"error": f"the spare was not ready within {time_limit:g} s"}
        start = time.perf_counter()
        try:
            code = spare.run(command).wait(time_limit)
        except TimeoutError:
            spare.cancel()
            return {"error": f"over the {time_limit:g} s time limit"}
        if code != 0:
            return {"error": f"exit code {code}: {(spare.error or '')[:200]}"}
        runs.append(time.perf_counter() - start)
    return {"seconds": statistics.median(runs), "runs": runs}


def measure_in_process(views: dict[str, Path], model: str, device: str, repeats: int = 3) -> dict:
    """Inside this interpreter: model load, then inference.reconstruct on it, cold and warm (seconds)."""
    import torch

    from x2ct import inference, io

    torch.set_num_threads(THREADS)
    xrays = [io.read_xray(views["frontal"], "frontal"), io.read_xray(views["lateral"], "lateral")]
    start = time.perf_counter()
    loaded = inference.load(model, "cpu")
    load_seconds = time.perf_counter() - start
    times = []
    for _ in range(1 + repeats):
        start = time.perf_counter()
        result = inference.reconstruct(xrays, loaded, device=device)
        times.append(time.perf_counter() - start)  # reconstruct returns the volume on the CPU: synchronised
    record = {"load": load_seconds, "first": times[0], "warm": statistics.median(times[1:]),
              "device": result.device}
    if result.device == "cuda":
        record["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
    return record


def measure_in_child(views: dict[str, Path], model: str, device: str, repeats: int = 3,
                     time_limit: float = TIME_LIMIT) -> dict:
    command = python_command("x2ct.benchmarks.endtoend", "--inprocess", str(views["frontal"]),
                             str(views["lateral"]), model, device, "--repeats", str(repeats))
    result = run_child(command, device, time_limit)
    lines = [line for line in result["stdout"].splitlines() if line.startswith("{")]
    if result["returncode"] != 0 or not lines:
        return {"error": _failure(result, time_limit)}
    return json.loads(lines[-1])


def measure_paths(views: dict[str, Path], model: str, device: str, folder: Path, repeats: int = 3,
                  time_limit: float = TIME_LIMIT) -> dict:
    """The command on ``device`` in a fresh process (``cli``), handed to a spare (``spare``), and the model load
    and reconstruction inside one process (``inprocess``); the CTs are written in ``folder``."""
    return {"cli": measure_cli(views, model, device, folder / f"CT-{device}.nrrd", repeats, time_limit),
            "spare": measure_spare(views, model, device, folder / f"CT-{device}-spare.nrrd", repeats, time_limit),
            "inprocess": measure_in_child(views, model, device, repeats, time_limit)}


# --- the section ---------------------------------------------------------------------------------


def run(quick: bool = False) -> str:
    """Measure on the CPU, and on CUDA when available; return the Markdown section."""
    import torch

    repeats = 1 if quick else 3
    model, why = default_model()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    baseline = baseline_tree()
    with tempfile.TemporaryDirectory(prefix="x2ct-endtoend-") as tmp:
        views = write_inputs(Path(tmp), quick)
        for device in devices:
            old = measure_cli(views, model, device, Path(tmp) / f"CT-{device}-old.nrrd", repeats, tree=baseline) \
                if baseline is not None else None
            rows.append({"device": device, "old": old, **measure_paths(views, model, device, Path(tmp), repeats)})
    load = None if load_before is None else (load_before, os.getloadavg()[0])
    return render(rows, model, why, repeats, quick, gpu=len(devices) > 1, load=load)


def _goal(device: str, cli: dict) -> str:
    goal = GOAL_CPU_SECONDS if device == "cpu" else GOAL_GPU_SECONDS
    if "error" in cli:
        return "no (failed)"
    met = cli["seconds"] <= goal if device == "cpu" else cli["seconds"] < goal
    return ("yes" if met else "no") + f" ({'≤' if device == 'cpu' else '<'} {goal:g} s)"


def _runs_cell(result: dict | None) -> str:
    """'median (run / run / run)' of a timed command, its error, or '–' when it was not run."""
    if result is None:
        return "–"
    if "error" in result:
        return result["error"].replace("|", "/")
    return f"{result['seconds']:.2f} ({' / '.join(f'{s:.2f}' for s in result['runs'])})"


def render(rows: list[dict], model: str, why: str, repeats: int, quick: bool, gpu: bool, load=None) -> str:
    header = ["device", "model", "end to end (s)", "runs (s)", "peak RSS (GB)", "output", "model load (s)",
              "reconstruct, first (s)", "reconstruct, warm (s)", "meets goal", "old code: end to end (s)",
              "in a spare process (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cli, inner = row["cli"], row["inprocess"]
        cells = [row["device"], model]
        if "error" in cli:
            cells += [cli["error"].replace("|", "/"), "", "", ""]
        else:
            shape = cli["output_shape"]
            cells += [f"{cli['seconds']:.2f}", " / ".join(f"{s:.2f}" for s in cli["runs"]),
                      f"{cli['peak_rss_bytes'] / GB:.2f}",
                      f"{shape[2]}×{shape[1]}×{shape[0]} of {cli['output_spacing'][0]:g} mm"]
        if "error" in inner:
            cells += [inner["error"].replace("|", "/"), "", ""]
        else:
            warm = f"{inner['warm']:.3f}"
            if inner["device"] != row["device"]:
                warm += f" (ran on {inner['device']})"
            cells += [f"{inner['load']:.3f}", f"{inner['first']:.3f}", warm]
        cells.append(_goal(row["device"], cli))
        old = row.get("old")
        cells.append(_runs_cell(old))
        spare = row.get("spare")
        cells.append(_runs_cell(spare) if spare is None or "error" in spare else
                     f"{_runs_cell(spare)} {'≤' if spare['seconds'] <= GOAL_SPARE_SECONDS else '>'} "
                     f"{GOAL_SPARE_SECONDS:g} s")
        lines.append("| " + " | ".join(cells) + " |")
    if not gpu:
        lines.append(f"| GPU | {model} | no GPU on this machine (see section GPU) | | | | | | | – | | |")
    settings = [
        "Command: `x2ct benchmark --only endtoend` (or `python -m x2ct.benchmarks.endtoend`).",
        f"Model: `{model}`, {why}.",
        "End to end: `python -m x2ct reconstruct --view F.nrrd:frontal --view L.nrrd:lateral "
        f"--model {model} --device DEVICE --out CT.nrrd` as a child process, timed from start to exit: "
        "interpreter start, imports, reading the views, loading the model (for a trained model: weights checked "
        f"against their sha256 and read), inference and writing the CT. Median of {repeats} run(s); "
        f"{THREADS} threads, pinned to {THREADS} cores. CPU runs hide CUDA (CUDA_VISIBLE_DEVICES empty).",
        "Peak RSS: the largest peak resident memory (VmHWM) of one such child, Python and torch included.",
        "In-process columns: one other child reads the views, then times `inference.load` (model load) and "
        f"`inference.reconstruct` on the loaded model: the first call and the median of the next {repeats}.",
        "Inputs: frontal and lateral X2CT-mode DRRs (128² pixels of 3.9 mm, SAD 541 / SID 949 mm) of the sample "
        "chest CT (`x2ct sampledata fetch chest-ct`) written as NRRD"
        + (", rendered from the CT subsampled 4× in-plane and 2× across slices (quick run)." if quick else "."),
        f"Goals: ≤ {GOAL_CPU_SECONDS:g} s on {THREADS} CPU cores; < {GOAL_GPU_SECONDS:g} s with a GPU "
        "(issue 14: ≤ 2.5 s on 2 CPU cores).",
        "In a spare process: the same command handed to a spare `x2ct` process whose imports are done "
        "(`x2ct.jobs.Spare`, `python -m x2ct.standby`), as the Slicer module runs every reconstruction after the "
        "first (or the first, once the panel has been open a few seconds): timed from hand-over to exit, so "
        "reading the views, loading and checking the model, inference and writing the CT, not the imports. "
        f"A new spare each run, pinned to {THREADS} cores; median of {repeats}. Issue 14's goal: "
        f"≤ {GOAL_SPARE_SECONDS:g} s.",
        "Old code: the same command run, just before, from a checkout of the baseline commit (the code before "
        "issue 14's speed work, `x2ct.benchmarks.BASELINE_COMMIT`, `git worktree` under the temp folder; "
        "`X2CT_BENCHMARK_BASELINE=none` skips it).",
    ]
    if load is not None:
        settings.append(f"Load average (1 min) of this machine before / after: {load[0]:.1f} / {load[1]:.1f} "
                        f"on {os.cpu_count()} cores; other work on the machine slows the timings.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {line}" for line in settings) + "\n"


# --- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x2ct.benchmarks.endtoend", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per device, DRRs from a coarser CT")
    parser.add_argument("--inprocess", nargs=4, metavar=("FRONTAL", "LATERAL", "MODEL", "DEVICE"),
                        help="time model load and reconstruct in this process; print one JSON line")
    parser.add_argument("--repeats", type=int, default=3, help="with --inprocess: warm calls (median)")
    args = parser.parse_args(argv)
    if args.inprocess is None:
        print(run(quick=args.quick))
        return 0
    frontal, lateral, model, device = args.inprocess
    print(json.dumps(measure_in_process({"frontal": Path(frontal), "lateral": Path(lateral)}, model, device,
                                        args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
