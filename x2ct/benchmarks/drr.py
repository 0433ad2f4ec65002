"""DRR speed and agreement: our projector against Plastimatch ``drr -i exact`` in the same run.

Two 128x128 views (PA frontal + lateral, cone beam, the X2CT geometry: SAD
541 mm, SID 949 mm, 500 mm detector) of the sample chest CT, once resampled
by the X2CT protocol to 128^3 (2.5 mm) and once at full size (512x512x133).
Both tools get the same HU volume and the same HU conversion (Plastimatch's).
Both run on the CPU, with 1 and with 2 threads.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TITLE = "DRR projector vs Plastimatch (CPU)"
THREADS = (1, 2)
ANGLES = (0.0, 90.0)


def run(quick: bool) -> str:
    from x2ct import io, sampledata
    from x2ct.data.protocol import get_protocol
    from x2ct.benchmarks import baseline_tree
    from x2ct.image import to_canonical
    from x2ct.physics import X2CT_GEOMETRY, plastimatch

    previous = torch.get_num_threads()
    try:
        ct = io.read_ct(sampledata.path("chest-ct"))
        cases = [("128^3, 2.5 mm (X2CT protocol)", to_canonical(get_protocol("x2ct", 128).resample(ct))),
                 ("512x512x133, 0.70x0.70x2.5 mm (full CT)", to_canonical(ct))]
        geometry = X2CT_GEOMETRY.with_pixels(128)
        repeats = 3 if quick else 10
        have_plastimatch = plastimatch.binary() is not None
        baseline = baseline_tree()
        rows = []
        for name, volume in cases:
            hu = np.ascontiguousarray(volume.array, dtype=np.float32)
            spacing = (volume.spacing[2], volume.spacing[1], volume.spacing[0])
            for threads in THREADS:
                torch.set_num_threads(threads)
                row = {"volume": name, "threads": threads, **_ours(hu, spacing, geometry, repeats)}
                images = row.pop("images")
                if baseline is not None:
                    row["old"] = _projection_only(hu, spacing, geometry, repeats, threads, baseline)
                if have_plastimatch:
                    row.update(_plastimatch(hu, spacing, geometry, repeats, images, threads))
                rows.append(row)
        torch.set_num_threads(max(THREADS))
        x2ct_mode = _x2ct_mode(cases[0][1], repeats)
        cuda = _cuda(cases, geometry, repeats) if torch.cuda.is_available() else None
    finally:
        torch.set_num_threads(previous)
    return _table(rows, repeats, have_plastimatch, x2ct_mode, cuda, baseline)


#: Times ``project`` alone (attenuation precomputed) in a child running the ``x2ct`` its PYTHONPATH names.
_PROJECTION_TIMER = """
import json, statistics, sys, time
import numpy as np, torch
from x2ct.physics import X2CT_GEOMETRY, plastimatch_mu, project
path, spacing, threads, repeats, pixels, angles = sys.argv[1], json.loads(sys.argv[2]), *map(int, sys.argv[3:6]), \
    json.loads(sys.argv[6])
torch.set_num_threads(threads)
mu, geometry = plastimatch_mu(torch.from_numpy(np.load(path))[None, None]), X2CT_GEOMETRY.with_pixels(pixels)
walls, cpus = [], []
with torch.no_grad():
    for run in range(repeats + 1):
        started, cpu = time.perf_counter(), time.process_time()
        project(mu, spacing, angles, geometry)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
