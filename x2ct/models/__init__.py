"""Reconstruction models: one interface (``base``), one registry (``registry``)."""

from x2ct.models.base import ModelSpec, ReconstructionModel, count_parameters
from x2ct.models.registry import build, entry, names, register

__all__ = ["ModelSpec", "ReconstructionModel", "build", "count_parameters", "entry", "names", "register"]
