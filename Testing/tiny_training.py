"""A tiny in-memory training set and x2ct-cnn-tiny config shared by the training log and resume tests."""

import torch

from x2ct.training import config as cfg


class Pairs(torch.utils.data.Dataset):
    """Random 16^3 CTs with their mean projections as the frontal and lateral views."""

    def __init__(self, n):
        g = torch.Generator().manual_seed(n)
        self.items = []
        for i in range(n):
            ct = torch.rand(1, 16, 16, 16, generator=g)
            views = torch.stack([ct[0].mean(1), ct[0].mean(2)])
            self.items.append({"ct": ct, "views": views / views.amax(), "angles": torch.tensor([0.0, 90.0]),
                               "hu_range": torch.tensor([-1024.0, 1476.0]), "id": f"c{i}"})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def tiny(steps=2, every=None):
    """The x2ct-cnn-tiny config as a dict, ``steps`` long; ``every``: its evaluation and checkpoint interval."""
    c = cfg.load("x2ct-cnn-tiny").to_dict()
    c["train"]["steps"] = steps
    if every is not None:
        c["evaluate"]["every"] = c["checkpoint"]["every"] = every
    return c
