"""Training checkpoints that a crash cannot corrupt and a hostile file cannot exploit.

A checkpoint is a folder ``checkpoints/step-NNNNNNN/`` holding the saved model
(``x2ct.modelfile.save_model``: the EMA weights when EMA is on, safetensors +
card) and ``state.safetensors``: raw weights, critic, optimisers, schedulers,
EMA, random-generator states and counters (``statefile``: no pickle, so
resuming never runs code). The folder is written under a temporary name,
fsynced and renamed when complete; then ``latest.json`` is replaced
atomically to point at it. A run killed at any moment leaves either the
previous pointer or the new one, each naming a complete folder. Reading
checks every pointer and file and refuses a damaged one in one line that
names it and says what to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from x2ct.errors import InputError
from x2ct.io.outputs import failure, write_text
from x2ct.modelfile import save_model
from x2ct.schema import read_json, validate
from x2ct.training import statefile
from x2ct.training.progress import LOG, TENSORBOARD

LATEST = "latest.json"
BEST = "best.json"
STATE = "state.safetensors"
PICKLED_STATE = "state.pt"  # written by x2ct before state.safetensors; never read
FINAL = "model"
#: What a run leaves in its folder besides config.yaml (a new run there needs --resume or --overwrite).
RUN_FILES = (LATEST, BEST, "checkpoints", FINAL, LOG, TENSORBOARD)


def run_files(out: Path) -> list[str]:
    """The ``RUN_FILES`` present in the run folder ``out``."""
    return [name for name in RUN_FILES if os.path.lexists(out / name)]


_FOLDER = re.compile(r"checkpoints/step-(\d{7})")
_POINTER_SCHEMA = {"type": "object", "required": ["step", "folder"], "maxProperties": 8,
                   "properties": {"step": {"type": "integer", "minimum": 0, "maximum": 9_999_999},
                                  "folder": {"type": "string", "maxLength": 64},
                                  "metric": {"type": "string", "maxLength": 200},
                                  "value": {"type": "number"}}}


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems cannot fsync folders
    finally:
        os.close(handle)


def _write_folder(folder: Path, model, card: dict, state: dict | None = None) -> None:
    """Write the model (and ``state``) into ``folder`` all or nothing: a sibling partial folder, then rename."""
    from safetensors import SafetensorError

    partial = folder.with_name(f".{folder.name}.partial")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        try:
            save_model(model, partial, card)  # refuses non-finite weights
        except SafetensorError as error:
            raise statefile.as_os_error(error) from None
        if state is not None:
            statefile.write(state, partial / STATE)
        for file in partial.iterdir():
            _fsync(file)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
        _fsync(folder.parent)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise failure(folder, error) from None


def save(out: Path, step: int, model, state: dict, card: dict) -> Path:
    """Write the checkpoint of ``step`` and point ``latest.json`` at it; return its folder."""
    folder = out / "checkpoints" / f"step-{step:07d}"
    folder.parent.mkdir(exist_ok=True)
    _write_folder(folder, model, card, state)
    write_text(out / LATEST, json.dumps({"step": step, "folder": str(folder.relative_to(out).as_posix())}))
    return folder


def save_final(out: Path, model, card: dict) -> Path:
    """Write the run's final model to ``out/model`` all or nothing."""
    _write_folder(out / FINAL, model, card)
    return out / FINAL


def mark_best(out: Path, step: int, folder: Path, metric: str, value: float) -> None:
    write_text(out / BEST, json.dumps({"step": step, "folder": folder.relative_to(out).as_posix(),
                                       "metric": metric, "value": value}))


def _newest_complete(out: Path) -> str | None:
    root = out / "checkpoints"
    names = sorted(p.name for p in root.glob("step-*") if re.fullmatch(r"step-\d{7}", p.name)
                   and (p / STATE).is_file()) if root.is_dir() else []
    return f"checkpoints/{names[-1]}" if names else None


def _advice(out: Path, name: str) -> str:
    if name != LATEST:
        return f"delete {out / name} (only the record of the best checkpoint is lost) and resume again."
    newest = _newest_complete(out)
    if newest:
        step = int(newest.rsplit("-", 1)[1])
        return (f"the newest complete checkpoint is {newest}: write {{\"step\": {step}, \"folder\": \"{newest}\"}} "
                f"into {out / LATEST} to resume from it, or start a new run in another --out.")
    return "no complete checkpoint is left: start a new run in another --out."


def read_pointer(out: Path, name: str) -> dict | None:
    """A checked pointer file (``latest.json``, ``best.json``), or None when there is none."""
    path = out / name
    if not os.path.lexists(path):
        return None
    try:
        pointer = read_json(path, "The run pointer", max_bytes=4096)
    except InputError as error:
        raise InputError(f"{str(error).rstrip('.')}; {_advice(out, name)}") from None
    problems = validate(pointer, _POINTER_SCHEMA, name)
    if not problems and (not _FOLDER.fullmatch(pointer["folder"])
                         or int(_FOLDER.fullmatch(pointer["folder"]).group(1)) != pointer["step"]):
        problems = [f"folder {pointer['folder'][:64]!r} is not checkpoints/step-{pointer['step']:07d}"]
    if problems:
        raise InputError(f"The run's {path} is damaged ({problems[0]}); {_advice(out, name)}")
    return pointer


def latest(out: Path) -> tuple[Path, dict] | None:
    """(folder, state) of the last complete checkpoint, or None when the run has none.

    A damaged pointer, a pointer to a missing folder or a missing, pickled or
    damaged state raises one InputError line; nothing is changed.
    """
    pointer = read_pointer(out, LATEST)
    if pointer is None:
        return None
    folder = out / pointer["folder"]
    if not folder.is_dir():
        raise InputError(f"The run's {out / LATEST} points at {pointer['folder']}, which does not exist; "
                         f"{_advice(out, LATEST)}")
    if not (folder / STATE).is_file():
        if os.path.lexists(folder / PICKLED_STATE):
            raise InputError(f"The checkpoint {folder} holds {PICKLED_STATE}, the pickled state of an older x2ct, "
                             "which is not read because unpickling can run code; start a new run in another --out "
                             "(the checkpoint's model can still be used with reconstruct --model).")
        raise InputError(f"The checkpoint {folder} has no {STATE}; {_advice(out, LATEST)}")
    return folder, statefile.read(folder / STATE)


def prune(out: Path) -> None:
    """Delete checkpoints other than the latest and the best, and leftovers of interrupted writes."""
    keep = {p["folder"] for p in (read_pointer(out, LATEST), read_pointer(out, BEST)) if p}
    root = out / "checkpoints"
    for folder in root.iterdir() if root.is_dir() else ():
        if folder.relative_to(out).as_posix() not in keep:
            shutil.rmtree(folder, ignore_errors=True)
