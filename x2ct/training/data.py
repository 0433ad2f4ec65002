"""The training and validation datasets a config names, at the model's sizes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Subset

from x2ct.data import datasets
from x2ct.data.protocol import get_protocol
from x2ct.errors import InputError

#: The shipped paper configs' data.source until a user puts a real path there.
PLACEHOLDER = "REPLACE/WITH"
SOURCES = {"ct-folder": "a folder of CT volumes (NIfTI, NRRD, MHA or DICOM series)",
           "dicom-tree": "the top folder of a DICOM tree such as LIDC-IDRI",
           "x2ct-hdf5": "the folder of X2CT-GAN HDF5 case files (LIDC-IDRI preprocessed)"}


def check_source(data) -> None:
    """Fail before any model is built if ``data.source`` is the placeholder or does not exist."""
    if data.kind == "simulated":
        return
    wanted = SOURCES[data.kind]
    if str(data.source).startswith(PLACEHOLDER):
        raise InputError(f"Config field data.source is still the placeholder {data.source!r}: put the path of "
                         f"{wanted} there (data.kind {data.kind}), or set data.kind: simulated to try the schedule.")
    if not Path(data.source).exists():
        raise InputError(f"Config field data.source: {data.source} does not exist; give the path of {wanted}.")


def _first(dataset, count):
    return dataset if count is None or count >= len(dataset) else Subset(dataset, range(count))


def make(config, spec) -> tuple:
    """(train, validation) datasets for ``config.data``; views at the model's view size, CT at its volume size."""
    data = config.data
    protocol = get_protocol(data.protocol, spec.volume_size)
    views = datasets.default_views(spec.view_size, data.angles)
    parts = []
    for split, count in (("train", data.train_count), ("validation", data.validation_count)):
        if data.kind == "simulated":
            dataset = datasets.SimulatedDataset(split, count=count, protocol=protocol, views=views)
        elif data.kind == "ct-folder":
            dataset = datasets.CTFolderDataset(data.source, protocol=protocol, views=views, split=split)
        elif data.kind == "dicom-tree":
            dataset = datasets.DicomTreeDataset(data.source, protocol=protocol, views=views, split=split)
        else:
            dataset = datasets.X2CTHDF5Dataset(data.source, protocol=protocol, split=split,
                                               view_size=spec.view_size)
        parts.append(_first(dataset, count))
    return tuple(parts)


def collate(items: list[dict]) -> dict:
    """Stack dataset items into a batch (ids stay a list)."""
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0] if key != "id"}
    batch["id"] = [item["id"] for item in items]
    return batch


class Sampler:
    """Reproducible shuffled order: epoch e is a permutation seeded by (seed, e); the position is the state."""

    def __init__(self, size: int, seed: int, position: int = 0):
        self.size, self.seed, self.position = size, seed, position
        self._epoch, self._order = -1, None

    def next(self) -> int:
        epoch, offset = divmod(self.position, self.size)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
        self.position += 1
        return int(self._order[offset])
