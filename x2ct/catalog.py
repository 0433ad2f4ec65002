"""Which reconstruction models can be run, by id.

Three sources, looked up in this order:

* built-in baselines that need no weights (``back-projection``: the input
  views repeated along their rays and averaged, on the X2CT 128^3 grid), so
  reconstruction works before any trained model exists;
* shipped models listed in ``Resources/Models/Models.json`` (validated
  against ``Models.schema.json``), each a folder next to it;
* user models: every folder with a model card under ``$X2CT_MODELS`` or
  ``~/.local/share/x2ct/models``; the folder name is the id.

``import_model`` copies a model folder (card + safetensors) into the user
folder after checking the weights' sha256 against the card; nothing is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from x2ct.errors import InputError
from x2ct.checksum import sha256_file
from x2ct.modelfile import CARD_NAME, checked_weights, read_card

#: The shipped catalog and its JSON schema.
SHIPPED_FOLDER = Path(__file__).resolve().parents[1] / "Resources" / "Models"
MANIFEST = SHIPPED_FOLDER / "Models.json"
SCHEMA = SHIPPED_FOLDER / "Models.schema.json"
#: Environment variable naming the user models folder.
MODELS_ENV = "X2CT_MODELS"
#: Built-in baselines: id -> (description, view size, volume size). They run without weights.
BUILTIN = {
    "back-projection": ("Baseline, no training: each view repeated along its rays and the views averaged "
                        "(X2CT protocol, 128^3 voxels of 2.5 mm).", 128, 128),
}
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
NOT_STATED = "not stated"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One runnable model and what a user should know before trusting it."""

    id: str
    source: str  # "builtin", "shipped" or "user"
    folder: Path | None  # model folder (card + weights); None for built-ins
    description: str
    views_required: tuple[str, ...]
    training_data: str
    metrics: dict
    licence: str
    intended_use: str

    def as_dict(self) -> dict:
        record = dataclasses.asdict(self)
        record["folder"] = str(self.folder) if self.folder else None
        record["views_required"] = list(self.views_required)
        return record


def user_folder() -> Path:
    """``$X2CT_MODELS`` if set, else ``~/.local/share/x2ct/models``."""
    value = os.environ.get(MODELS_ENV)
    return Path(value).expanduser() if value else Path.home() / ".local" / "share" / "x2ct" / "models"


def entries() -> list[Entry]:
    """Every model that can be run: built-ins, shipped, then user models."""
    found = [_builtin(name) for name in BUILTIN]
    found += [_shipped(item) for item in read_manifest()["models"]]
    folder = user_folder()
    if folder.is_dir():
        found += [_from_card(read_card(sub), sub.name, "user") for sub in sorted(folder.iterdir())
                  if (sub / CARD_NAME).is_file()]
    return found


def find(model_id: str) -> Entry:
    """The entry with this id, or an InputError listing the known ids."""
    known = entries()
    for item in known:
        if item.id == model_id:
            return item
    raise InputError(f"Unknown model id {model_id!r}; known models: {', '.join(e.id for e in known)}. "
                     "Give a model folder instead, or import one with `x2ct catalog import FOLDER`.")


def import_model(path, model_id: str | None = None, overwrite: bool = False) -> Entry:
    """Copy a model folder (card + weights) into the user folder after checking the weights' sha256."""
    card = read_card(path)
    source = Path(card["_folder"])
    if Path(card["weights"]).name != card["weights"]:
        raise InputError(f"The model card names weights {card['weights']!r} outside its folder; refusing it.")
    weights = checked_weights(card)
    check_safetensors(weights)
    model_id = model_id or source.name.lower()
    if not _ID.match(model_id):
        raise InputError(f"Model id {model_id!r} must be lower-case letters, digits, '.', '_' or '-'; pass --id.")
    if model_id in BUILTIN or any(item["id"] == model_id for item in read_manifest()["models"]):
        raise InputError(f"Model id {model_id!r} is taken by a built-in or shipped model; pass another --id.")
    target = user_folder() / model_id
    if target.exists() and not overwrite:
        raise InputError(f"A user model {model_id!r} already exists at {target}; pass --overwrite to replace it "
                         "or --id to choose another id.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_id}.", suffix=".partial", dir=target.parent))
    try:
        shutil.copy2(weights, staging / card["weights"])
        shutil.copy2(source / CARD_NAME, staging / CARD_NAME)
        if sha256_file(staging / card["weights"]) != card["sha256"]:
            raise InputError(f"The copy of {weights} does not match its checksum; check the disk and try again.")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return _from_card(read_card(target), model_id, "user")


