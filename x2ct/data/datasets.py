"""Datasets of paired CTs and X-ray views, as torch ``Dataset``s.

Every dataset yields dicts::

    {"ct": (1, D, D, D) float32 in [0, 1],   # the protocol's normalised CT, canonical frame
     "views": (V, S, S) float32,              # X-ray views, larger = more attenuation
     "angles": (V,) float32 degrees,          # gantry angle of each view (0 PA, 90 left lateral)
     "hu_range": (2,) float32,                # the HU mapped to 0 and 1 (to report errors in HU)
     "id": str}

Sources: a folder of CT files, a LIDC-IDRI-style DICOM tree, the X2CT-GAN
HDF5 files, and the pseudo-patient simulator. Views come from a
``ViewCache`` (DRRs computed once per CT), except for the HDF5 files, which
carry their own. With ``views=False`` the datasets yield CTs only (for
CT-only stages such as a VQ-VAE).

Splits are deterministic: a case's patient id is hashed into [0, 1) and cut
at the split fractions (so all series of one patient share a split); the
simulator uses its disjoint seed ranges. ``include`` keeps only listed ids,
e.g. the published X2CT train/test lists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from x2ct.data import simulate
from x2ct.data.cache import ViewCache
from x2ct.data.protocol import X2CT, Grid, Protocol, ProtocolState, resample
from x2ct.errors import InputError
from x2ct.image import CANONICAL_DIRECTION, Volume

SPLITS = ("train", "validation", "test")
#: Default (train, validation, test) fractions of hashed splits.
FRACTIONS = (0.8, 0.1, 0.1)
#: CT file extensions a folder dataset picks up.
CT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Stored value range and view scale of the X2CT-GAN HDF5 files (HU + 1024 clipped to [0, 2500]; 8-bit views).
X2CT_HDF5_RANGE = (0.0, 2500.0)
X2CT_HDF5_VIEW_MAX = 255.0


def split_of(group: str, fractions: Sequence[float] = FRACTIONS) -> str:
    """'train', 'validation' or 'test' for a patient id, from its sha256 (stable across runs and machines)."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise InputError(f"Split fractions must be three non-negative numbers summing to 1, got {fractions}.")
    position = int(hashlib.sha256(group.encode()).hexdigest()[:15], 16) / 16 ** 15
    edges = np.cumsum(fractions)
    return SPLITS[min(int(np.searchsorted(edges, position, side="right")), 2)]


@dataclasses.dataclass(frozen=True)
class Case:
    """One CT: its id, the patient it belongs to (the unit of splitting) and where it comes from."""

    id: str
    group: str
    source: str


class PairedDataset(Dataset):
    """Cases + protocol + views; subclasses say how a case's CT is loaded."""

    def __init__(self, cases: list[Case], protocol: Protocol = X2CT, views: ViewCache | None | bool = None,
                 split: str | None = None, fractions: Sequence[float] = FRACTIONS,
                 include: Iterable[str] | None = None) -> None:
        if split is not None and split not in SPLITS:
            raise InputError(f"Unknown split {split!r}; choose one of: {', '.join(SPLITS)}.")
        self.protocol = protocol
        self.views = default_views(protocol.size) if views is None else views
        cases = sorted(cases, key=lambda case: case.id)
        if include is not None:
            wanted = set(include)
            cases = [case for case in cases if case.id in wanted]
        if split is not None:
            cases = [case for case in cases if split_of(case.group, fractions) == split]
        self.cases = cases

    @property
    def ids(self) -> list[str]:
        return [case.id for case in self.cases]

    def __len__(self) -> int:
        return len(self.cases)

    def load(self, index: int) -> tuple[np.ndarray, ProtocolState]:
        """The normalised CT (size^3, canonical) and its protocol state (for ``to_hu``)."""
        return self.protocol.normalise(self.load_hu(self.cases[index]))

    def load_hu(self, case: Case) -> Volume:
        """The case's CT in HU on the protocol's output grid."""
        raise NotImplementedError

    def case_views(self, index: int, ct: np.ndarray, state: ProtocolState) -> tuple[np.ndarray, tuple] | None:
        """The case's views (V, S, S) and their angles, or None for a CT-only dataset."""
        if self.views is False:
            return None
        return self.views.views(ct, state), self.views.angles

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.cases):
            raise IndexError(f"index {index} out of range for {len(self.cases)} cases")
        ct, state = self.load(index)
        item = {"ct": torch.from_numpy(ct)[None], "id": self.cases[index].id,
                "hu_range": torch.tensor([state.hu_low, state.hu_high], dtype=torch.float32)}
        paired = self.case_views(index, ct, state)
        if paired is not None:
            views, angles = paired
            item["views"] = torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32))
            item["angles"] = torch.tensor(angles, dtype=torch.float32)
        return item


