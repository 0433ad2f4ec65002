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
    film_prepare: bool = False  # each simulated film then prepared as a film is at inference (x2ct.io.prepare)


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
    decoder_steps: int = 0  # code diffusion: CT-decoder steps on fixed codes, after stage 1, before the prior
    decoder_codes: str = "own"  # code diffusion, decoder steps: the CT's own codes, or codes the prior "sampled"
    ema: Optional[float] = None  # EMA decay of the saved weights (null: the raw weights)
    seed: int = 0
    bf16: bool = True  # bf16 autocast (CUDA only)
    max_bad_steps: int = 5  # consecutive non-finite losses before training stops
    device: str = "auto"
    init_from: Optional[str] = None  # fine-tune: start from this model's weights (catalog id or model folder)


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


#: Allowed values of the numeric fields, as intervals ("(0, 1]": 0 excluded, 1 included); null passes where
#: the field is optional. Bounds are generous for real runs and refuse what would crash or never end.
RANGES = {
    "data.train_count": "[1, 1e7]", "data.validation_count": "[1, 1e7]",
    "augment.contrast": "[0, 1)", "augment.rotation_deg": "[0, 180]", "augment.rotation_p": "[0, 1]",
    "augment.flip_p": "[0, 1]", "augment.film_p": "[0, 1]",
    "loss.mse": "[0, 1e6]", "loss.l1": "[0, 1e6]", "loss.lung_mse": "[0, 1e6]", "loss.lung_l1": "[0, 1e6]",
    "loss.projection": "[0, 1e6]", "loss.adversarial": "[0, 1e6]", "loss.ot_cost": "[0, 1e6]",
    "loss.ot_critic": "[0, 1e6]",
    "train.steps": "[1, 1e7]", "train.batch_size": "[1, 1024]", "train.accumulate": "[1, 1024]",
    "train.lr": "(0, 1]", "train.eps": "(0, 1)", "train.weight_decay": "[0, 1]", "train.critic_lr": "(0, 1]",
    "train.generator_steps_per_critic_step": "[1, 1000]", "train.decay_start": "[0, 1e7]",
    "train.step_every": "[0, 1e7]", "train.step_gamma": "(0, 1]", "train.warmup": "[0, 1e7]",
    "train.stage1_steps": "[0, 1e7]", "train.decoder_steps": "[0, 1e7]",
    "train.ema": "(0, 1)", "train.seed": "[0, 4294967295]",
    "train.max_bad_steps": "[1, 1000]",
    "evaluate.every": "[1, 1e7]", "evaluate.cases": "[1, 10000]", "checkpoint.every": "[1, 1e7]",
}
#: Model and critic overrides: the largest number anywhere in a value, by key (sizes allocate cubically).
OVERRIDE_LIMITS = {"volume_size": 512, "view_size": 1024}
OVERRIDE_LIMIT = 8192
MAX_VIEWS = 16


def inside(value, interval: str) -> bool:
    """Whether the number ``value`` lies in ``interval`` ("[0, 1)"); NaN never does."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    return bool(above and below)


def _field(config: Config, name: str):
    section, key = name.split(".")
    return getattr(getattr(config, section), key)


def _kind(value) -> str:
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    return {int: "number", float: "number", str: "text", list: "list", tuple: "list", dict: "mapping"}.get(
        type(value), type(value).__name__)


def _override_problem(value, limit: int, depth: int = 0) -> str | None:
    """Why an override value cannot be a builder argument, or None."""
    if isinstance(value, (list, tuple, dict)) and (len(value) > 16 or depth > 3):
        return "too large a list or mapping"
    if isinstance(value, dict):
        return next((p for v in value.values() if (p := _override_problem(v, limit, depth + 1))), None)
    if isinstance(value, (list, tuple)):
        return next((p for v in value if (p := _override_problem(v, limit, depth + 1))), None)
    if isinstance(value, str) and len(value) > 64:
        return "too long a text"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not inside(value, f"[0, {limit}]"):
        return f"numbers must be in [0, {limit}]"
    return None


def _check_overrides(config: Config) -> None:
    """``model:`` and ``critic:`` may only set the builder arguments of the method's presets, with sane values."""
    from x2ct.models import registry

    entry = registry.entry(config.method)
    for section, presets in (("model", entry.presets), ("critic", entry.critic_presets or {})):
        overrides = getattr(config, section)
        if overrides and not presets:
            raise InputError(f"Config section critic: {config.method} has no critic; remove the section.")
        allowed = sorted({key for preset in presets.values() for key in preset})
        for key, value in overrides.items():
            if key not in allowed:
                raise InputError(f"Unknown config field {section}.{str(key)[:80]}; {config.method} accepts "
                                 f"{', '.join(allowed)}.")
            kinds = sorted({_kind(preset[key]) for preset in presets.values() if key in preset})
            if _kind(value) not in kinds:
                raise InputError(f"Config field {section}.{key} must be a {' or '.join(kinds)} like the presets', "
                                 f"got {str(value)[:80]!r}.")
            problem = _override_problem(value, OVERRIDE_LIMITS.get(key, OVERRIDE_LIMIT))
            if problem:
                raise InputError(f"Config field {section}.{key}: {problem}.")


