"""Training checkpoints that a crash cannot corrupt.

A checkpoint is a folder ``checkpoints/step-NNNNNNN/`` holding the saved model
(``x2ct.modelfile.save_model``: the EMA weights when EMA is on, safetensors +
card) and ``state.pt``: raw weights, critic, optimisers, schedulers, EMA and
random-generator states as plain tensors and numbers (read back with
``torch.load(weights_only=True)``: no pickled code). The folder is written
under a temporary name and renamed when complete; then ``latest.json`` is
replaced atomically to point at it. A run killed at any moment leaves either
the previous pointer or the new one, each naming a complete folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from x2ct.modelfile import save_model

LATEST = "latest.json"
BEST = "best.json"
STATE = "state.pt"


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(partial, path)


def save(out: Path, step: int, model, state: dict, card: dict) -> Path:
    """Write the checkpoint of ``step`` and point ``latest.json`` at it; return its folder."""
    folder = out / "checkpoints" / f"step-{step:07d}"
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_model(model, partial, card)  # refuses non-finite weights
    torch.save(state, partial / STATE)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    _write_json(out / LATEST, {"step": step, "folder": str(folder.relative_to(out))})
    return folder


def mark_best(out: Path, step: int, folder: Path, metric: str, value: float) -> None:
    _write_json(out / BEST, {"step": step, "folder": str(folder.relative_to(out)), "metric": metric, "value": value})


def read_pointer(out: Path, name: str) -> dict | None:
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None


def latest(out: Path) -> tuple[Path, dict] | None:
    """(folder, state) of the last complete checkpoint, or None."""
    pointer = read_pointer(out, LATEST)
    if pointer is None:
        return None
    folder = out / pointer["folder"]
    return folder, torch.load(folder / STATE, weights_only=True, map_location="cpu")


def prune(out: Path) -> None:
    """Delete checkpoints other than the latest and the best, and leftovers of interrupted writes."""
    keep = {p["folder"] for p in (read_pointer(out, LATEST), read_pointer(out, BEST)) if p}
    root = out / "checkpoints"
    for folder in root.iterdir() if root.is_dir() else ():
        if str(folder.relative_to(out)) not in keep:
            shutil.rmtree(folder, ignore_errors=True)