def default_views(size: int, angles: Sequence[float] = (0.0, 90.0)) -> ViewCache:
    """X2CT-protocol DRRs (x2ct mode of ``x2ct.physics``) at ``angles``, cached in the user cache."""
    from x2ct.data.cache import PhysicsProjector

    return ViewCache(PhysicsProjector(), angles=angles, size=size)


# -------------------------------------------------------------------------------- folder of CT files


class CTFolderDataset(PairedDataset):
    """CT files (NIfTI, NRRD, MHA/MHD) in a folder and its sub-folders, or a list of files.

    Headers are checked when the dataset is built: files that are not readable
    3D volumes are skipped with a warning; if none is left, it is an error.
    """

    def __init__(self, source: str | Path | Sequence[str | Path], protocol: Protocol = X2CT,
                 views: ViewCache | None | bool = None, split: str | None = None, **kwargs) -> None:
        files = _ct_files(source)
        cases, problems = [], []
        for file in files:
            problem = _ct_header_problem(file)
            if problem:
                problems.append(problem)
            else:
                cases.append(Case(id=_stem(file), group=_stem(file), source=str(file)))
        if not cases:
            detail = f": {problems[0]}" if problems else ""
            raise InputError(f"No readable CT volume in {source} ({len(files)} candidate files{detail}). Give a "
                             f"folder of 3D CTs ({', '.join(CT_SUFFIXES)}) with voxel spacing in their headers.")
        for problem in problems:
            warnings.warn(f"Skipping {problem}", stacklevel=2)
        _check_unique(cases, source)
        super().__init__(cases, protocol, views, split, **kwargs)

    def load_hu(self, case: Case) -> Volume:
        from x2ct.io import read_ct

        return self.protocol.resample(read_ct(case.source))


def _ct_files(source) -> list[Path]:
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return sorted(p for p in Path(source).rglob("*")
                      if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(CT_SUFFIXES))
    paths = [Path(source)] if isinstance(source, (str, Path)) else [Path(p) for p in source]
    for path in paths:
        if not path.is_file():
            raise InputError(f"CT file or folder not found: {path}; check the path.")
    return paths


