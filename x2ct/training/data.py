"""The training and validation datasets a config names, at the model's sizes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Subset

from x2ct.data import datasets
from x2ct.data.protocol import get_protocol
from x2ct.datasources import SOURCES, make_dataset
from x2ct.errors import InputError

#: The shipped paper configs' data.source until a user puts a real path there.
PLACEHOLDER = "REPLACE/WITH"


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
        dataset = make_dataset(data.kind, data.source, split, protocol, views, spec.view_size, count)
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
