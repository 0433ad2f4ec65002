"""Name -> builder registry for reconstruction models and their presets.

Each method is one module in ``x2ct.models.methods`` (found automatically)
that registers itself with ``@register(name, presets, ...)``;
``presets`` maps 'paper' / 'small' / 'tiny' to keyword arguments for the
builder. ``build(name, preset, **overrides)`` returns a ReconstructionModel
whose 3D convolutions take the faster CPU paths of ``x2ct.models.cpu_conv``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable

from x2ct.errors import InputError
from x2ct.models.cpu_conv import use_fast_cpu_convolutions

PRESETS = ("paper", "small", "tiny")


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable
    presets: dict
    summary: str
    paper: str
    critic: Callable | None = None  # builder(preset=..., **kwargs) of the method's discriminator/critic
    critic_presets: dict | None = None


_REGISTRY: dict[str, Entry] = {}


def register(name: str, presets: dict, summary: str, paper: str,
             critic: Callable | None = None, critic_presets: dict | None = None):
    """Decorator: register ``builder(preset=..., **kwargs)`` under ``name``.

    Adversarial methods also give ``critic`` (a builder of their
    discriminator/critic) with its own ``critic_presets``.
    """
    for what, table in (("presets", presets), ("critic_presets", critic_presets if critic else presets)):
        missing = set(PRESETS) - set(table or {})
        if missing:
            raise ValueError(f"model {name} lacks {what} {sorted(missing)}")

    def decorate(builder: Callable) -> Callable:
        _REGISTRY[name] = Entry(name, builder, presets, summary, paper, critic, critic_presets)
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
    model = use_fast_cpu_convolutions(item.builder(preset=preset, **kwargs))
    model.overrides = dict(overrides)  # recorded in model cards so the same network can be rebuilt
    return model


def build_critic(name: str, preset: str = "small", **overrides):
    """Build the discriminator/critic of an adversarial method."""
    item = entry(name)
    if item.critic is None:
        raise InputError(f"Model {name} is not adversarial: it has no critic.")
    if preset not in item.critic_presets:
        raise InputError(f"Unknown preset {preset!r} for {name}'s critic; choose one of {', '.join(PRESETS)}.")
    return use_fast_cpu_convolutions(item.critic(preset=preset, **{**item.critic_presets[preset], **overrides}))
