"""A trained model on disk: weights in safetensors plus a JSON model card.

Weights are never pickled: loading a file a user hands us must not run code.
The card records what the registry needs to rebuild the network (name,
preset, builder overrides) and the weights' SHA256, which is checked before
the weights are read. Both files are written all or nothing
(``x2ct.io.outputs``), card last, so a crash never leaves a card pointing at
partial weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from x2ct.checksum import sha256_file
from x2ct.hashcache import cached_sha256
from x2ct.errors import InputError
from x2ct.schema import read_json, validate

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "model.json"
CARD_VERSION = 1
#: Shipped models, their catalog and the schemas (found next to the installed core).
MODELS_FOLDER = Path(__file__).resolve().parents[1] / "Resources" / "Models"
CARD_SCHEMA = MODELS_FOLDER / "ModelCard.schema.json"
#: Largest network a card may describe (float32: 8 GB), largest volume side, largest integer override.
MAX_PARAMETERS = 2_000_000_000
MAX_VOLUME_SIZE = 512
MAX_OVERRIDE_INT = 4096
#: safetensors header dtype names -> torch dtype names (torch is imported only where weights are handled,
#: so reading cards and listing the catalog need no torch).
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
           "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def save_model(model, folder, card: dict | None = None, half: bool = False) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/model.json``; return the card path.

    ``card`` adds free fields (training data, steps, metrics, licence, intended
    use ...); the builder fields come from ``model.spec`` and ``model.overrides``.
    ``half`` stores floating tensors as float16 (loading casts them back).
    """
    import torch
    from safetensors.torch import save_file

    from x2ct.io.outputs import atomic_output, write_text

    folder = Path(folder)
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    if half:
        state = {n: t.half() if t.is_floating_point() else t for n, t in state.items()}
    for name, tensor in state.items():  # after the cast: float16 turns values over 65504 into Inf
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"Refusing to save non-finite weights ({name} has NaN or Inf values"
                             f"{' in float16' if half else ''}).")
    weights = folder / WEIGHTS_NAME
    size = sum(t.numel() * t.element_size() for t in state.values())
    with atomic_output(weights, check=stored_tensors, needed_bytes=size) as partial:
        save_file(state, str(partial))
    spec = model.spec
    record = {
        "card_version": CARD_VERSION,
        "name": spec.name,
        "preset": spec.preset,
        "overrides": getattr(model, "overrides", {}),
        "view_counts": list(spec.view_counts),
        "view_size": spec.view_size,
        "volume_size": spec.volume_size,
        "protocol": spec.protocol,
        "weights": WEIGHTS_NAME,
        "weights_dtype": "float16" if half else "float32",
        "sha256": sha256_file(weights),
        "research_use_only": True,
        **(card or {}),
    }
    return write_text(folder / CARD_NAME, json.dumps(record, indent=2, sort_keys=True))


def read_card(path) -> dict:
    """The card of a model folder (or of a card file), checked against its JSON schema before anything else.

    The file must be a small regular UTF-8 JSON file (``x2ct.schema.read_json``)
    and match ``ModelCard.schema.json`` (types, ranges, lengths), so a
    hostile card is refused before any allocation and can never print a
    50 MB line. Where the weights may be is ``checked_weights``' rule.
    """
    from x2ct.io.files import text_name

    path = Path(path)
    text_name(path, "The model folder")  # safetensors cannot open such a path
    card_path = path / CARD_NAME if path.is_dir() else path
    if not card_path.exists():
        raise InputError(f"No model card at {card_path}: a model is a folder with {CARD_NAME} and "
                         f"{WEIGHTS_NAME}.")
    card = read_json(card_path, "The model card")  # also refuses a FIFO or device without opening it
    if not isinstance(card, dict):
        raise InputError(f"Model card {card_path} must be a JSON object.")
    problems = validate(card, read_json(CARD_SCHEMA, "The model card schema"))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"Model card {card_path} is invalid: {problems[0]}{more}.")
    card["_folder"] = str(card_path.parent)
    return card