print(json.dumps({"s": statistics.median(walls[1:]), "cpu_s": statistics.median(cpus[1:])}))
"""


def _projection_only(hu: np.ndarray, spacing, geometry, repeats: int, threads: int, tree: Path) -> dict:
    """Median wall and CPU seconds of ``project`` alone for both views, in a fresh child running ``tree``'s code."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hu.npy"
        np.save(path, hu)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(tree)}
        done = subprocess.run([sys.executable, "-c", _PROJECTION_TIMER, str(path), json.dumps(list(spacing)),
                               str(threads), str(repeats), str(geometry.pixels[0]), json.dumps(list(ANGLES))],
                              capture_output=True, text=True, env=env, cwd=tree, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"projection timer failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ours(hu: np.ndarray, spacing, geometry, repeats: int) -> dict:
    """Median wall and CPU time of HU -> mu + both views, peak memory, and the images."""
    from x2ct.physics import hu_to_mu, plastimatch_mu, project

    volume = torch.from_numpy(hu)[None, None]

    def render():
        with torch.no_grad():
            return project(plastimatch_mu(volume), spacing, ANGLES, geometry)

    render()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        render()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    images, peak = _extra_memory_mib(render)
    mu, projections, projection_cpus = plastimatch_mu(volume), [], []
    with torch.no_grad():
        for _ in range(repeats):
            started, cpu = time.perf_counter(), time.process_time()
            project(mu, spacing, ANGLES, geometry)
            projections.append(time.perf_counter() - started)
            projection_cpus.append(time.process_time() - cpu)
    result = {"ours_s": statistics.median(walls), "ours_cpu_s": statistics.median(cpus), "ours_peak": peak,
              "ours_project_s": statistics.median(projections),
              "ours_project_cpu_s": statistics.median(projection_cpus), "images": images[0].numpy()}
    if hu.shape[0] <= 128 and torch.get_num_threads() == max(THREADS):  # training cost: forward + backward through the projector
        trainable = torch.from_numpy(hu)[None, None].requires_grad_()
        started = time.perf_counter()
        for _ in range(repeats):
            project(hu_to_mu(trainable), spacing, ANGLES, geometry).sum().backward()
        result["backward_s"] = (time.perf_counter() - started) / repeats
    return result


def _plastimatch(hu: np.ndarray, spacing, geometry, repeats: int, ours: np.ndarray, threads: int) -> dict:
    from x2ct.physics import plastimatch

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ct.mha"
        plastimatch.write_volume(hu, spacing, path)
        runs = [plastimatch.drr(path, ANGLES, geometry, threads=threads) for _ in range(repeats)]
    images = runs[0][0]
    return {"pm_render_s": statistics.median(r.render_seconds for _, r in runs),
            "pm_s": statistics.median(r.seconds for _, r in runs),
            "pm_cpu_s": statistics.median(r.cpu_seconds for _, r in runs),
            "pm_peak": max(r.peak_mib for _, r in runs),
            "ncc": [_ncc(a, b) for a, b in zip(ours, images)],
            "mean_diff": float(np.abs(ours - images).mean() / images.mean())}


def _x2ct_mode(volume, repeats: int) -> float:
    """Seconds for the two X2CT-protocol views (320^2 detector, normalised, resized to 128^2)."""
    from x2ct.physics import x2ct_views

    hu = torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))[None, None]
    spacing = (volume.spacing[2], volume.spacing[1], volume.spacing[0])
    x2ct_views(hu, spacing, ANGLES)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        x2ct_views(hu, spacing, ANGLES)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _cuda(cases, geometry, repeats: int) -> list[tuple[str, float]]:
    """Median seconds for both views on the GPU, volume already on the device."""
    from x2ct.physics import plastimatch_mu, project

    results = []
    for name, volume in cases:
        mu = plastimatch_mu(torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32)).cuda())[None, None]
        spacing = (volume.spacing[2], volume.spacing[1], volume.spacing[0])
        times = []
        for _ in range(repeats + 1):
            torch.cuda.synchronize()
            started = time.perf_counter()
            project(mu, spacing, ANGLES, geometry)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        results.append((name, statistics.median(times[1:])))
    return results


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _extra_memory_mib(function):
    """(result, MiB of resident memory the call added at its peak); Linux only, else NaN."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:  # "5" resets the peak (VmHWM) to now
            handle.write("5")
        before = _status_kib("VmRSS")
        result = function()
        return result, (_status_kib("VmHWM") - before) / 1024
    except OSError:
        return function(), float("nan")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))


def _table(rows: list[dict], repeats: int, have_plastimatch: bool, x2ct_mode_s: float, cuda, baseline) -> str:
    lines = [f"Command: `x2ct benchmark --only drr`. Two 128x128 views (frontal 0 deg + lateral 90 deg), cone "
             f"beam, SAD 541 mm, SID 949 mm, 500x500 mm detector; sample chest CT; both tools with the same number "
             f"of CPU threads (torch intra-op threads, OMP_NUM_THREADS); median of {repeats} runs after a warm-up. Ours: HU -> attenuation + both views, "
             f"`x2ct.physics.project` (Joseph's method, separable at 0/90 deg). Plastimatch: `drr -A cpu -i exact` "
             f"(both views in one call); 'render' is its own timing of the ray casting, 'run' the whole program "
             f"(read the MHA, convert HU, render, write). CPU = user + system seconds over all threads. Peak RSS: "
             f"Plastimatch's whole process; ours, what the call added to the process (its input volume excluded). "
             f"'ours projection s': `project` alone on the attenuation volume (what Plastimatch's render times); "
             f"'old code': the same in a fresh process running the code of the baseline commit "
             f"(`x2ct.benchmarks.BASELINE_COMMIT`, checked out with `git worktree`).", ""]
    header = "| volume | threads | ours s | ours CPU s | ours extra peak RSS MiB | ours projection s (CPU s) |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if baseline is not None:
        header += " old code projection s (CPU s) | old / new, CPU s |"
        rule += "---:|---:|"
    if have_plastimatch:
        header += (" Plastimatch render s | Plastimatch run s | Plastimatch CPU s | Plastimatch peak RSS MiB |"
                   " NCC frontal | NCC lateral | mean abs diff / mean |")
        rule += "---:|---:|---:|---:|---:|---:|---:|"
    lines += [header, rule]
    for row in rows:
        line = (f"| {row['volume']} | {row['threads']} | {row['ours_s']:.3f} | {row['ours_cpu_s']:.3f} | "
                f"{row['ours_peak']:.0f} | {row['ours_project_s']:.3f} ({row['ours_project_cpu_s']:.3f}) |")
        if baseline is not None:
            old = row["old"]
            line += f" {old['s']:.3f} ({old['cpu_s']:.3f}) | {old['cpu_s'] / row['ours_project_cpu_s']:.2f}x |"
        if have_plastimatch:
            line += (f" {row['pm_render_s']:.3f} | {row['pm_s']:.3f} | {row['pm_cpu_s']:.3f} | {row['pm_peak']:.0f} |"
                     f" {row['ncc'][0]:.4f} | {row['ncc'][1]:.4f} | {row['mean_diff']:.4f} |")
        lines.append(line)
    lines.append("")
    for row in rows:
        if "backward_s" in row:
            lines.append(f"- Training cost (ours, 128^3, {row['threads']} threads, forward + backward of both views): "
                         f"{row['backward_s']:.3f} s.")
    lines.append(f"- X2CT mode (ours, 128^3, {max(THREADS)} threads, both views rendered on 320x320 pixels, normalised as X2CT's PNGs, "
                 f"resized to 128^2): {x2ct_mode_s:.3f} s.")
    for name, seconds in cuda or []:
        lines.append(f"- GPU ({torch.cuda.get_device_name(0)}), ours, {name}: {seconds:.4f} s for both views.")
    if not have_plastimatch:
        lines.append("- Plastimatch is not installed here (`pip install 'x2ct[reference]'`): no reference columns.")
    lines.append(f"- Load average while measuring: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
                 f"(on a shared machine wall times vary; CPU times less so).")
    return "\n".join(lines)
