"""A training set-up checked, and its config written, before anything runs.

The Slicer Training module (its panel and its console one-liner) sets up a
run from a dataset folder (or the simulator), a method, a preset, a number of
steps and an output folder. What is wrong with such a set-up, whether an
output folder holds a run to resume, and the config.yaml that a new run gets
are decided here, once, without Slicer. The data kind of a folder comes from
``x2ct.datasources``. Nothing here imports torch: the panel checks a set-up
before PyTorch is installed (the caller passes the method and preset names).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from x2ct.datasources import SIMULATED, detect_kind
from x2ct.errors import InputError

CONFIG_NAME = "config.yaml"


def chosen(folder) -> Path | None:
    """The folder, or None when none was chosen (None, "", or "." which an empty path field gives)."""
    text = str(folder or "").strip()
    return Path(text) if text not in ("", ".") else None


def problems(dataset, method: str, preset: str, steps: int, output, resume: bool, methods: Sequence[str],
             presets: Sequence[str], init_from: str | None = None) -> list[str]:
    """Why this set-up cannot be trained, one line each (empty: it can). ``init_from`` (a model id or folder to
    fine-tune) is checked only for a new run: a resumed run keeps its own config."""
    found = []
    data = chosen(dataset)
    if data is None:
        found.append("Choose the dataset folder (or the simulator).")
    elif str(data) != SIMULATED:
        if not data.is_dir():
            found.append(f"Dataset folder {data} does not exist.")
        else:
            try:
                detect_kind(data)
            except InputError as error:
                found.append(str(error))
    if method not in methods:
        found.append(f"Choose a method ({', '.join(methods)}); got {method!r}.")
    if preset not in presets:
        found.append(f"Choose a preset ({', '.join(presets)}); got {preset!r}.")
    if int(steps) < 1:
        found.append(f"Training needs at least 1 step; got {steps}.")
    if init_from and not resume:
        found += init_from_problems(init_from, method, preset)
    out = chosen(output)
    if out is None:
        found.append("Choose the output folder for checkpoints and the trained model.")
        return found
    found += writable_folder_problems(out)
    if data is not None and str(data) != SIMULATED and out.resolve() == data.resolve():
        found.append("The output folder is the dataset folder; choose a separate folder.")
    return found + run_problems(out, method, preset, resume)


def init_from_problems(init_from: str, method: str, preset: str) -> list[str]:
    """Why the model ``init_from`` cannot be fine-tuned as ``method`` at ``preset`` (empty: it can)."""
    try:
        network(init_from, method, preset)
    except InputError as error:
        return [str(error)]
    return []


def network(init_from: str, method: str | None = None, preset: str | None = None) -> dict:
    """The network and views of the model ``init_from`` (``x2ct.training.finetune.config_for``: method, preset,
    model, angles) and its name as a config holds it; an InputError when it cannot be read, or is not ``method``
    at ``preset`` where they are given."""
    from x2ct.training import finetune

    name = finetune.model_reference(init_from)
    fields = finetune.config_for(finetune.model_card(name))
    if method is not None and (fields["method"], fields["preset"]) != (method, preset):
        raise InputError(f"Model {name!r} is a {fields['method']} network at preset {fields['preset']}; choose "
                         f"that method and preset to fine-tune it (chosen: {method}, {preset}).")
    return {**fields, "name": name}


def resumable_run(output) -> bool:
    """Whether ``output`` holds a training run with a complete checkpoint to continue from."""
    from x2ct.training import checkpoint

    out = chosen(output)
    if out is None or not (out / CONFIG_NAME).is_file():
        return False
    try:
        pointer = checkpoint.read_pointer(out, checkpoint.LATEST)
    except (OSError, ValueError):
        return False
    return bool(pointer) and (out / pointer["folder"] / checkpoint.STATE).is_file()


def stopped_run_files(output) -> list[str]:
    """The files of a run in ``output`` that stopped before its first checkpoint (nothing to resume; a new
    run there must delete them); empty when there are none or the run can be resumed."""
    from x2ct.training import checkpoint

    out = chosen(output)
    if out is None or not out.is_dir() or resumable_run(out):
        return []
    return checkpoint.run_files(out)


def run_problems(output: Path, method: str, preset: str, resume: bool) -> list[str]:
    """A new run needs an output folder without a run; a resumed one needs its run, of the chosen method."""
    if not output.is_dir():
        return [f"Nothing to resume: {output} does not exist."] if resume else []
    resumable = resumable_run(output)
    if not resume:
        if resumable:
            return [f"Output folder {output} already holds a training run; tick Resume to continue it, or "
                    "choose another folder."]
        return []
    if not resumable:
        return [f"Nothing to resume: {output} holds no training checkpoint; untick Resume to start afresh."]
    from x2ct.training import yamlfile  # the one strict YAML reader (PyYAML is installed on first use)

    try:
        saved = yamlfile.read(output / CONFIG_NAME) or {}
    except InputError as error:
        return [str(error)]
    if not isinstance(saved, dict):
        return [f"The run's {output / CONFIG_NAME} is not a config (a mapping of sections); it cannot be resumed."]
    if (saved.get("method"), saved.get("preset")) != (method, preset):
        return [f"The run in {output} trains {saved.get('method')} ({saved.get('preset')}); choose that method "
                "and preset to resume it."]
    return []


def writable_folder_problems(folder: Path) -> list[str]:
    """A folder is usable if it is writable, or can be created under a writable existing parent."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return [f"Output folder {folder} cannot be created: {existing} is a file."]
    if not os.access(existing, os.W_OK):
        return [f"Output folder {folder} is not writable ({existing} is read-only)."]
    return []


