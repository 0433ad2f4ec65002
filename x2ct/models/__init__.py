"""Reconstruction models: one interface (``base``), one registry (``registry``)."""

from x2ct.models.base import ModelSpec, ReconstructionModel, count_parameters
from x2ct.models.registry import build, build_critic, entry, names, register

__all__ = ["ModelSpec", "ReconstructionModel", "build", "build_critic", "count_parameters", "entry", "names", "register"]