def check_safetensors(weights: Path) -> None:
    """Refuse (InputError) a weights file that is not safetensors: a checksum alone would let a pickle in.

    Only the header is parsed; nothing is loaded or run.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as opened:
            opened.keys()
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{weights} is not a safetensors weights file ({error}); only safetensors weights are "
                         "imported (pickled .pt/.pth files are refused because loading them can run code).") from None


def read_manifest(path: Path = MANIFEST) -> dict:
    """The shipped catalog, checked against its schema."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"Cannot read the model catalog {path} ({error}); reinstall the extension.") from None
    problems = validate(data, json.loads(SCHEMA.read_text()))
    if problems:
        raise InputError(f"The model catalog {path} is invalid: {problems[0]}.")
    return data


def validate(data, schema: dict, where: str = "$") -> list[str]:
    """Problems of ``data`` against the subset of JSON schema the catalog uses (no ``jsonschema`` needed).

    Supports type, required, properties, additionalProperties (false),
    items, minItems, minLength, minimum and pattern.
    """
    types = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float)}
    kind = schema.get("type")
    if kind and (not isinstance(data, types[kind]) or (kind in ("integer", "number") and isinstance(data, bool))):
        return [f"{where} must be of type {kind}"]
    problems = []
    if kind == "object":
        problems += [f"{where} lacks {key!r}" for key in schema.get("required", []) if key not in data]
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            problems += [f"{where} has unknown field {key!r}" for key in data if key not in properties]
        for key, sub in properties.items():
            if key in data:
                problems += validate(data[key], sub, f"{where}.{key}")
    elif kind == "array":
        if len(data) < schema.get("minItems", 0):
            problems.append(f"{where} needs at least {schema['minItems']} item(s)")
        for n, item in enumerate(data):
            problems += validate(item, schema.get("items", {}), f"{where}[{n}]")
    elif kind == "string":
        if len(data) < schema.get("minLength", 0):
            problems.append(f"{where} must not be empty")
        if "pattern" in schema and not re.search(schema["pattern"], data):
            problems.append(f"{where} = {data!r} does not match {schema['pattern']}")
    elif kind in ("integer", "number") and data < schema.get("minimum", data):
        problems.append(f"{where} must be >= {schema['minimum']}")
    return problems


def views_for(count: int) -> tuple[str, ...]:
    """Names of the views a model taking ``count`` views expects (its default angles)."""
    if count == 1:
        return ("frontal",)
    if count == 2:
        return ("frontal", "lateral")
    return tuple(f"{360.0 * i / (2 * count):g}" for i in range(count))


def _builtin(name: str) -> Entry:
    description = BUILTIN[name][0]
    return Entry(name, "builtin", None, description, ("frontal",), "none (no training)", {}, "as x2ct",
                 "research baseline; the floor a trained model must beat; not for diagnosis")


def _shipped(item: dict) -> Entry:
    return Entry(item["id"], "shipped", SHIPPED_FOLDER / item["folder"], item["description"],
                 tuple(item["views_required"]), item["training_data"], dict(item["metrics"]), item["licence"],
                 item["intended_use"])


def _from_card(card: dict, model_id: str, source: str) -> Entry:
    counts = card.get("view_counts") or [2]
    description = card.get("description") or f"{card['name']} ({card['preset']} preset)"
    return Entry(model_id, source, Path(card["_folder"]), str(description), views_for(min(counts)),
                 str(card.get("training_data", NOT_STATED)), dict(card.get("metrics") or {}),
                 str(card.get("licence", NOT_STATED)),
                 str(card.get("intended_use", "research use only" if card.get("research_use_only") else NOT_STATED)))
