"""A trained model on disk: weights in safetensors plus a JSON model card.

Weights are never pickled: loading a file a user hands us must not run code.
The card records what the registry needs to rebuild the network (name,
preset, builder overrides) and the weights' SHA256, which is checked before
the weights are read. Both files are written under temporary names and
renamed, card last, so a crash never leaves a card pointing at partial weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from x2ct.checksum import sha256_file
from x2ct.errors import InputError

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "model.json"
CARD_VERSION = 1


def save_model(model, folder, card: dict | None = None, half: bool = False) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/model.json``; return the card path.

    ``card`` adds free fields (training data, steps, metrics, licence, intended
    use ...); the builder fields come from ``model.spec`` and ``model.overrides``.
    ``half`` stores floating tensors as float16 (loading casts them back).
    """
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"Refusing to save non-finite weights ({name} has NaN or Inf values).")
    if half:
        state = {n: t.half() if t.is_floating_point() else t for n, t in state.items()}
    weights = folder / WEIGHTS_NAME
    partial = folder / f".{WEIGHTS_NAME}.partial"
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
        "sha256": sha256_file(partial),
        "research_use_only": True,
        **(card or {}),
    }
    os.replace(partial, weights)
    card_path = folder / CARD_NAME
    partial_card = folder / f".{CARD_NAME}.partial"
    partial_card.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(partial_card, card_path)
    return card_path


def read_card(path) -> dict:
    """The card of a model folder (or of a card file), validated."""
    path = Path(path)
    card_path = path / CARD_NAME if path.is_dir() else path
    if not card_path.is_file():
        raise InputError(f"No model card at {card_path}: a model is a folder with {CARD_NAME} and "
                         f"{WEIGHTS_NAME}.")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{card_path} is not a valid JSON model card ({error}).") from None
    missing = [key for key in ("name", "preset", "weights", "sha256") if key not in card]
    if missing:
        raise InputError(f"Model card {card_path} lacks {', '.join(missing)}.")
    card["_folder"] = str(card_path.parent)
    return card


def checked_weights(card: dict, max_bytes: int | None = None) -> Path:
    """The card's weights file, refused (InputError) when missing or when its sha256 differs from the card's.

    ``max_bytes``: skip the checksum of larger files (a quick pre-check; the
    loader always checks).
    """
    weights = Path(card["_folder"]) / card["weights"]
    if not weights.is_file():
        raise InputError(f"Weights file {weights} named by the model card is missing.")
    if max_bytes is not None and weights.stat().st_size > max_bytes:
        return weights
    actual = sha256_file(weights)
    if actual != card["sha256"]:
        raise InputError(f"Checksum mismatch for {weights}: the card expects sha256 {card['sha256']}, the file "
                         f"has {actual}. The file is corrupt or was changed; re-import the model.")
    return weights


def load_model(path, device: str | torch.device = "cpu"):
    """Rebuild the network from its card and load checked weights; return (model, card).

    The weights' SHA256 must match the card; the file must be safetensors
    (a pickle or any other format is refused without being executed).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from x2ct.models import build

    card = read_card(path)
    weights = checked_weights(card)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{weights} is not a safetensors weights file ({error}); only safetensors weights are "
                         "loaded (pickled .pt/.pth files are refused because loading them can run code).") from None
    model = build(card["name"], card["preset"], **card.get("overrides", {}))
    reference = model.state_dict()
    state = {n: t.to(reference[n].dtype) if n in reference else t for n, t in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"The weights in {weights} do not fit {card['name']} ({card['preset']}): {first}") from None
    return model.to(device).eval(), card
