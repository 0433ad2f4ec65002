"""x2ct.hashcache: weights hashed once, re-hashed whenever the file changes, cache damage harmless."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from x2ct import hashcache


@pytest.fixture
def counted(monkeypatch):
    """Count the real hashing calls."""
    calls = []
    real = hashcache.sha256_file

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashcache, "sha256_file", counting)
    return calls


def test_second_call_uses_the_record(tmp_path, counted):
    weights, records = tmp_path / "model.safetensors", tmp_path / "cache" / "sha256.json"
    weights.write_bytes(b"a" * 1000)
    expected = hashlib.sha256(b"a" * 1000).hexdigest()
    assert hashcache.cached_sha256(weights, records) == expected
    assert hashcache.cached_sha256(weights, records) == expected
    assert len(counted) == 1
    assert json.loads(records.read_text())["files"][str(weights.resolve())]["sha256"] == expected
    assert not [p for p in records.parent.iterdir() if p.name.endswith(".partial")]


def test_same_size_and_mtime_rewrite_is_hashed_again(tmp_path, counted):
    """A rewrite that keeps size and mtime (touch -r) still changes the status-change time."""
    weights, records = tmp_path / "w.bin", tmp_path / "sha256.json"
    weights.write_bytes(b"a" * 1000)
    hashcache.cached_sha256(weights, records)
    stat = weights.stat()
    time.sleep(0.05)  # past the file system's timestamp granularity
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert hashcache.cached_sha256(weights, records) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert len(counted) == 2


def test_replaced_file_is_hashed_again(tmp_path, counted):
    weights, other, records = tmp_path / "w.bin", tmp_path / "x.bin", tmp_path / "sha256.json"
    weights.write_bytes(b"a" * 10)
    hashcache.cached_sha256(weights, records)
    other.write_bytes(b"c" * 10)
    os.replace(other, weights)
    assert hashcache.cached_sha256(weights, records) == hashlib.sha256(b"c" * 10).hexdigest()


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 1, "files": []}', '{"version": 99, "files": {}}'])
def test_damaged_record_file_is_ignored_and_replaced(tmp_path, content):
    weights, records = tmp_path / "w.bin", tmp_path / "sha256.json"
    weights.write_bytes(b"z")
    records.write_text(content)
    assert hashcache.cached_sha256(weights, records) == hashlib.sha256(b"z").hexdigest()
    assert json.loads(records.read_text())["version"] == 1


def test_forged_record_for_other_stat_is_not_trusted(tmp_path):
    weights, records = tmp_path / "w.bin", tmp_path / "sha256.json"
    weights.write_bytes(b"real")
    records.write_text(json.dumps({"version": 1, "files": {str(weights.resolve()): {"stat": [4, 0, 0, 0, 0],
                                                                                  "sha256": "0" * 64}}}))
    assert hashcache.cached_sha256(weights, records) == hashlib.sha256(b"real").hexdigest()


def test_unwritable_cache_still_returns_the_hash(tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"q")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert hashcache.cached_sha256(weights, blocker / "sha256.json") == hashlib.sha256(b"q").hexdigest()


def test_record_count_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(hashcache, "MAX_ENTRIES", 3)
    records = tmp_path / "sha256.json"
    for i in range(5):
        (tmp_path / f"{i}.bin").write_bytes(bytes([i]))
        hashcache.cached_sha256(tmp_path / f"{i}.bin", records)
    kept = json.loads(records.read_text())["files"]
    assert sorted(os.path.basename(k) for k in kept) == ["2.bin", "3.bin", "4.bin"]