def checked_weights(card: dict, max_bytes: int | None = None) -> Path:
    """The card's weights file, refused (InputError) when missing, outside the model folder, or when its
    sha256 differs from the card's. The one rule for loading (any folder) and importing.

    ``max_bytes``: skip the checksum of larger files (a quick pre-check; the
    loader always checks).
    """
    folder = Path(card["_folder"])
    weights = folder / card["weights"]
    if Path(card["weights"]).name != card["weights"] or card["weights"] in (".", ".."):
        raise InputError(f"The model card in {folder} names weights {card['weights']!r} outside its folder; "
                         "refusing it.")
    if not weights.is_file():
        raise InputError(f"Weights file {weights} named by the model card is missing.")
    if weights.resolve().parent != folder.resolve():
        raise InputError(f"Weights file {weights} links outside its model folder; refusing it. Copy the file "
                         "into the folder.")
    if max_bytes is not None and weights.stat().st_size > max_bytes:
        return weights
    actual = cached_sha256(weights)
    if actual != card["sha256"]:
        raise InputError(f"Checksum mismatch for {weights}: the card expects sha256 {card['sha256']}, the file "
                         f"has {actual}. The file is corrupt or was changed; re-import the model.")
    return weights


def build_from_card(card: dict, device: str | torch.device = "cpu"):
    """The network the card describes, built on ``device`` (``"meta"``: shapes only, nothing allocated).

    Overrides must be arguments of the preset, of the same type, in range;
    the network is first built on the meta device and its size checked, so a
    card can never make us allocate petabytes.
    """
    import torch

    from x2ct.models.registry import build, entry

    name, preset, overrides = card["name"], card["preset"], dict(card.get("overrides") or {})
    defaults = entry(name).presets[preset]
    for key, value in overrides.items():
        if key not in defaults:
            raise InputError(f"Model card override {key[:80]!r} is not an argument of {name} ({preset}); known: "
                             f"{', '.join(sorted(defaults))}.")
        _check_override(name, key, value, defaults[key])
    try:
        with torch.device("meta"):
            shapes = build(name, preset, **overrides)
    except (TypeError, ValueError, RuntimeError, InputError) as error:
        raise InputError(f"Model card for {name} ({preset}) cannot be built: "
                         f"{str(error).strip().splitlines()[0][:200]}") from None
    parameters = sum(t.numel() for t in shapes.state_dict().values())
    spec = shapes.spec
    if parameters > MAX_PARAMETERS or spec.volume_size > MAX_VOLUME_SIZE:
        raise InputError(f"Model card for {name} describes a network of {parameters:,} parameters and a "
                         f"{spec.volume_size}^3 volume; at most {MAX_PARAMETERS:,} and {MAX_VOLUME_SIZE}^3 are "
                         "accepted.")
    if str(device) == "meta":
        return shapes
    with torch.device(device):
        return build(name, preset, **overrides)


def _check_override(name: str, key: str, value, default) -> None:
    """An override has the preset value's type and sane sizes (ints 0..MAX_OVERRIDE_INT)."""
    def kind(v):
        return "bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) else \
            "list" if isinstance(v, (list, tuple)) else type(v).__name__

    values = value if isinstance(value, list) else [value]
    if kind(value) != kind(default) or (isinstance(default, int) and not isinstance(default, bool)
                                        and not isinstance(value, int)) or \
            (isinstance(value, list) and default and any(kind(v) != kind(default[0]) for v in value)):
        raise InputError(f"Model card override {name}.{key} = {str(value)[:80]} has the wrong type; the preset "
                         f"uses {str(default)[:80]}.")
    if isinstance(value, list) and len(value) > 64:
        raise InputError(f"Model card override {name}.{key} has {len(value)} items; at most 64.")
    for item in values:
        if isinstance(item, (int, float)) and not isinstance(item, bool) and not 0 <= item <= MAX_OVERRIDE_INT:
            raise InputError(f"Model card override {name}.{key} = {str(value)[:80]} is out of range "
                             f"(0..{MAX_OVERRIDE_INT}).")