def _check(config: Config) -> None:
    """Value checks the types cannot express."""
    from x2ct.data.protocol import PROTOCOLS
    from x2ct.models import registry

    t = config.train
    angles = config.data.angles
    problems = {
        "method": None if config.method in registry.names() else f"unknown model; known: {', '.join(registry.names())}",
        "preset": None if config.preset in registry.PRESETS else f"choose one of {', '.join(registry.PRESETS)}",
        "data.kind": None if config.data.kind in DATA_KINDS else f"choose one of {', '.join(DATA_KINDS)}",
        "data.source": ("needed for this data kind" if config.data.kind != "simulated" and not config.data.source
                        else "too long (over 4096 characters)" if len(config.data.source or "") > 4096 else None),
        "data.protocol": None if config.data.protocol in PROTOCOLS else f"choose one of {', '.join(PROTOCOLS)}",
        "data.angles": (None if 1 <= len(angles) <= MAX_VIEWS and all(inside(a, "[-360, 360]") for a in angles)
                        else f"give 1 to {MAX_VIEWS} view angles in [-360, 360] degrees"),
        "train.optimizer": None if t.optimizer in ("adam", "adamw") else "choose adam or adamw",
        "train.betas": None if len(t.betas) == 2 and all(inside(b, "[0, 1)") for b in t.betas) else "two numbers in [0, 1)",
        "train.lr_schedule": None if t.lr_schedule in LR_SCHEDULES else f"choose one of {', '.join(LR_SCHEDULES)}",
        "train.device": None if t.device in ("auto", "cpu", "cuda") else "choose auto, cpu or cuda",
        "train.decoder_codes": None if t.decoder_codes in ("own", "sampled") else "choose own or sampled",
        "loss.adversarial_kind": None if config.loss.adversarial_kind in ("lsgan", "bce") else "choose lsgan or bce",
        "evaluate.best_metric": None if 0 < len(config.evaluate.best_metric) <= 200 else "give a metric name",
        "train.init_from": (None if t.init_from is None or 0 < len(t.init_from) <= 4096
                            else "give a model id or a model folder (at most 4096 characters)"),
    }
    for name, interval in RANGES.items():
        value = _field(config, name)
        if value is not None and not inside(value, interval):
            problems[name] = f"{str(value)[:40]} is out of range; it must be in {interval}"
    for name, problem in problems.items():
        if problem:
            raise InputError(f"Config field {name}: {problem}.")
    _check_overrides(config)
    _check_loss_weights(config)


#: The loss weights the supervised, GAN and neural-OT schedules read (schedules.supervised_terms).
SUPERVISED_WEIGHTS = ("mse", "l1", "lung_mse", "lung_l1", "projection")


def _check_loss_weights(config: Config) -> None:
    """A supervised or GAN method with every weight it reads at 0 would have no loss to train on."""
    from x2ct.training.schedules import family

    kind = family(config.method)
    read = SUPERVISED_WEIGHTS + (("adversarial",) if kind == "gan" else ())
    if kind in ("supervised", "gan") and not any(getattr(config.loss, name) for name in read):
        raise InputError(f"Config section loss: every weight {config.method} trains on is 0; set at least one of "
                         f"{', '.join(f'loss.{name}' for name in read)}.")


def from_dict(data: dict) -> Config:
    """A validated Config from a plain mapping (as read from YAML)."""
    config = _build(Config, data, "")
    _check(config)
    return config


def load(path_or_name: str | Path) -> Config:
    """Read a YAML file, or a shipped config by name (``x2ct-gan-tiny``)."""
    from x2ct.training import yamlfile

    path = Path(path_or_name)
    if not path.exists():
        shipped = CONFIG_FOLDER / f"{path_or_name}.yaml"
        if not shipped.is_file():
            names = ", ".join(shipped_names())
            raise InputError(f"No config file {path}; give a YAML file or a shipped config ({names}).")
        path = shipped
    try:
        return from_dict(yamlfile.read(path) or {})
    except InputError as error:
        message = str(error)
        raise InputError(message if str(path) in message else f"{path}: {message}") from None


def shipped_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_FOLDER.glob("*.yaml"))
