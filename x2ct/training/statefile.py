"""A training state in one safetensors file: no pickle, so resuming can never run code.

The state of a run (raw weights, critic, optimisers, LR schedulers, EMA,
random-generator states, counters, last metrics) is a tree of dicts, lists,
tuples, numbers, strings and tensors. ``write`` stores its tensors as
safetensors and the rest of the tree as JSON in the file's metadata, each
tensor replaced by ``{"$tensor": key}``; dicts whose keys are not all strings
(optimiser states are keyed by parameter index) and tuples (Adam's betas) are
tagged so ``read`` gives back exactly what was written.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import torch

from x2ct.errors import InputError

SKELETON = "x2ct.training_state"
VERSION = 1
#: Paper-size models write records well under 1 MB.
MAX_RECORD_CHARS = 16 * 2**20


def _encode(value, tensors: dict):
    if torch.is_tensor(value):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu").contiguous()
        return {"$tensor": key}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in value):
            raise TypeError("a training state may only have string or integer keys")
        return {"$items": [[k, _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a training state cannot hold a {type(value).__name__}")


def _decode(value, tensors: dict):
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if list(value) == ["$tensor"]:
        return tensors[value["$tensor"]]
    if list(value) == ["$tuple"]:
        return tuple(_decode(v, tensors) for v in value["$tuple"])
    if list(value) == ["$items"]:
        return {k: _decode(v, tensors) for k, v in value["$items"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def as_os_error(error: Exception) -> OSError:
    """safetensors reports I/O failures (a full disk) as SafetensorError: give them back their errno."""
    code = re.search(r"os error (\d+)", str(error))
    return OSError(int(code.group(1)) if code else errno.EIO, " ".join(str(error).split()))


def write(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` (safetensors) and fsync it."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tensors: dict = {}
    skeleton = _encode(state, tensors)
    try:
        save_file(tensors, str(path), metadata={SKELETON: json.dumps({"version": VERSION, "state": skeleton})})
    except SafetensorError as error:
        raise as_os_error(error) from None
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def read(path: Path) -> dict:
    """The state written by ``write``; a damaged or foreign file raises one InputError line naming it."""
    from safetensors import SafetensorError, safe_open

    def damaged(reason: str) -> InputError:
        return InputError(f"The checkpoint state {path} is damaged or not an x2ct training state ({reason}); "
                          "restore the run folder from a copy, or start a new run in another --out.")

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise damaged(" ".join(str(error).split())[:200] or type(error).__name__) from None
    if SKELETON not in metadata:
        raise damaged("no training-state record in its header")
    if len(metadata[SKELETON]) > MAX_RECORD_CHARS:
        raise damaged(f"a record of {len(metadata[SKELETON])} characters; x2ct writes far less")
    try:
        record = json.loads(metadata[SKELETON])
        if record.get("version") != VERSION:
            raise damaged(f"format version {record.get('version')!r}, this x2ct reads version {VERSION}")
        state = _decode(record["state"], tensors)
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise damaged(f"unreadable record: {type(error).__name__} {str(error)[:80]}") from None
    if not isinstance(state, dict):
        raise damaged("the record is not a mapping")
    return state
