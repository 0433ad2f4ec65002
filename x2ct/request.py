"""The rules a reconstruction request must satisfy, written once for the CLI, the Slicer module and the console.

A request names a model (catalog id or model folder), some views, a device,
a number of samples and where the CT goes. Every check of those lives here:
``x2ct reconstruct`` (through ``x2ct.inference``), the X2CT Reconstruction
module's logic and widget, and a console call all ask the same functions, so
they refuse the same requests with the same words. Callers add only how to
fix a problem in their own terms (a widget's button, a CLI flag) as a hint.

``model_facts`` reads a model's card once and no weights: the process that
loads the model verifies the weights' sha256 (``x2ct.modelfile.load_model``),
so one reconstruction hashes them once.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

from x2ct.errors import InputError

#: Devices a reconstruction can be asked for; ``auto`` picks one (``x2ct.inference.choose_device``).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Shown instead of a hash for built-in models, which have no weights.
NO_WEIGHTS = "none (built-in model, no weights)"


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What a request needs to know about a model, from its card (no weights read)."""

    id: str
    source: str  # "builtin", "shipped", "user" or "folder"
    folder: Path | None
    sha256: str  # the card's; verified by the process that loads the weights
    view_counts: tuple[int, ...]
    generative: bool  # draws samples: several draws give a mean and an uncertainty volume


def model_facts(model) -> ModelFacts:
    """The facts of a catalog id or model folder; InputError for an unknown id, a bad card or missing weights."""
    from x2ct import catalog
    from x2ct.modelfile import read_card

    path = Path(str(model)).expanduser()
    if path.is_dir():
        model_id, source, card = path.name, "folder", read_card(path)
    else:
        entry = catalog.find(str(model))
        if entry.source == "builtin":
            from x2ct.models.baselines import VIEW_COUNTS

            return ModelFacts(entry.id, "builtin", None, NO_WEIGHTS, tuple(VIEW_COUNTS), False)
        model_id, source, card = entry.id, entry.source, read_card(entry.folder)
    folder = Path(card["_folder"])
    weights = folder / card["weights"]
    if not weights.is_file():
        raise InputError(f"Weights file {weights} of model {model_id} is missing; copy it next to its card "
                         "or import the model again.")
    return ModelFacts(model_id, source, folder, card["sha256"], card_view_counts(card), is_generative(card))


def card_view_counts(card: dict) -> tuple[int, ...]:
    """The numbers of views a model card accepts (two when the card predates the field)."""
    return tuple(int(count) for count in (card.get("view_counts") or (2,)))


def is_generative(card: dict) -> bool:
    """Whether the card's model draws samples: its network, built on torch's meta device, has ``sample``.

    Nothing is allocated and no weights are read. A card that cannot be built
    counts as not generative here; the run that loads it reports why.
    """
    import torch

    from x2ct.models import registry

    try:
        with torch.device("meta"):
            network = registry.build(card["name"], card["preset"], **(card.get("overrides") or {}))
    except Exception:  # reported when the run starts
        logging.exception("Could not inspect model %s", card.get("name"))
        return False
    return callable(getattr(network, "sample", None))


def view_count_problem(model_id: str, counts: Sequence[int], given: int, hint: str | None = None) -> str | None:
    """Why a model that accepts ``counts`` views cannot take ``given`` views (None if it can).

    ``hint`` says how to fix it in the caller's terms (default: the views to give).
    """
    from x2ct.catalog import views_for

    counts = sorted(int(c) for c in counts)
    if given in counts:
        return None
    if len(counts) > 2 and counts == list(range(counts[0], counts[-1] + 1)):
        accepted = f"{counts[0]} to {counts[-1]}"
    else:
        accepted = " or ".join(map(str, counts))
    noun = "view" if counts == [1] else "views"
    return (f"Model {model_id} needs {accepted} {noun} ({', '.join(views_for(counts[0]))}) but got {given}: "
            + (hint or f"give {accepted} views."))


