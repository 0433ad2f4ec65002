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
folder after checking the card against its schema, the weights' sha256, and
every tensor against the network the card names (names, shapes, floating
types, finite values); the network is built on the meta device only. A
failed import leaves nothing installed. A user model whose card is broken is
listed with its problem and only it refuses to run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

from x2ct.errors import InputError, X2CTError
from x2ct.checksum import sha256_file
from x2ct.modelfile import CARD_NAME, MODELS_FOLDER, check_finite_file, check_model, read_card
from x2ct.schema import validate

#: The shipped catalog and its JSON schema.
SHIPPED_FOLDER = MODELS_FOLDER
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
    problem: str = ""  # why a user model cannot run (broken card or weights); empty when it can

    def as_dict(self) -> dict:
        record = dataclasses.asdict(self)
        record["folder"] = str(self.folder) if self.folder else None
        record["views_required"] = list(self.views_required)
        return record


def user_folder() -> Path:
    """``$X2CT_MODELS`` if set, else ``~/.local/share/x2ct/models``."""
    value = os.environ.get(MODELS_ENV)
    folder = Path(value).expanduser() if value else Path.home() / ".local" / "share" / "x2ct" / "models"
    if os.path.lexists(folder) and not folder.is_dir():
        raise InputError(f"The user models folder {folder} is not a folder"
                         f"{f' (${MODELS_ENV} names it)' if value else ''}; point ${MODELS_ENV} at a folder.")
    return folder


def entries() -> list[Entry]:
    """Every model: built-ins, shipped, then user models (a broken one listed with its ``problem``)."""
    found = [_builtin(name) for name in BUILTIN]
    found += [_shipped(item) for item in read_manifest()["models"]]
    folder = user_folder()
    if folder.is_dir():
        found += [_user(sub) for sub in sorted(folder.iterdir())
                  if not sub.name.startswith(".") and (sub / CARD_NAME).is_file()]
    return found


def find(model_id: str) -> Entry:
    """The runnable entry with this id, or an InputError (its problem, or the known ids)."""
    known = entries()
    for item in known:
        if item.id == model_id:
            if item.problem:
                raise InputError(f"User model {model_id!r} cannot run: {item.problem}")
            return item
    raise InputError(f"Unknown model id {model_id!r}; known models: {', '.join(e.id for e in known)}. "
                     "Give a model folder instead, or import one with `x2ct catalog import FOLDER`.")


def import_model(path, model_id: str | None = None, overwrite: bool = False) -> Entry:
    """Copy a checked model folder (card + weights) into the user folder; all or nothing."""
    from x2ct.io import outputs

    card = check_model(path)
    check_finite_file(Path(card["_folder"]) / card["weights"])
    source = Path(card["_folder"])
    model_id = model_id or source.name.lower()
    if not _ID.match(model_id) or len(model_id) > 64:
        raise InputError(f"Model id {model_id[:80]!r} must be at most 64 lower-case letters, digits, '.', '_' or "
                         "'-'; pass --id.")
    if model_id in BUILTIN or any(item["id"] == model_id for item in read_manifest()["models"]):
        raise InputError(f"Model id {model_id!r} is taken by a built-in or shipped model; pass another --id.")
    target = user_folder() / model_id
    if target.exists() and source.resolve() == target.resolve():
        raise InputError(f"{source} is already the installed user model {model_id!r}; nothing to import.")
    if target.exists() and not overwrite:
        raise InputError(f"A user model {model_id!r} already exists at {target}; pass --overwrite to replace it "
                         "or --id to choose another id.")
    weights = source / card["weights"]
    with outputs.claim([target]):
        staging = outputs.stage_folder(target)
        try:
            shutil.copyfile(weights, staging / card["weights"])
            shutil.copyfile(source / CARD_NAME, staging / CARD_NAME)
            if sha256_file(staging / card["weights"]) != card["sha256"]:
                raise InputError(f"The copy of {weights} does not match its checksum; check the disk and try "
                                 "again.")
            entry = _from_card(read_card(staging), model_id, "user")
            for file in staging.iterdir():
                outputs.fsync(file)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
            outputs.fsync(target.parent)
        except X2CTError:
            raise
        except OSError as error:
            raise outputs.failure(target, error, weights.stat().st_size) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(entry, folder=target)


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


def _user(folder: Path) -> Entry:
    """A user model folder as an entry; a card that cannot be read gives an entry that says why."""
    try:
        return _from_card(read_card(folder), folder.name, "user")
    except InputError as error:
        return Entry(folder.name, "user", folder, "(broken)", (), NOT_STATED, {}, NOT_STATED, NOT_STATED,
                     problem=str(error))


def _from_card(card: dict, model_id: str, source: str) -> Entry:
    counts = card.get("view_counts") or [2]
    description = card.get("description") or f"{card['name']} ({card['preset']} preset)"
    return Entry(model_id, source, Path(card["_folder"]), str(description), views_for(min(counts)),
                 str(card.get("training_data", NOT_STATED)), dict(card.get("metrics") or {}),
                 str(card.get("licence", NOT_STATED)),
                 str(card.get("intended_use", "research use only" if card.get("research_use_only") else NOT_STATED)))
