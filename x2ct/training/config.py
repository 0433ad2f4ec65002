"""Training configuration: nested dataclasses read from YAML, every field checked.

A config names the method (a registry model), its preset, the data, the
optimiser schedule and the method's loss weights. Reading is strict: an
unknown key, a missing section value of the wrong type or an impossible value
raises ``InputError`` naming the field (``train.lr``), so a typo never trains
with a silent default. Shipped configs live in ``configs/<method>-<preset>.yaml``.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Optional

import yaml

from x2ct.datasources import DATA_KINDS
from x2ct.errors import InputError

CONFIG_FOLDER = Path(__file__).parent / "configs"
LR_SCHEDULES = ("constant", "linear-decay", "step", "warmup")


@dataclasses.dataclass
class DataConfig:
    """Where cases come from and how they become (views, CT) pairs."""

    kind: str = "simulated"
    source: Optional[str] = None  # folder / file for the non-simulated kinds
    protocol: str = "x2ct"  # intensity protocol (x2ct.data.protocol); its size is the model's volume size
    angles: list[float] = dataclasses.field(default_factory=lambda: [0.0, 90.0])
    train_count: Optional[int] = None  # first N training cases (all when null)
    validation_count: Optional[int] = None


@dataclasses.dataclass
class AugmentConfig:
    """X-ray augmentation (seed 000): contrast, small rotations, a flip of views and CT together."""

    contrast: float = 0.0  # gamma drawn from [1 - c, 1 + c]
    rotation_deg: float = 0.0  # in-plane rotation of each view, uniform in +-deg ...
    rotation_p: float = 0.0  # ... applied with this probability
    flip_p: float = 0.0  # left-right flip of views and CT together
    film_p: float = 0.0  # probability per view of the film simulation (x2ct.data.film: blur, scatter, LUT, borders...)


@dataclasses.dataclass
class LossConfig:
    """Loss weights; each schedule reads the ones of its family (see schedules.py)."""

    mse: float = 0.0
    l1: float = 0.0
    lung_mse: float = 0.0
    lung_l1: float = 0.0
    projection: float = 0.0  # X2CT's mean-|v| projection L1
    adversarial: float = 0.0
    adversarial_kind: str = "lsgan"  # lsgan | bce
    ot_cost: float = 0.1  # Sinkhorn feature cost weight (neural OT)
    ot_critic: float = 100.0  # critic loss scale (neural OT)


@dataclasses.dataclass
class TrainConfig:
    steps: int = 100
    batch_size: int = 1
    accumulate: int = 1  # micro-batches per optimiser step
    optimizer: str = "adam"  # adam | adamw
    lr: float = 2e-4
    lr_per_sample: bool = False  # lr x batch size (Repeat-and-Concatenate)
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    critic_lr: Optional[float] = None  # defaults to lr
    generator_steps_per_critic_step: int = 1  # k (neural OT: 10)
    lr_schedule: str = "constant"
    decay_start: int = 0  # linear-decay: constant until here, then linear to 0 at `steps`
    step_every: int = 0  # step: multiply by step_gamma every this many steps
    step_gamma: float = 0.1
    warmup: int = 0  # warmup: linear ramp over this many steps
    stage1_steps: int = 0  # code diffusion: VQ-VAE steps before the prior
    ema: Optional[float] = None  # EMA decay of the saved weights (null: the raw weights)
    seed: int = 0
    bf16: bool = True  # bf16 autocast (CUDA only)
    max_bad_steps: int = 5  # consecutive non-finite losses before training stops
    device: str = "auto"


@dataclasses.dataclass
class EvalConfig:
    every: int = 50
    cases: int = 2
    best_metric: str = "honest.psnr_db"  # higher is better


@dataclasses.dataclass
class CheckpointConfig:
    every: int = 50


@dataclasses.dataclass
class Config:
    method: str
    preset: str = "tiny"
    model: dict = dataclasses.field(default_factory=dict)  # builder overrides
    critic: dict = dataclasses.field(default_factory=dict)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluate: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _convert(value, hint, name: str):
    """``value`` checked against the type ``hint``; ints are accepted for floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, name)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, name)
    if origin is list:
        if not isinstance(value, list):
            raise InputError(f"Config field {name} must be a list, got {value!r}.")
        return [_convert(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    if hint is dict:
        if not isinstance(value, dict):
            raise InputError(f"Config field {name} must be a mapping, got {value!r}.")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads 1e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise InputError(f"Config field {name} must be {hint.__name__}, got {value!r}.")
    return value


def _build(cls, data, prefix: str):
    if not isinstance(data, dict):
        raise InputError(f"Config section {prefix or 'top level'} must be a mapping, got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise InputError(f"Unknown config field {where}{unknown[0]}; known fields: {', '.join(fields)}.")
    values = {}
    for key, field in fields.items():
        name = f"{prefix}.{key}" if prefix else key
        if key in data:
            values[key] = _convert(data[key], hints[key], name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise InputError(f"Config field {name} is required.")
    return cls(**values)


def _check(config: Config) -> None:
    """Value checks the types cannot express."""
    from x2ct.data.protocol import PROTOCOLS
    from x2ct.models import registry

    t = config.train
    problems = {
        "method": None if config.method in registry.names() else f"unknown model; known: {', '.join(registry.names())}",
        "preset": None if config.preset in registry.PRESETS else f"choose one of {', '.join(registry.PRESETS)}",
        "data.kind": None if config.data.kind in DATA_KINDS else f"choose one of {', '.join(DATA_KINDS)}",
        "data.source": ("needed for this data kind" if config.data.kind != "simulated" and not config.data.source
                        else None),
        "data.protocol": None if config.data.protocol in PROTOCOLS else f"choose one of {', '.join(PROTOCOLS)}",
        "data.angles": None if config.data.angles else "give at least one view angle",
        "train.steps": None if t.steps >= 1 else "must be >= 1",
        "train.batch_size": None if t.batch_size >= 1 else "must be >= 1",
        "train.accumulate": None if t.accumulate >= 1 else "must be >= 1",
        "train.optimizer": None if t.optimizer in ("adam", "adamw") else "choose adam or adamw",
        "train.lr": None if t.lr > 0 else "must be > 0",
        "train.betas": None if len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas) else "two numbers in [0, 1)",
        "train.lr_schedule": None if t.lr_schedule in LR_SCHEDULES else f"choose one of {', '.join(LR_SCHEDULES)}",
        "train.generator_steps_per_critic_step": None if t.generator_steps_per_critic_step >= 1 else "must be >= 1",
        "train.ema": None if t.ema is None or 0 < t.ema < 1 else "must be in (0, 1) or null",
        "train.max_bad_steps": None if t.max_bad_steps >= 1 else "must be >= 1",
        "train.device": None if t.device in ("auto", "cpu", "cuda") else "choose auto, cpu or cuda",
        "loss.adversarial_kind": None if config.loss.adversarial_kind in ("lsgan", "bce") else "choose lsgan or bce",
        "evaluate.every": None if config.evaluate.every >= 1 else "must be >= 1",
        "evaluate.cases": None if config.evaluate.cases >= 1 else "must be >= 1",
        "checkpoint.every": None if config.checkpoint.every >= 1 else "must be >= 1",
        "augment.rotation_p": None if 0 <= config.augment.rotation_p <= 1 else "must be in [0, 1]",
        "augment.flip_p": None if 0 <= config.augment.flip_p <= 1 else "must be in [0, 1]",
        "augment.film_p": None if 0 <= config.augment.film_p <= 1 else "must be in [0, 1]",
        "augment.contrast": None if 0 <= config.augment.contrast < 1 else "must be in [0, 1)",
    }
    for name, problem in problems.items():
        if problem:
            raise InputError(f"Config field {name}: {problem}.")


def from_dict(data: dict) -> Config:
    """A validated Config from a plain mapping (as read from YAML)."""
    config = _build(Config, data, "")
    _check(config)
    return config


def load(path_or_name: str | Path) -> Config:
    """Read a YAML file, or a shipped config by name (``x2ct-gan-tiny``)."""
    path = Path(path_or_name)
    if not path.is_file():
        shipped = CONFIG_FOLDER / f"{path_or_name}.yaml"
        if not shipped.is_file():
            names = ", ".join(shipped_names())
            raise InputError(f"No config file {path}; give a YAML file or a shipped config ({names}).")
        path = shipped
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"{path} is not valid YAML ({str(error).splitlines()[0]}).") from None
    return from_dict(data or {})


def shipped_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_FOLDER.glob("*.yaml"))