#: The most draws one reconstruction may ask for (the Slicer panel's spin box goes as far): each is a full
#: sampling run, about a second on the CPU for the shipped model, and the mean changes little after a few.
MAX_SAMPLES = 32
#: Seeds torch's generators accept.
SEED_RANGE = (-2**63, 2**64 - 1)


def samples_problem(model_id: str, generative: bool, samples) -> str | None:
    """Why ``samples`` draws cannot be asked of this model (None if they can)."""
    if isinstance(samples, bool) or int(samples) != samples or not 1 <= samples <= MAX_SAMPLES:
        return f"Samples must be a whole number from 1 to {MAX_SAMPLES}, got {samples}."
    if samples > 1 and not generative:
        return (f"Model {model_id} is deterministic; several samples need a generative model such as "
                "code-diffusion. Set samples to 1.")
    return None


def seed_problem(seed) -> str | None:
    """Why ``seed`` cannot seed the draws (None if it can, or is None: the model's own seed)."""
    if seed is None or (not isinstance(seed, bool) and int(seed) == seed and SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        return None
    return f"The seed must be a whole number from -2^63 to 2^64 - 1, got {seed}."


def torch_device(device: str) -> str:
    """``device`` checked as a place to run torch here (``auto``: CUDA when present, else CPU); else InputError."""
    problem = device_problem(device)
    if problem:
        raise InputError(problem)
    available = available_devices()
    if device == "auto":
        return "cuda" if "cuda" in available else "cpu"
    if device not in available:
        raise InputError(unavailable_device(device))
    return device


def device_problem(device: str) -> str | None:
    """Why ``device`` is not a device a reconstruction can ask for (None if it is)."""
    if device in DEVICES:
        return None
    return f"Unknown device {device!r}; choose one of {', '.join(DEVICES)}."


def available_devices() -> list[str]:
    """The devices worth offering here: auto and cpu, plus cuda / mps when torch sees them."""
    choices = ["auto", "cpu"]
    try:
        import torch
    except ImportError:
        return choices
    if torch.cuda.is_available():
        choices.append("cuda")
    if torch.backends.mps.is_available():
        choices.append("mps")
    return choices


def unavailable_device(device: str) -> str:
    """The message for a device that this machine lacks (worded for the CLI and the Slicer console alike)."""
    return (f"Device {device} is not available on this machine (PyTorch sees no {device.upper()} device); "
            "choose auto or cpu.")


def output_problem(output, inputs: Sequence) -> str | None:
    """Why ``output`` (a node ID, a path...) cannot receive the CT: it is one of the ``inputs`` (None if it can)."""
    if output is not None and any(item is not None and item == output for item in inputs):
        return "The output is one of the input X-rays; choose a new output (or let one be created), never an input."
    return None


@dataclasses.dataclass(frozen=True)
class Request:
    """One reconstruction asked for: ``problems()`` lists what is wrong with it, one line each."""

    facts: ModelFacts
    views: int
    device: str = "auto"
    samples: int = 1
    output: object = None  # what receives the CT (node ID or path); None: a new one
    inputs: tuple = ()  # what the views come from (node IDs or paths), compared with ``output``
    view_hint: str | None = None

    def problems(self) -> list[str]:
        found = [view_count_problem(self.facts.id, self.facts.view_counts, self.views, self.view_hint),
                 device_problem(self.device), samples_problem(self.facts.id, self.facts.generative, self.samples),
                 output_problem(self.output, self.inputs)]
        return [problem for problem in found if problem]

    def check(self) -> None:
        """Raise InputError with every problem, or return: the request can start."""
        problems = self.problems()
        if problems:
            raise InputError(" ".join(problems))


def same_angle_problem(angles: Sequence[float]) -> str | None:
    """Why views at these gantry angles (degrees) cannot go together: two share an angle (None if none do)."""
    known = [float(angle) % 360.0 for angle in angles if angle is not None]
    if len(set(known)) == len(known):
        return None
    return (f"Two views have the same angle ({', '.join(f'{a:g}' for a in known)} deg); "
            "give each view its own angle.")