def _ct_header_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable CT (read from the header only), or None."""
    import SimpleITK as sitk

    if not path.name.lower().endswith(CT_SUFFIXES):
        return (f"{path}: not a CT volume file (a {path.suffix or 'file without extension'} has no 3D voxel "
                f"spacing); use {', '.join(CT_SUFFIXES)}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return f"{path}: unreadable (corrupt or not an image)"
    size = reader.GetSize()
    if len(size) != 3 or min(size) < 2:
        return f"{path}: a {len(size)}D image of size {size}, not a 3D CT"
    return None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in CT_SUFFIXES + (".h5", ".hdf5"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _check_unique(cases: list[Case], source) -> None:
    seen = {}
    for case in cases:
        if case.id in seen:
            raise InputError(f"Two cases in {source} have the id {case.id!r} ({seen[case.id]} and {case.source}); "
                             "rename one so that every case id is unique.")
        seen[case.id] = case.source


# -------------------------------------------------------------------------------- LIDC-style DICOM tree


class DicomTreeDataset(PairedDataset):
    """CT series in a DICOM tree (LIDC-IDRI layout: patient/study/series/*.dcm), one case per series.

    A folder is scanned by reading the headers of its first and last slice;
    when they belong to different series every header in it is read. Series
    whose Modality is not CT (the radiographs, SEG and SR objects of LIDC) or
    with fewer than ``min_slices`` slices are left out. Case id:
    ``PatientID_SeriesInstanceUID`` (safe as a file name); the split is by PatientID.
    """

    def __init__(self, root: str | Path, protocol: Protocol = X2CT, views: ViewCache | None | bool = None,
                 split: str | None = None, min_slices: int = 40, **kwargs) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"DICOM folder not found: {root}; give the top folder of the DICOM tree.")
        cases = [Case(id=f"{patient}_{uid}", group=patient, source=str(first))
                 for (patient, uid), (first, count) in sorted(_ct_series(root).items()) if count >= min_slices]
        if not cases:
            raise InputError(f"No CT series with at least {min_slices} slices under {root}; check the folder holds "
                             "DICOM CT slices (Modality CT), or lower min_slices.")
        super().__init__(cases, protocol, views, split, **kwargs)

    def load_hu(self, case: Case) -> Volume:
        from x2ct.io import read_ct

        return self.protocol.resample(read_ct(case.source))  # one slice's path picks its series


def _ct_series(root: Path) -> dict[tuple[str, str], tuple[Path, int]]:
    """(PatientID, SeriesInstanceUID) -> (one slice file, number of slices) of the CT series under root."""
    folders: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in (".dcm", ""):
            folders.setdefault(path.parent, []).append(path)
    found: dict[tuple[str, str], tuple[Path, int]] = {}
    for files in folders.values():
        ends = [_header(files[0]), _header(files[-1])]
        if all(h is not None for h in ends) and ends[0].get("SeriesInstanceUID") == ends[1].get("SeriesInstanceUID"):
            groups = {str(ends[0].get("SeriesInstanceUID", "")): (ends[0], files)}
        else:
            groups = {}
            for file in files:
                header = _header(file)
                if header is not None:
                    uid = str(header.get("SeriesInstanceUID", ""))
                    groups.setdefault(uid, (header, []))[1].append(file)
        for uid, (header, members) in groups.items():
            if str(header.get("Modality", "")).upper() == "CT" and "ImagePositionPatient" in header:
                key = (str(header.get("PatientID", "") or files[0].parent.name), uid)
                first, count = found.get(key, (members[0], 0))
                found[key] = (first, count + len(members))
    return found


def _header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True,
                               specific_tags=["Modality", "SeriesInstanceUID", "PatientID", "ImagePositionPatient"])
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None


# -------------------------------------------------------------------------------- X2CT-GAN HDF5 files


class X2CTHDF5Dataset(PairedDataset):
    """The X2CT-GAN distribution of LIDC-IDRI: one ``.h5`` per case with ``ct``, ``xray1`` and ``xray2``.

    As the X2CT loader reads them: ``ct`` is transposed (axes 0 and 1 swapped)
    into (D, H, W), clipped to [0, 2500] (stored HU + 1024) and resized to the
    protocol's size; ``xray1`` is the PA frontal view (angle 0), ``xray2`` the
    lateral (90), 8-bit, divided by 255 and resized to ``view_size``. The
    stored cube is taken as 320 mm wide and centred on the origin (the X2CT
    protocol). The axis directions after the transpose are taken to be the
    canonical ones (superior->inferior, anterior->posterior, right->left), as
    the X2CT code's view layout implies; the HDF5 files carry no geometry to
    check this against. Pass ``views=ViewCache(...)`` to use our own DRRs of
    the stored CT instead of the stored views. Case id: the case folder name
    (X2CT layout ``<case>/ct_xray_data.h5``) or the file stem; split by patient
    (the id up to its first dot, e.g. ``LIDC-IDRI-0001``).
    """

    DATASETS = ("ct", "xray1", "xray2")

    def __init__(self, source: str | Path | Sequence[str | Path], protocol: Protocol = X2CT,
                 views: ViewCache | None = None, split: str | None = None, view_size: int | None = None,
                 **kwargs) -> None:
        if isinstance(source, (str, Path)) and Path(source).is_dir():
            files = sorted(p for p in Path(source).rglob("*") if p.suffix.lower() in (".h5", ".hdf5"))
        else:
            files = [Path(source)] if isinstance(source, (str, Path)) else [Path(p) for p in source]
            for file in files:
                if not file.is_file():
                    raise InputError(f"HDF5 file or folder not found: {file}; check the path.")
        if not files:
            raise InputError(f"No .h5 files in {source}; give the folder of the X2CT HDF5 cases.")
        cases = []
        for file in files:
            _check_hdf5(file)
            case_id = file.parent.name if file.name == "ct_xray_data.h5" else _stem(file)
            cases.append(Case(id=case_id, group=case_id.split(".")[0], source=str(file)))
        _check_unique(cases, source)
        self.view_size = int(view_size or protocol.size)
        super().__init__(cases, protocol, views if views is not None else False, split, **kwargs)

    def case_views(self, index: int, ct: np.ndarray, state: ProtocolState) -> tuple[np.ndarray, tuple]:
        if self.views is False:  # the views stored in the file
            return self._stored_views(self.cases[index]), (0.0, 90.0)
        return super().case_views(index, ct, state)

    def load_hu(self, case: Case) -> Volume:
        import h5py

        with h5py.File(case.source, "r") as file:
            stored = np.asarray(file["ct"], dtype=np.float32)
        cube = np.clip(np.transpose(stored, (1, 0, 2)), *X2CT_HDF5_RANGE) - 1024.0
        box = self.protocol.crop_mm
        spacing = tuple(box / n for n in cube.shape[::-1])
        origin = tuple(CANONICAL_DIRECTION @ (np.array(spacing) / 2.0 - box / 2.0))
        volume = Volume(cube, spacing, origin, CANONICAL_DIRECTION.copy())
        if cube.shape == (self.protocol.size,) * 3:
            return volume
        step = box / self.protocol.size
        grid = Grid(self.protocol.size, step, tuple(CANONICAL_DIRECTION @ np.full(3, step / 2.0 - box / 2.0)))
        return resample(volume, grid, self.protocol.pad_hu)

    def _stored_views(self, case: Case) -> np.ndarray:
        import h5py

        with h5py.File(case.source, "r") as file:
            views = [np.asarray(file[name], dtype=np.float32).reshape(file[name].shape[-2:])
                     for name in ("xray1", "xray2")]
        out = []
        for view in views:
            tensor = torch.from_numpy(view / X2CT_HDF5_VIEW_MAX)[None, None]
            if tensor.shape[-2:] != (self.view_size, self.view_size):
                tensor = F.interpolate(tensor, size=(self.view_size,) * 2, mode="bilinear", align_corners=False,
                                       antialias=True)
            out.append(tensor[0, 0].numpy())
        return np.stack(out)


def _check_hdf5(path: Path) -> None:
    """Refuse a file that is not HDF5 or lacks the X2CT datasets, naming what is missing."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            missing = [name for name in X2CTHDF5Dataset.DATASETS if name not in file]
            shapes = {name: file[name].shape for name in X2CTHDF5Dataset.DATASETS if name in file}
    except OSError:
        raise InputError(f"{path} is not a readable HDF5 file; download or copy it again.") from None
    if missing:
        raise InputError(f"{path} lacks the dataset(s) {', '.join(missing)}: an X2CT case file holds 'ct' (3D) "
                         "and 'xray1', 'xray2' (2D). Check it comes from the X2CT-GAN LIDC-IDRI release.")
    bad = [f"{name} {shape}" for name, shape in shapes.items()
           if (len(shape) != 3 if name == "ct" else len([n for n in shape if n > 1]) != 2)]
    if bad:
        raise InputError(f"{path} has datasets of unexpected shape ({', '.join(bad)}); 'ct' must be 3D and the "
                         "X-rays 2D.")


# -------------------------------------------------------------------------------- simulator


class SimulatedDataset(PairedDataset):
    """Pseudo-patients made on the fly, deterministically from seeds (see ``x2ct.data.simulate``).

    ``split`` picks the simulator's seed range for training, validation or
    test, of which the first ``count`` seeds are used; or give ``seeds``.
    """

    def __init__(self, split: str = "train", count: int | None = None, protocol: Protocol = X2CT,
                 views: ViewCache | None | bool = None, seeds: Iterable[int] | None = None,
                 settings: simulate.Settings = simulate.DEFAULT_SETTINGS) -> None:
        chosen = list(simulate.seeds(split) if seeds is None else seeds)
        if count is not None:
            chosen = chosen[:count]
        if not chosen:
            raise InputError("A simulated dataset needs at least one seed.")
        self.settings = settings
        cases = [Case(id=f"sim-{seed:05d}", group=str(seed), source=str(seed)) for seed in chosen]
        super().__init__(cases, protocol, views)

    def load_hu(self, case: Case) -> Volume:
        return simulate.pseudo_patient(int(case.source), self.protocol, self.settings).ct