def shipped_config(method: str, preset: str, presets: Sequence[str]) -> Path:
    """The shipped config of ``method`` nearest to ``preset`` (ties: the larger, published preset)."""
    from x2ct.training.config import CONFIG_FOLDER

    presets = list(presets)
    wanted = presets.index(preset)
    for other in sorted(presets, key=lambda p: (abs(presets.index(p) - wanted), presets.index(p))):
        path = CONFIG_FOLDER / f"{method}-{other}.yaml"
        if path.is_file():
            return path
    raise InputError(f"No shipped training config for {method}; it cannot be trained from Slicer.")


def write_config(dataset, method: str, preset: str, steps: int, output, presets: Sequence[str],
                 init_from: str | None = None) -> Path:
    """Write ``<output>/config.yaml``: the method's shipped config with this data, preset and steps.

    ``init_from`` (a model id or folder) fine-tunes that model: its network
    (method, preset, model overrides) and view angles are taken from its card.

    The shipped ``<method>-<preset>.yaml`` is the base when it exists, else
    the nearest preset's (``shipped_config``). The result is validated before
    it is written, all or nothing (over the config of a run that never
    reached a checkpoint; a run that did is refused).
    """
    import yaml

    from x2ct.io.outputs import write_text
    from x2ct.training import config as configs
    from x2ct.training import yamlfile

    out = Path(output)
    if resumable_run(out):
        raise InputError(f"{out} already holds a training run; resume it or choose another output folder.")
    base = shipped_config(method, preset, presets)
    data = yamlfile.read(base) or {}
    data["preset"] = preset
    kind = detect_kind(dataset)
    data["data"] = {**data.get("data", {}), "kind": kind}
    if kind == SIMULATED:
        data["data"].pop("source", None)
    else:
        data["data"]["source"] = str(Path(dataset).resolve())
    data.setdefault("train", {})["steps"] = int(steps)
    if init_from:
        _fine_tune(data, method, preset, init_from)
    configs.from_dict(data)  # a wrong field fails here, naming it, and nothing is written
    out.mkdir(parents=True, exist_ok=True)
    header = f"# Written by the X2CT Training module from {base.name} ({kind} data, {steps} steps).\n"
    return write_text(out / CONFIG_NAME, header + yaml.safe_dump(data, sort_keys=False))


def _fine_tune(data: dict, method: str, preset: str, init_from: str) -> None:
    """Make ``data`` (a config mapping) the network and views of the model ``init_from``, which must be ``method``
    at ``preset``."""
    fields = network(init_from, method, preset)
    data["model"] = fields["model"]
    if fields["angles"]:
        data["data"]["angles"] = fields["angles"]
    data["train"]["init_from"] = fields["name"]
