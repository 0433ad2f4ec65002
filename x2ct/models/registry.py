"""Name -> builder registry for reconstruction models and their presets.

Each method is one module in ``x2ct.models.methods`` (found automatically)
that registers itself with ``@register(name, presets, ...)``;
``presets`` maps 'paper' / 'small' / 'tiny' to keyword arguments for the
builder. ``build(name, preset, **overrides)`` returns a ReconstructionModel.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable

from x2ct.errors import InputError

PRESETS = ("paper", "small", "tiny")


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable
    presets: dict
    summary: str
    paper: str


_REGISTRY: dict[str, Entry] = {}


def register(name: str, presets: dict, summary: str, paper: str):
    """Decorator: register ``builder(preset=..., **kwargs)`` under ``name``."""
    missing = set(PRESETS) - set(presets)
    if missing:
        raise ValueError(f"model {name} lacks presets {sorted(missing)}")

    def decorate(builder: Callable) -> Callable:
        _REGISTRY[name] = Entry(name, builder, presets, summary, paper)
        return builder

    return decorate


def _load_all() -> None:
    """Import every method module once (they register themselves)."""
    import x2ct.models.methods as methods

    for info in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"x2ct.models.methods.{info.name}")


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def entry(name: str) -> Entry:
    _load_all()
    if name not in _REGISTRY:
        raise InputError(f"Unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY)) or 'none'}.")
    return _REGISTRY[name]


def build(name: str, preset: str = "small", **overrides):
    """Build a model by name and preset; ``overrides`` replace preset arguments."""
    item = entry(name)
    if preset not in item.presets:
        raise InputError(f"Unknown preset {preset!r} for {name}; choose one of {', '.join(PRESETS)}.")
    kwargs = {**item.presets[preset], **overrides}
    return item.builder(preset=preset, **kwargs)
