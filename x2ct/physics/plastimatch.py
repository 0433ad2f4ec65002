"""Plastimatch ``drr`` as a reference for our projector (tests and benchmark).

Plastimatch is the tool behind the X2CT benchmark DRRs. Its pip wheel ships
the program inside the package (``plastimatch/bin/plastimatch``). What we
found by reading its source and probing the 1.10 binary with an asymmetric
phantom, and how this module maps it to our convention:

* Input: an MHA whose direction is the identity and whose centre is at the
  origin (a flipped or off-centre header gives blank or shifted views). We
  write the canonical volume flipped along axis 0, so that index k runs
  superior (LPS +z), j posterior (+y), i to the patient's left (+x).
* Gantry angle phi puts the source at isocentre + SAD * (cos phi, -sin phi, 0)
  (LPS): phi = 0 is a lateral view with the source on the patient's left,
  phi = 90 degrees the AP view. Our angle theta (0 = PA) is phi = 270 - theta.
  Beware: 1.10 converts the spacing ``-N`` from degrees but uses the start
  angle ``-y`` as radians (``-y 90`` is 90 rad, an oblique view), so we pass
  the start angle in radians.
* Image rows run superior -> inferior (first row stored first, despite PFM's
  usual bottom-up order); columns run along d x z (d: source -> detector),
  the reverse of ours, so we flip columns.
* ``-r`` and ``-z`` take "columns rows" (the help text says "row col").
* HU -> attenuation: 0.022 * (1 + HU/1000) per mm above -800 HU, else 0
  (``x2ct.physics.attenuation.plastimatch_mu``); the ray sum is divided by 10
  (mm -> cm). We multiply by 10 to return the plain line integral.
* ``-i exact`` traces each ray through the voxels (exact intersection
  lengths, nearest-voxel values).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from x2ct.errors import X2CTError
from x2ct.physics.geometry import DRRGeometry


def binary() -> Path | None:
    """The plastimatch program of the installed wheel (or on PATH), or None."""
    spec = importlib.util.find_spec("plastimatch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bin" / "plastimatch"
        if candidate.is_file():
            return candidate
    found = shutil.which("plastimatch")
    return Path(found) if found else None


def write_volume(hu_canonical: np.ndarray, spacing, path: Path) -> None:
    """Canonical HU array (D, H, W) -> MHA with identity direction, centred on zero."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(hu_canonical[::-1], dtype=np.float32))
    spacing_xyz = (float(spacing[2]), float(spacing[1]), float(spacing[0]))
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(tuple(-(n - 1) / 2 * s for n, s in zip(image.GetSize(), spacing_xyz)))
    sitk.WriteImage(image, str(path))


def read_pfm(path: Path) -> np.ndarray:
    """A PFM image as Plastimatch writes it (rows top to bottom)."""
    with open(path, "rb") as handle:
        kind = handle.readline().strip()
        width, height = (int(v) for v in handle.readline().split())
        scale = float(handle.readline())
        data = np.frombuffer(handle.read(), dtype="<f4" if scale < 0 else ">f4")
    if kind != b"Pf" or data.size != width * height:
        raise X2CTError(f"{path} is not a single-channel PFM image of {width}x{height}.")
    return data.reshape(height, width)


@dataclasses.dataclass(frozen=True)
class Run:
    """What one ``plastimatch drr`` call cost."""

    seconds: float  # wall time of the whole program: read, convert, render, write
    render_seconds: float  # its own "Total time" of the rendering loop
    cpu_seconds: float  # user + system time of the process (all threads)
    peak_mib: float  # its peak resident memory


def drr(volume_path: Path, angles, geometry: DRRGeometry, threads: int = 2,
        workdir: Path | None = None) -> tuple[np.ndarray, Run]:
    """Render views (our angles) of an MHA written by ``write_volume`` (POSIX: uses ``os.wait4``).

    Returns images (V, rows, cols) as plain line integrals in our orientation,
    and the cost of the run. One call renders all views; they must be equally
    spaced, as Plastimatch's ``-a``/``-N`` make them.
    """
    program = binary()
    if program is None:
        raise X2CTError("plastimatch is not installed: pip install 'x2ct[reference]'.")
    if geometry.beam != "cone":
        raise X2CTError("Plastimatch drr renders cone-beam views only.")
    angles = [float(a) for a in angles]
    steps = np.diff(angles)
    if len(angles) > 1 and not np.allclose(steps, steps[0]):
        raise X2CTError("Plastimatch renders equally spaced angles in one call; pass them one by one.")
    iso = geometry.isocentre  # canonical (a0, a1, a2) -> LPS (x, y, z) = (a2, a1, -a0)
    rows, cols = geometry.pixels
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        command = [str(program), "drr", "-A", "cpu", "-i", "exact", "-t", "pfm",
                   "--sad", f"{geometry.sad}", "--sid", f"{geometry.sid}",
                   "-r", f"{cols} {rows}", "-z", f"{geometry.detector_mm[1]} {geometry.detector_mm[0]}",
                   "-o", f"{iso[2]} {iso[1]} {-iso[0]}",
                   "-y", f"{np.radians((270.0 - angles[0]) % 360.0):.12g}", "-a", str(len(angles)),
                   "-N", f"{(-steps[0] if len(angles) > 1 else 90.0) % 360.0}",
                   "-O", f"{folder}/view", str(volume_path)]
        log = Path(folder) / "log.txt"
        with open(log, "w") as output:
            started = time.perf_counter()
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                       env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
            status, usage, peak_mib = _wait(process.pid)
            seconds = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
        text = log.read_text()
        if process.returncode != 0:
            raise X2CTError(f"plastimatch drr failed: {text.strip()}")
        images = [read_pfm(Path(f"{folder}/view{v:04d}.pfm"))[:, ::-1] * 10.0 for v in range(len(angles))]
    render = re.search(r"Total time: ([0-9.eE+-]+)", text)
    run = Run(seconds=seconds, render_seconds=float(render.group(1)) if render else float("nan"),
              cpu_seconds=usage.ru_utime + usage.ru_stime, peak_mib=peak_mib)
    return np.stack(images).astype(np.float32), run


def _wait(pid: int):
    """Reap the child: (status, rusage, its peak memory in MiB, NaN where /proc is missing).

    The peak is sampled from /proc/PID/status (VmHWM) while the program runs:
    the rusage maximum would count the Python parent's memory, which the
    child shares until it execs.
    """
    peak_kib = 0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, peak_kib / 1024 if peak_kib else float("nan")
        try:
            with open(f"/proc/{pid}/status") as handle:
                peak_kib = max([peak_kib] + [int(line.split()[1]) for line in handle if line.startswith("VmHWM")])
        except (OSError, ValueError):
            pass
        time.sleep(0.001)
