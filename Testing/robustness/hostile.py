"""Hostile inputs and the checks every refusal must pass, for the robustness suite.

``hostile_files`` makes broken, mistyped and special files in a folder;
``refused`` runs one CLI command in-process and asserts the promise: exit
status 2, exactly one line on stderr that names the problem, no traceback,
and no new, changed or removed file anywhere under the watched folder (a
snapshot of names and SHA-256 before and after). ``tiny_model`` and
``xray_views`` make the small model folder and views the commands need.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np

from x2ct.cli import main
from x2ct.image import Volume, XRay
from x2ct.io import write_volume, write_xray
from x2ct.modelfile import save_model

REPOSITORY = Path(__file__).resolve().parents[2]
#: A file name whose bytes are not UTF-8 (latin-1 'é').
NOT_UTF8 = os.fsdecode(b"caf\xe9.nrrd")


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones too) -> its kind and, for files, SHA-256 and mode."""
    tree = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            key = os.fsencode(path.relative_to(folder)).decode("utf-8", "backslashreplace")
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                tree[key] = f"file {hashlib.sha256(path.read_bytes()).hexdigest()} {stat.S_IMODE(info.st_mode):o}"
            else:
                tree[key] = "dir" if stat.S_ISDIR(info.st_mode) else f"special {stat.S_IFMT(info.st_mode)}"
    return tree


def refused(argv: list[str], capfd, watched: Path, *words: str) -> str:
    """Run ``x2ct argv``; assert exit 2, one stderr line (with ``words``), no traceback, ``watched`` untouched."""
    before = snapshot(watched)
    capfd.readouterr()
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code} for {argv}: {err or out}"
    assert len(lines) == 1, f"{len(lines)} stderr lines for {argv}:\n{err}"
    assert "Traceback" not in err + out
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in: {lines[0]}"
    assert len(lines[0]) < 1000, f"over-long message ({len(lines[0])} characters)"
    assert snapshot(watched) == before, f"files changed by {argv}"
    return lines[0]


def run_x2ct(argv: list[str], timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """``python -m x2ct argv`` in a child process (for kills, hangs, locks and names the parent must survive)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    return subprocess.run([sys.executable, "-m", "x2ct", *map(str, argv)], capture_output=True, timeout=timeout,
                          env=env, cwd=REPOSITORY, **options)


def tiny_model(folder: Path, **card) -> Path:
    """A tiny two-view X2CT-GAN model folder (card + safetensors), built and saved as the trainer would."""
    from x2ct.models import build

    save_model(build("x2ct-gan", "tiny"), folder, {"description": "tiny test network", **card})
    return folder


def xray_views(folder: Path) -> dict[str, Path]:
    """A frontal and a lateral 40x40 X-ray (NRRD, 2 mm pixels)."""
    rng = np.random.default_rng(0)
    return {name: write_xray(XRay(rng.random((40, 40)).astype(np.float32), (2.0, 2.0), name),
                             folder / f"{name}.nrrd") for name in ("frontal", "lateral")}


def small_ct(path: Path) -> Path:
    """A 24^3 CT of 4 mm voxels (air around a water cube) in HU."""
    array = np.full((24, 24, 24), -1000.0, dtype=np.float32)
    array[6:18, 6:18, 6:18] = 0.0
    return write_volume(Volume(array, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), np.eye(3)), path)


def hostile_files(folder: Path, good_xray: Path, good_ct: Path) -> dict[str, Path]:
    """Broken, mistyped and special files, each a plausible thing for a user to pass by mistake or malice."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}

    def put(name: str, data: bytes) -> None:
        made[name] = folder / name
        made[name].write_bytes(data)

    xray_bytes, ct_bytes = good_xray.read_bytes(), good_ct.read_bytes()
    put("empty.nrrd", b"")
    put("truncated-xray.nrrd", xray_bytes[: len(xray_bytes) // 2])
    put("truncated-ct.nrrd", ct_bytes[: len(ct_bytes) * 2 // 3])
    put("header-only.nrrd", xray_bytes.split(b"\n\n")[0] + b"\n\n")
    put("random.png", np.random.default_rng(1).bytes(4096))
    put("random.nii.gz", gzip.compress(np.random.default_rng(2).bytes(4096)))
    put("text.nrrd", b"this is not an image\n" * 10)
    put("pickle.dcm", pickle.dumps({"a": 1}) * 40)
    put("huge-size.nrrd", b"NRRD0004\ntype: float\ndimension: 3\nsizes: 100000 100000 100000\n"
                          b"encoding: raw\nendian: little\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n\n\0\0\0\0")
    put("nan-xray.nrrd", xray_bytes)  # replaced below by a NaN-filled image
    nan_image = XRay(np.full((40, 40), np.nan, dtype=np.float32), (2.0, 2.0), "frontal")
    _write_raw_nrrd(made["nan-xray.nrrd"], nan_image.image)
    made["folder.png"] = folder / "folder.png"
    made["folder.png"].mkdir()
    if hasattr(os, "mkfifo"):
        made["fifo.nrrd"] = folder / "fifo.nrrd"
        os.mkfifo(made["fifo.nrrd"])
    made["loop.nrrd"] = folder / "loop.nrrd"
    made["loop.nrrd"].symlink_to("loop.nrrd")
    made["missing.nrrd"] = folder / "missing.nrrd"
    return made


def _write_raw_nrrd(path: Path, image: np.ndarray) -> None:
    """A raw 2D float NRRD written by hand (x2ct's own writer refuses non-finite values)."""
    rows, cols = image.shape
    header = (f"NRRD0004\ntype: float\ndimension: 2\nsizes: {cols} {rows}\nencoding: raw\nendian: little\n"
              "space directions: (2,0) (0,2)\n\n").encode()
    path.write_bytes(header + np.ascontiguousarray(image, dtype="<f4").tobytes())


def write_card(folder: Path, card: dict) -> Path:
    (folder / "model.json").write_text(json.dumps(card))
    return folder
