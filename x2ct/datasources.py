"""The kinds of training and evaluation data, written once: their names, how a folder's kind is detected, and
which dataset class reads each.

A training config's ``data.kind``, ``x2ct evaluate --data-kind`` and the
Slicer Training module all name data this way. Detecting a folder's kind runs
while a user types a path in Slicer's panel, so it must be quick and safe on
any folder: it looks at most ``DETECTION_LIMIT`` entries, ``DETECTION_DEPTH``
levels deep, skips hidden files and folders, follows no folder links, and
opens only regular files (a FIFO or device is never opened, so it cannot hang).
It imports no torch: the Slicer panel checks a set-up before PyTorch is installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from x2ct.errors import InputError

SIMULATED = "simulated"
#: Data kinds and what each one's ``source`` is.
SOURCES = {
    SIMULATED: "none: pseudo-patients made by the simulator",
    "ct-folder": "a folder of CT volumes (NIfTI, NRRD, MHA or DICOM series)",
    "dicom-tree": "the top folder of a DICOM tree such as LIDC-IDRI",
    "x2ct-hdf5": "the folder of X2CT-GAN HDF5 case files (LIDC-IDRI preprocessed)",
}
DATA_KINDS = tuple(SOURCES)
HDF5_SUFFIXES = (".h5", ".hdf5")
#: Bounds of ``detect_kind``'s walk: entries looked at, and folder levels below the given one.
DETECTION_LIMIT = 5000
DETECTION_DEPTH = 6


def detect_kind(folder) -> str:
    """The data kind of a folder, from the first data file found (breadth first); ``"simulated"`` passes through.

    CT volumes (NIfTI, NRRD, MHA/MHD) make a ct-folder, ``.h5`` files the X2CT
    HDF5 release, DICOM files (``.dcm`` or extensionless with the DICM
    preamble) a LIDC-style dicom-tree. InputError when none is found within
    the bounds (see the module docstring).
    """
    if str(folder).strip() == SIMULATED:
        return SIMULATED
    from x2ct.io.files import VOLUME_FORMATS  # the CT volume files the datasets read

    folder = Path(folder)
    level, seen = [folder], 0
    for _depth in range(DETECTION_DEPTH + 1):
        below = []
        for current in level:
            try:
                entries = sorted(os.scandir(current), key=lambda entry: entry.name)
            except OSError:
                continue  # unreadable: nothing to learn there
            for entry in entries:
                seen += 1
                if seen > DETECTION_LIMIT:
                    return _none_found(folder, f"within the first {DETECTION_LIMIT} entries")
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    below.append(entry.path)
                    continue
                if not entry.is_file():  # FIFOs, sockets, devices, broken links: never opened
                    continue
                name = entry.name.lower()
                if name.endswith(tuple(VOLUME_FORMATS)):
                    return "ct-folder"
                if name.endswith(HDF5_SUFFIXES):
                    return "x2ct-hdf5"
                if name.endswith((".dcm", ".dicom")) or ("." not in name and _is_dicom(Path(entry.path))):
                    return "dicom-tree"
        level = below
    return _none_found(folder, f"within {DETECTION_DEPTH} folder levels" if level else "")


def _is_dicom(path: Path) -> bool:
    from x2ct.io.files import is_dicom_file

    try:
        return is_dicom_file(path)
    except OSError:
        return False


def _none_found(folder: Path, where: str) -> str:
    raise InputError(f"Dataset folder {folder} holds no CT volumes (NIfTI, NRRD, MHA), DICOM series or X2CT .h5 "
                     f"files{' ' + where if where else ''}; choose a folder of training CTs, or the simulator.")


def make_dataset(kind: str, source, split: str, protocol, views, view_size: int, count: int | None = None):
    """The dataset of ``kind`` reading ``source``'s ``split``, with views and CTs at a model's sizes.

    ``count`` bounds only the simulator, which makes cases on demand; callers take the first cases of the others.
    """
    from x2ct.data import datasets

    if kind not in DATA_KINDS:
        raise InputError(f"Unknown data kind {kind!r}; choose one of: {', '.join(DATA_KINDS)}.")
    if kind != SIMULATED and not source:
        raise InputError(f"Data kind {kind} needs a source: {SOURCES[kind]}.")
    if kind == SIMULATED:
        return datasets.SimulatedDataset(split, count=count, protocol=protocol, views=views)
    if kind == "ct-folder":
        return datasets.CTFolderDataset(source, protocol=protocol, views=views, split=split)
    if kind == "dicom-tree":
        return datasets.DicomTreeDataset(source, protocol=protocol, views=views, split=split)
    return datasets.X2CTHDF5Dataset(source, protocol=protocol, split=split, view_size=view_size)