def check_tensors(found: dict[str, tuple[tuple[int, ...], torch.dtype]], model, weights: Path) -> None:
    """Refuse weights that can never load into ``model``: tensor names, shapes, and dtypes.

    ``found`` maps each tensor name to (shape, dtype) as stored. A floating
    parameter must be stored as a floating type (an int8 or bool tensor would
    be cast silently into nonsense); integer buffers as integers.
    """
    import torch

    reference = model.state_dict()
    missing, unexpected = sorted(set(reference) - set(found)), sorted(set(found) - set(reference))
    label = f"{weights} does not fit {model.spec.name}"
    if missing or unexpected:
        parts = ([f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []) + \
                ([f"{len(unexpected)} unexpected (e.g. {unexpected[0][:80]})"] if unexpected else [])
        raise InputError(f"{label}: tensors {'; '.join(parts)}. Was it saved from another network or preset?")
    for name, want in reference.items():
        shape, dtype = found[name]
        if tuple(shape) != tuple(want.shape):
            raise InputError(f"{label}: {name} has shape {tuple(shape)}, the network needs {tuple(want.shape)}.")
        if want.is_floating_point() != dtype.is_floating_point or dtype == torch.bool or dtype.is_complex:
            raise InputError(f"{label}: {name} is stored as {str(dtype).replace('torch.', '')}, the network needs "
                             f"{str(want.dtype).replace('torch.', '')}; refusing weights that would be cast.")


def check_model(path) -> dict:
    """The card of a model folder whose weights can load, for running (any folder) and importing alike:
    card schema, weights inside the folder with the card's sha256, safetensors, and every tensor checked
    against the network the card names (built on the meta device: nothing allocated)."""
    return _checked(path)[0]


def _checked(path):
    """(card, the card's network on the meta device) once the weights are known to fit it."""
    card = read_card(path)
    weights = checked_weights(card)
    shapes = build_from_card(card, "meta")
    check_tensors(stored_tensors(weights), shapes, weights)
    return card, shapes


def check_finite_file(weights: Path) -> None:
    """Refuse NaN/Inf weights in a safetensors file, one tensor in memory at a time."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as opened:
        for name in opened.keys():
            check_finite({name: opened.get_tensor(name)}, weights)


def check_finite(state: dict[str, torch.Tensor], weights: Path) -> None:
    """Refuse NaN or infinite weights: they can only produce a NaN volume."""
    import torch

    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"{weights}: tensor {name} holds NaN or infinite values; the weights are damaged. "
                             "Export them again from a finite checkpoint.")


def stored_tensors(weights: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) from a safetensors header only; anything else is refused, never loaded."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as opened:
            found = {name: (tuple(opened.get_slice(name).get_shape()), opened.get_slice(name).get_dtype())
                     for name in opened.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{weights} is not a safetensors weights file ({str(error)[:200]}); only safetensors "
                         "weights are loaded (pickled .pt/.pth files are refused because loading them can run "
                         "code).") from None
    unknown = sorted(name for name, (_, dtype) in found.items() if dtype not in _DTYPES)
    if unknown:
        raise InputError(f"{weights}: tensor {unknown[0][:80]} is stored as {found[unknown[0]][1]}, which x2ct "
                         "does not load; store floating tensors as float16, bfloat16 or float32.")
    return {name: (shape, getattr(torch, _DTYPES[dtype])) for name, (shape, dtype) in found.items()}


def load_model(path, device: str | torch.device = "cpu"):
    """Rebuild the network from its card and load checked weights; return (model, card).

    The card must match its schema, the weights' SHA256 the card, the file
    must be safetensors (a pickle or any other format is refused without
    being executed), and every tensor must fit the network by name, shape,
    floating type and finite values before the network is allocated.
    """
    from safetensors.torch import load_file

    card, shapes = _checked(path)
    weights = Path(card["_folder"]) / card["weights"]
    state = load_file(str(weights), device="cpu")
    check_finite(state, weights)
    return materialised(shapes, state, lambda: build_from_card(card, "cpu")).to(device).eval(), card


def materialised(shapes, state: dict, build):
    """The meta-device network ``shapes`` holding ``state`` (every tensor it has, checked by name and shape).

    The weights are put in place of the meta tensors, so the network is
    built once and never randomly initialised (that took most of a model
    load). A network that keeps tensors outside its state dict (which would
    stay on the meta device) is built for real by ``build`` instead.
    """
    reference = shapes.state_dict()
    state = {n: t.to(reference[n].dtype) for n, t in state.items()}
    shapes.load_state_dict(state, strict=True, assign=True)
    if not _has_meta_tensors(shapes):
        return shapes
    model = build()
    model.load_state_dict(state, strict=True)
    return model


def _has_meta_tensors(model) -> bool:
    """Whether any parameter, buffer or plain tensor attribute of ``model`` is still on the meta device."""
    import torch

    for module in model.modules():
        tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)) + \
            [value for value in vars(module).values() if isinstance(value, torch.Tensor)]
        if any(t.is_meta for t in tensors):
            return True
    return False
