"""Input paths: does the input exist, is it a plain file, which format is it.

Where outputs may go and how they are written: ``x2ct.io.outputs``.
"""

from __future__ import annotations

import os
import stat
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
    """The path, after checking it exists and is a folder or a non-empty regular file.

    A FIFO, socket or device is refused from its ``stat`` alone: opening a
    FIFO would wait for a writer forever.
    """
    path = Path(path).expanduser()
    text_name(path, what)
    if not path.exists():
        raise InputError(f"{what} not found: {path} does not exist; check the path.")
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"{what} {path} is not a regular file (a FIFO, socket or device); give the file itself.")
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


def text_name(path: Path, what: str) -> None:
    """Refuse a path whose name is not valid UTF-8: SimpleITK aborts on it, safetensors cannot open it."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise InputError(f"{what} {shown}: the name is not valid UTF-8 text, which the file libraries x2ct uses "
                         "(SimpleITK, safetensors) cannot handle; rename it.") from None


def is_same_file(a, b) -> bool:
    """Whether two paths name the same file (also through links or different spellings)."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def read_small_file(path, what: str, max_bytes: int, hint: str) -> bytes:
    """The bytes of a small regular file (a card, a config, a pointer), or an InputError.

    A FIFO, device or folder is refused from ``stat`` without being opened
    (opening a FIFO blocks), and no more than ``max_bytes`` + 1 bytes are read
    whatever size the file claims. ``what`` names the file in messages ("The
    config"); ``hint`` says what to give instead of a special file.
    """
    path = Path(path)
    limit = f"at most {max_bytes // 1024} KiB is accepted" if max_bytes >= 1024 else f"at most {max_bytes} bytes"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{what} {path} is not a regular file; {hint}.")
        if info.st_size > max_bytes:
            size = f"{info.st_size / 2**20:.1f} MiB" if info.st_size >= 2**20 else f"{info.st_size / 1024:.0f} KiB"
            raise InputError(f"{what} {path} is {size}; {limit}. Check it is the right file.")
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as error:
        raise InputError(f"Cannot read {what[0].lower() + what[1:]} {path} ({error.strerror}).") from None
    if len(raw) > max_bytes:
        raise InputError(f"{what} {path} grew over {limit} while being read. Check it is the right file.")
    return raw
