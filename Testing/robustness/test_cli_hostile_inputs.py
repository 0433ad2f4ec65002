"""Every CLI command on every hostile input file: exit 2, one line naming the problem, nothing written.

The files come from ``hostile.hostile_files`` (truncated, mistyped, random,
NaN, absurd headers, a folder, a FIFO, a symlink loop, a missing file); the
commands are the ones that read user files. Each run is checked by
``hostile.refused`` (exit status, one stderr line, no traceback, the whole
folder unchanged by SHA-256 snapshot).
"""

import os
import shutil

import pytest

from hostile import NOT_UTF8, hostile_files, refused, run_x2ct, small_ct, snapshot, tiny_model, xray_views
from x2ct import catalog

#: Commands that read one user file, with FILE and the good files' places; all write into OUT/ if anything.
COMMANDS = {
    "info": ["info", "{file}"],
    "info-xray": ["info", "{file}", "--xray"],
    "drr": ["drr", "{file}", "--out", "{out}/drr.nrrd"],
    "reconstruct": ["reconstruct", "--view", "{file}:frontal", "--view", "{lateral}:lateral", "--model", "{model}",
                    "--out", "{out}/ct.nrrd", "--device", "cpu"],
    "evaluate": ["evaluate", "--pred", "{file}", "--gt", "{ct}"],
}
HOSTILE = ["empty.nrrd", "truncated-xray.nrrd", "truncated-ct.nrrd", "header-only.nrrd", "random.png",
           "random.nii.gz", "text.nrrd", "pickle.dcm", "huge-size.nrrd", "nan-xray.nrrd", "folder.png", "fifo.nrrd",
           "loop.nrrd", "missing.nrrd"]
#: (command, file) pairs where the file is acceptable to that command: none today.
ACCEPTED: set = set()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    good = root / "good"
    good.mkdir()
    views = xray_views(good)
    ct = small_ct(good / "ct.nrrd")
    model = tiny_model(good / "tiny-gan")
    files = hostile_files(root / "bad", views["frontal"], ct)
    (root / "out").mkdir()
    return {"root": root, "files": files, "lateral": views["lateral"], "ct": ct, "model": model,
            "out": root / "out"}


@pytest.fixture(autouse=True)
def _no_user_models(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.MODELS_ENV, str(tmp_path / "no-models"))


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", HOSTILE)
def test_every_command_refuses_every_hostile_file(workspace, command, name, capfd):
    if (command, name) in ACCEPTED or (name == "fifo.nrrd" and not hasattr(os, "mkfifo")):
        pytest.skip("not applicable")
    places = {key: workspace[key] for key in ("lateral", "ct", "model", "out")}
    argv = [part.format(file=workspace["files"][name], **places) for part in COMMANDS[command]]
    refused(argv, capfd, workspace["root"])


def test_a_fifo_is_refused_at_once_not_read(workspace):
    """Opening a FIFO blocks until a writer comes: the child must answer long before the timeout."""
    if "fifo.nrrd" not in workspace["files"]:
        pytest.skip("no FIFOs on this platform")
    result = run_x2ct(["info", workspace["files"]["fifo.nrrd"]], timeout=60)
    assert result.returncode == 2 and b"not a regular file" in result.stderr


def test_file_names_that_are_not_utf8_are_refused_in_one_line(workspace, tmp_path):
    """Such a name once aborted SimpleITK (exit 134) and left a staging folder; now one line, nothing left."""
    folder = tmp_path / "names"
    folder.mkdir()
    odd = folder / NOT_UTF8
    shutil.copy(workspace["root"] / "good" / "frontal.nrrd", odd)
    before = snapshot(folder)
    as_input = run_x2ct(["info", odd])
    as_output = run_x2ct(["drr", workspace["ct"], "--out", folder / NOT_UTF8.replace(".nrrd", "-drr.nrrd")])
    for result in (as_input, as_output):
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "not valid UTF-8" in lines[0], result.stderr
    assert snapshot(folder) == before


@pytest.mark.parametrize("argv, words", [
    (["drr", "{ct}", "--out", "{out}/d.nrrd", "--size", "200000"], ["--size", "4096"]),
    (["drr", "{ct}", "--out", "{out}/d.nrrd", "--view", "nan"], ["finite"]),
    (["drr", "{ct}", "--out", "{out}/d.nrrd", "--sad", "-5"], ["--sad"]),
    (["drr", "{ct}", "--out", "{out}/d.nrrd", "--sid", "inf"], ["--sid"]),
    (["simulate", "--seed", "0", "--size", "100000", "--out", "{out}/sims"], ["--size"]),
    (["simulate", "--seed", "0", "--count", "10000000", "--out", "{out}/sims"], ["--count"]),
    (["reconstruct", "--view", "{lateral}:nan", "--model", "{model}", "--out", "{out}/c.nrrd"], ["angle", "nan"]),
    (["reconstruct", "--view", "{lateral}:inf", "--model", "{model}", "--out", "{out}/c.nrrd"], ["angle", "inf"]),
    (["reconstruct", "--view", "{lateral}:1e309", "--model", "{model}", "--out", "{out}/c.nrrd"], ["angle"]),
    (["reconstruct", "--view", "{lateral}", "--model", "{ct}", "--out", "{out}/c.nrrd"], ["is a file"]),
])
def test_hostile_arguments(workspace, argv, words, capfd):
    places = {key: workspace[key] for key in ("lateral", "ct", "model", "out")}
    refused([part.format(**places) for part in argv], capfd, workspace["root"], *words)


def test_models_env_naming_a_file(workspace, monkeypatch, capfd):
    monkeypatch.setenv(catalog.MODELS_ENV, str(workspace["ct"]))
    refused(["catalog", "list"], capfd, workspace["root"], "not a folder")
    refused(["catalog", "import", workspace["model"]], capfd, workspace["root"], "not a folder")
