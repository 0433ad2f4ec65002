"""Fine-tuning: a run that starts from a trained model's weights instead of a random network.

``train.init_from`` names the model: a catalog id (``x2ct catalog list``:
shipped or imported models) or a model folder (its ``model.json`` and
weights). It is loaded the way inference loads it (card schema, SHA256,
safetensors only, tensors checked by name, shape and finite values), and
must be the network the config builds: same method, preset and model
overrides. Only the network's weights carry over; a critic, the optimiser
and the schedule start fresh, as in the papers' fine-tuning.
"""

from __future__ import annotations

import os
from pathlib import Path

from x2ct.errors import InputError


def model_reference(value) -> str:
    """``value`` as ``train.init_from`` holds it: a model id or folder as text (a path object gives its path)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"The model to fine-tune must be a model id or a model folder; got {value!r}.")
    return value


def _model_folder(name: str) -> Path:
    """The model folder a catalog id or a path names."""
    from x2ct import catalog

    path = Path(name).expanduser()
    if path.exists():
        return path
    try:
        entry = catalog.find(name)
    except InputError as error:
        raise InputError(f"train.init_from: {name!r} is neither a model folder nor a usable model id ({error})") from None
    if entry.folder is None:
        raise InputError(f"train.init_from: {name!r} is a built-in model without trained weights; name a shipped or "
                         "imported model, or a model folder.")
    return entry.folder


def model_card(name: str) -> dict:
    """The checked card (schema and weights' SHA256) of the model ``name`` (id or folder) names."""
    from x2ct.modelfile import check_model

    return check_model(_model_folder(name))


def config_for(card: dict) -> dict:
    """The config fields that make the card's network on its views: method, preset, model, data.angles
    (None when the card does not say which views it was trained on)."""
    from x2ct.image import view_angle

    angles = ([view_angle(view) for view in card["views"]] if card.get("views")
              else (card.get("training") or {}).get("angles"))  # shipped cards name views; trained ones angles
    return {"method": card["name"], "preset": card["preset"], "model": dict(card.get("overrides") or {}),
            "angles": angles}


def load_initial_weights(model, config) -> dict:
    """Put the weights of ``config.train.init_from`` into ``model`` (built from ``config``); return provenance."""
    from x2ct.modelfile import load_model

    name = config.train.init_from
    trained, card = load_model(_model_folder(name))
    wanted = {"method": config.method, "preset": config.preset, "model": dict(config.model)}
    found = config_for(card)
    different = [key for key in wanted if wanted[key] != found[key]]
    if different:
        got = ", ".join(f"{key} {found[key]!r}" for key in different)
        raise InputError(f"train.init_from: {name!r} is a different network ({got}; the config has "
                         f"{', '.join(f'{key} {wanted[key]!r}' for key in different)}). Fine-tuning keeps the "
                         "network: set these in the config as the model has them.")
    model.load_state_dict(trained.state_dict(), strict=True)
    return {"from": name, "sha256": card["sha256"], "steps": (card.get("training") or {}).get("steps")}
