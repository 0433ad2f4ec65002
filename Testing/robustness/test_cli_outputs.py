"""Output rules under hostile paths, kills and concurrent writers (``x2ct.io.outputs``).

An output equal to an input, an existing file without --overwrite, a path
under a file, a read-only folder and a target another process is writing are
all refused in one line BEFORE the work (no progress line was printed) and
change nothing. Two reconstructs racing for one --out: exactly one wins. A
writer killed mid-write leaves a staging folder and a lock that the next run
on that target removes.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hostile import REPOSITORY, refused, small_ct, snapshot, tiny_model, xray_views
from x2ct import catalog
from x2ct.cli import main
from x2ct.io import read_ct


@pytest.fixture(autouse=True)
def _no_user_models(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.MODELS_ENV, str(tmp_path / "no-models"))


@pytest.fixture
def work(tmp_path):
    views = xray_views(tmp_path)
    return {"root": tmp_path, "ct": small_ct(tmp_path / "ct.nrrd"), "model": tiny_model(tmp_path / "tiny-gan"),
            **views}


def _reconstruct(work, out, *extra):
    return ["reconstruct", "--view", f"{work['frontal']}:frontal", "--view", f"{work['lateral']}:lateral",
            "--model", work["model"], "--out", out, "--device", "cpu", "--progress", "json", *extra]


def test_an_output_equal_to_an_input_is_refused(work, capfd):
    refused(["drr", work["ct"], "--out", work["ct"], "--overwrite"], capfd, work["root"], "also an input")
    refused(["drr", work["ct"], "--out", work["root"] / "d.nrrd", "--png", work["ct"], "--overwrite"], capfd,
            work["root"])
    twin = work["root"] / "sub" / ".." / "ct.nrrd"  # the same file spelt differently
    refused(["drr", work["ct"], "--out", twin, "--overwrite"], capfd, work["root"], "also an input")
    refused(_reconstruct(work, work["frontal"], "--overwrite"), capfd, work["root"], "also an input")
    assert capfd.readouterr().out == ""


def test_existing_files_need_overwrite(work, capfd):
    drr = work["root"] / "drr.nrrd"
    preview = work["root"] / "drr.png"
    assert main(["drr", str(work["ct"]), "--out", str(drr), "--size", "16"]) == 0
    refused(["drr", work["ct"], "--out", drr, "--size", "16"], capfd, work["root"], "exists", "--overwrite")
    other = work["root"] / "other.nrrd"
    preview.write_bytes(b"keep me")
    refused(["drr", work["ct"], "--out", other, "--png", preview, "--size", "16"], capfd, work["root"], "exists")
    assert main(["drr", str(work["ct"]), "--out", str(drr), "--size", "16", "--overwrite"]) == 0
    sims = work["root"] / "sims"
    sims.mkdir()
    (sims / "sim-00000.json").write_text("{}")
    refused(["simulate", "--seed", "0", "--size", "32", "--out", sims], capfd, work["root"], "exists")


@pytest.mark.parametrize("command", ["drr", "reconstruct", "simulate"])
def test_output_under_a_file_is_refused_before_the_work(work, command, capfd):
    under = work["ct"] / "sub" / "x.nrrd"
    argv = {"drr": ["drr", work["ct"], "--out", under],
            "reconstruct": _reconstruct(work, under),
            "simulate": ["simulate", "--seed", "0", "--size", "32", "--out", work["ct"] / "sims"]}[command]
    refused(argv, capfd, work["root"], "file")


@contextlib.contextmanager
def _read_only_folder(tmp_path):
    """A folder no one may write: a read-only tmpfs as root (root ignores permission bits), else mode 0555."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("root, but no tmpfs mount allowed here (container): cannot make a read-only folder")
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)  # lazy: ITK may leak a handle
        return
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


