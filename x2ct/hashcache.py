"""SHA256 of large files, remembered between runs while the file is unchanged.

Checking model weights against their card's sha256 on every run reads the
whole file; ``cached_sha256`` reads it once and afterwards trusts a record
keyed by the file's resolved path and its size, modification and
status-change times (ns), inode and device. Any write, rename over, ``touch``
or copy changes at least one of them (the status-change time cannot be set
back by a user), so a changed file is hashed again. The records live in one
small JSON file in the user cache (``<x2ct cache>/sha256.json``), at most
``MAX_ENTRIES`` of them, written to a temporary file, flushed and renamed;
an unreadable or damaged record file is ignored and an unwritable cache only
means hashing again next time.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from x2ct.checksum import sha256_file

RECORD_NAME = "sha256.json"
MAX_ENTRIES = 256
_VERSION = 1


def cached_sha256(path, cache_file: str | os.PathLike | None = None) -> str:
    """The hex sha256 of ``path``, from the record when the file is unchanged since it was hashed."""
    path = Path(path).resolve()
    records_path = Path(cache_file) if cache_file is not None else default_cache_file()
    key = str(path)
    before = _fingerprint(path)
    records = _read(records_path)
    found = records.get(key)
    if isinstance(found, dict) and found.get("stat") == before and isinstance(found.get("sha256"), str):
        return found["sha256"]
    digest = sha256_file(path)
    if _fingerprint(path) == before:  # not changed while we read it
        records.pop(key, None)
        records[key] = {"stat": before, "sha256": digest}
        _write(records_path, dict(list(records.items())[-MAX_ENTRIES:]))
    return digest


def default_cache_file() -> Path:
    from x2ct.sampledata import cache_dir

    return cache_dir() / RECORD_NAME


def _fingerprint(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _read(records_path: Path) -> dict:
    try:
        data = json.loads(records_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def _write(records_path: Path, records: dict) -> None:
    """Replace the record file atomically; a cache that cannot be written is skipped, never an error."""
    partial = None
    try:
        records_path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=f".{RECORD_NAME}.", suffix=".partial", dir=records_path.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump({"version": _VERSION, "files": records}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, records_path)
    except OSError:
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
