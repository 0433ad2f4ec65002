"""Paths: does the input exist, which format is it, and writing all-or-nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from x2ct.errors import InputError

#: Extensions SimpleITK reads and writes with full 3D geometry.
VOLUME_FORMATS = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage",
                  ".nii": "NIfTI", ".nii.gz": "NIfTI"}
#: Plain pictures: no geometry, spacing must be assumed or given.
PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}


def suffix(path: Path) -> str:
    """Lower-case extension, treating ``.nii.gz`` as one."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def existing(path, what: str) -> Path:
    """The path, after checking it exists and is not an empty file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{what} not found: {path} does not exist; check the path.")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty (0 bytes): the copy or download did not finish; "
                         "get the file again.")
    return path


def is_dicom_file(path: Path) -> bool:
    """A .dcm/.dicom file, or any file with the DICOM preamble (slices often have no extension)."""
    if suffix(path) in (".dcm", ".dicom"):
        return True
    if suffix(path) in VOLUME_FORMATS or suffix(path) in PICTURE_FORMATS:
        return False
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def output_path(path, formats: dict[str, str], what: str) -> Path:
    """Check an output path's extension against the formats that can be written."""
    path = Path(path).expanduser()
    if suffix(path) not in formats:
        raise InputError(f"Cannot write {what} to {path.name}: unknown extension {suffix(path) or '(none)'}; "
                         f"use one of {', '.join(formats)}.")
    if path.is_dir():
        raise InputError(f"Cannot write {what} to {path}: it is a folder; give a file name.")
    return path


@contextmanager
def atomic_output(path: Path):
    """Yield a path to write to; move the result over ``path`` only if writing succeeded.

    The writer works in a private folder beside the target (same file system),
    under the target's own name, so formats with a detached data file (.nhdr,
    .mhd) keep their internal references. Data files are moved first and the
    named file last, so a reader never sees a header without its data; on any
    error nothing is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield workdir / path.name
        produced = sorted(workdir.iterdir(), key=lambda p: p.name == path.name)
        for file in produced:
            os.replace(file, path.parent / file.name)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
