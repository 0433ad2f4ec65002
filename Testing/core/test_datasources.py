"""x2ct.datasources: one list of data kinds, and a folder's kind detected quickly and safely (it runs as a user
types a path in the Slicer panel): hidden folders skipped, FIFOs never opened, the walk bounded."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from x2ct import datasources
from x2ct.datasources import detect_kind
from x2ct.errors import InputError

DICOM = b"\0" * 128 + b"DICM" + b"\0" * 16


def test_each_kind_is_found_below_the_folder(tmp_path):
    (tmp_path / "cts" / "a").mkdir(parents=True)
    (tmp_path / "cts" / "a" / "case.nii.gz").write_bytes(b"")
    (tmp_path / "dicom" / "patient" / "series").mkdir(parents=True)
    (tmp_path / "dicom" / "patient" / "series" / "IM0001").write_bytes(DICOM)
    (tmp_path / "h5").mkdir()
    (tmp_path / "h5" / "case.h5").write_bytes(b"")
    assert [detect_kind(tmp_path / name) for name in ("cts", "dicom", "h5")] == ["ct-folder", "dicom-tree",
                                                                                 "x2ct-hdf5"]
    assert detect_kind(" simulated ") == "simulated" and datasources.DATA_KINDS[0] == "simulated"


def test_hidden_folders_and_files_are_not_data(tmp_path):
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "case.nii.gz").write_bytes(b"")
    (tmp_path / ".case.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="holds no CT volumes"):
        detect_kind(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_never_opened_and_a_folder_link_loop_is_not_followed(tmp_path):
    os.mkfifo(tmp_path / "IM0001")  # extensionless, like a DICOM slice: opening it would block for ever
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(pytest.raises(InputError, detect_kind, tmp_path)),
                              daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "detection hung on the FIFO"
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "IM0002").write_bytes(DICOM)
    assert detect_kind(tmp_path) == "dicom-tree"


def test_the_walk_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(datasources, "DETECTION_LIMIT", 50)
    for index in range(60):
        (tmp_path / f"note-{index:03d}.txt").write_text("")
    (tmp_path / "zz-case.nii.gz").write_bytes(b"")  # after the first 50 entries
    with pytest.raises(InputError, match="within the first 50 entries"):
        detect_kind(tmp_path)
    monkeypatch.setattr(datasources, "DETECTION_DEPTH", 1)
    deep = tmp_path.parent / "deep"
    (deep / "a" / "b").mkdir(parents=True)
    (deep / "a" / "b" / "case.nrrd").write_bytes(b"")
    with pytest.raises(InputError, match="within 1 folder levels"):
        detect_kind(deep)
    monkeypatch.setattr(datasources, "DETECTION_DEPTH", 2)
    assert detect_kind(deep) == "ct-folder"


def test_every_reader_of_data_kinds_uses_the_one_list():
    pytest.importorskip("torch")
    from x2ct.commands import evaluate
    from x2ct.training import config

    assert config.DATA_KINDS is datasources.DATA_KINDS
    parser_choices = [action.choices for action in _evaluate_parser(evaluate)._actions if action.dest == "data_kind"]
    assert parser_choices == [datasources.DATA_KINDS]
    with pytest.raises(InputError, match="Unknown data kind 'nifti'"):
        datasources.make_dataset("nifti", "x", "test", None, None, 64)
    with pytest.raises(InputError, match="ct-folder needs a source"):
        datasources.make_dataset("ct-folder", None, "test", None, None, 64)


def _evaluate_parser(evaluate):
    import argparse

    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    return parser._subparsers._group_actions[0].choices["evaluate"]


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="FIFOs and symlinks behave differently on Windows")