def test_a_read_only_output_folder_is_refused_before_the_reconstruction(work, capfd):
    with _read_only_folder(work["root"]) as folder:
        before = snapshot(work["root"])
        assert main([str(a) for a in _reconstruct(work, folder / "ct.nrrd")]) == 2
        out, err = capfd.readouterr()
        assert out == "", "the reconstruction started before the folder was checked"
        assert len(err.strip().splitlines()) == 1 and "not writable" in err, err
        assert snapshot(work["root"]) == before


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_pseudo_file_system_is_not_called_a_full_disk(work, capfd):
    """/proc reports 0 bytes free of 0: the message must give the write's reason, not 'disk full'."""
    assert main([str(a) for a in _reconstruct(work, "/proc/x2ct-ct.nrrd")]) == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Could not write /proc/x2ct-ct.nrrd" in err, err
    assert "disk full" not in err


HOLD = """
import sys, time
from pathlib import Path
from x2ct.io.outputs import atomic_output, claim
target = Path(sys.argv[1])
if sys.argv[2] == "claim":
    with claim([target]):
        print("held", flush=True)
        time.sleep(120)
else:
    with atomic_output(target) as partial:
        partial.write_bytes(b"half a file")
        print("held", flush=True)
        time.sleep(120)
"""


def _holder(target, how):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(target), how], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(REPOSITORY)}, cwd=REPOSITORY)
    assert child.stdout.readline().strip() == b"held"
    return child


def test_a_target_another_process_is_writing_is_refused_at_once(work, capfd):
    out = work["root"] / "ct.nrrd.out.nrrd"
    child = _holder(out, "claim")
    try:
        message = refused(_reconstruct(work, out), capfd, work["root"], "another x2ct process", str(child.pid))
        assert message and capfd.readouterr().out == ""
    finally:
        child.kill()
        child.wait()


def test_a_killed_writer_leaves_nothing_the_next_run_keeps(work, capfd):
    """SIGKILL during the write: no file under the final name; the next run removes the staging and lock."""
    out = work["root"] / "drr.nrrd"
    child = _holder(out, "write")
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = sorted(p.name for p in work["root"].iterdir() if p.name.startswith(".drr.nrrd"))
    assert not out.exists() and any(n.endswith(".partial") for n in left) and any("lock" in n for n in left)
    assert main(["drr", str(work["ct"]), "--out", str(out), "--size", "16"]) == 0
    assert sorted(p.name for p in work["root"].iterdir() if p.name.startswith(".")) == []
    assert out.is_file()


def test_two_reconstructs_to_the_same_out_never_both_succeed(work):
    out = work["root"] / "race.nrrd"
    argv = [str(a) for a in _reconstruct(work, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    children = [subprocess.Popen([sys.executable, "-m", "x2ct", *argv], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env, cwd=REPOSITORY) for _ in range(2)]
    results = [(child.wait(timeout=300), *child.communicate()) for child in children]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2).decode().strip().splitlines()
    assert len(loser) == 1 and ("another x2ct process" in loser[0] or "exists" in loser[0]), loser
    winner = next(out for code, out, _ in results if code == 0).decode().strip().splitlines()
    assert json.loads(winner[-1])["output"] == str(out)
    assert read_ct(out).shape == (16, 16, 16)
    assert not [p for p in work["root"].iterdir() if p.name.startswith(".")]


def test_a_cancelled_run_removes_its_locks(work):
    """SIGTERM (Slicer's Cancel) unwinds like Ctrl-C: exit 143 (128 + SIGTERM), no lock or staging left behind."""
    sims = work["root"] / "sims"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    child = subprocess.Popen([sys.executable, "-m", "x2ct", "simulate", "--seed", "0", "--count", "50",
                              "--size", "64", "--out", str(sims)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPOSITORY)
    deadline = time.monotonic() + 120
    while not (sims / ".sim-00000.nii.gz.x2ct-lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM and err.strip() == b"x2ct simulate: cancelled", err
    assert not sims.exists() or not [p.name for p in sims.iterdir() if p.name.startswith(".")]
