"""What the X2CT Training module decides, without Qt: which methods and presets exist, and
whether a training set-up is usable.

The module's Logic class (in ``X2CTTraining.py``) adds Slicer's parameter-node
plumbing on top of this class, so that all of it runs, and is tested,
headless. The model registry is imported on first use, not at import time:
it needs PyTorch, which Slicer gets through the PyTorch extension.
"""

from __future__ import annotations

import os
from pathlib import Path

from x2ct.errors import X2CTError


class TrainingLogic:
    """Lists the trainable methods and checks a training set-up before anything runs."""

    def methodNames(self) -> list[str]:
        """Names of the registered reconstruction methods (x2ct.models.registry)."""
        return sorted(_registry().names())

    def presetNames(self) -> tuple[str, ...]:
        """Model size presets, largest first."""
        return tuple(_registry().PRESETS)

    def settingsProblems(self, datasetFolder, method: str, preset: str, steps: int, outputFolder) -> list[str]:
        """Why this set-up cannot be trained, one line each (empty: it can)."""
        problems = []
        dataset = _chosen(datasetFolder)
        if dataset is None:
            problems.append("Choose the dataset folder.")
        elif not dataset.is_dir():
            problems.append(f"Dataset folder {dataset} does not exist.")
        elif not any(dataset.iterdir()):
            problems.append(f"Dataset folder {dataset} is empty.")
        methods = self.methodNames()
        if method not in methods:
            problems.append(f"Choose a method ({', '.join(methods)}); got {method!r}.")
        if preset not in self.presetNames():
            problems.append(f"Choose a preset ({', '.join(self.presetNames())}); got {preset!r}.")
        if int(steps) < 1:
            problems.append(f"Training needs at least 1 step; got {steps}.")
        output = _chosen(outputFolder)
        if output is None:
            problems.append("Choose the output folder for checkpoints and the trained model.")
        else:
            problems.extend(_writable_folder_problem(output))
            if dataset is not None and output.resolve() == dataset.resolve():
                problems.append("The output folder is the dataset folder; choose a separate folder.")
        return problems


def _chosen(folder) -> Path | None:
    """The folder, or None when none was chosen (None, "", or "." which an empty path field gives)."""
    text = str(folder or "").strip()
    return Path(text) if text not in ("", ".") else None


def _registry():
    try:
        from x2ct.models import registry
    except ImportError as error:
        raise X2CTError(
            f"The model registry cannot be loaded ({error}); install PyTorch (in 3D Slicer: the PyTorch "
            "extension from the Extensions Manager) and restart."
        ) from error
    return registry


def _writable_folder_problem(folder: Path) -> list[str]:
    """A folder is usable if it is writable, or can be created under a writable existing parent."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return [f"Output folder {folder} cannot be created: {existing} is a file."]
    if not os.access(existing, os.W_OK):
        return [f"Output folder {folder} is not writable ({existing} is read-only)."]
    return []
