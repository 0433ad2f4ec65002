"""What the X2CT Training module does, without Qt: check a set-up, write its config, run it in the background.

Training runs as a child process (``x2ct train --progress json``, started by
``x2ct.jobs.Job`` with Slicer's PythonSlicer), so Slicer stays responsive, a
crash cannot take Slicer down, and a cancel stops the whole process tree. A
``TrainingRun`` turns the JSON-lines events into step, ETA, losses (also as an
MRML loss curve) and evaluations whenever it is polled.

The module's Logic class (in ``X2CTTraining.py``) adds Slicer's parameter-node
plumbing on top of ``TrainingLogic``, so that all of it runs, and is tested,
headless. PyTorch is imported on first use, not at import time: Slicer gets it
through the PyTorch extension, which may not be installed yet.
"""

from __future__ import annotations

import collections
import math
import sys
import time
from pathlib import Path

from x2ct import datasources, jobs
from x2ct import training_setup as setup
from x2ct.datasources import SIMULATED  # noqa: F401  (the dataset "folder" that means the simulator)
from x2ct.errors import InputError, X2CTError
#: Keys of a step event that are not losses.
_NOT_LOSSES = {"event", "step", "total", "eta_s"}


class TrainingLogic:
    """Lists the trainable methods, checks a training set-up, and starts, follows and resumes runs."""

    def methodNames(self) -> list[str]:
        """Names of the registered reconstruction methods (x2ct.models.registry)."""
        return sorted(_registry().names())

    def presetNames(self) -> tuple[str, ...]:
        """Model size presets, largest first."""
        return tuple(_registry().PRESETS)

    def settingsProblems(self, datasetFolder, method: str, preset: str, steps: int, outputFolder,
                         resume: bool = False, initFrom: str | None = None) -> list[str]:
        """Why this set-up cannot be trained, one line each (empty: it can); ``x2ct.training_setup``'s rules."""
        return setup.problems(datasetFolder, method, preset, steps, outputFolder, resume, self.methodNames(),
                              self.presetNames(), initFrom)

    def fineTunableModels(self) -> list[str]:
        """Ids of the catalog's models that have weights to start from (shipped and imported; not built-ins)."""
        from x2ct import catalog

        return [entry.id for entry in catalog.entries() if entry.folder is not None and not entry.problem]

    def modelNetwork(self, modelId: str) -> tuple[str, str]:
        """(method, preset) of a model's network: what a run that fine-tunes it must train."""
        fields = setup.network(modelId)
        return fields["method"], fields["preset"]

    def dataKind(self, datasetFolder) -> str:
        """The training config's ``data.kind`` for a folder (or ``"simulated"``): ``x2ct.datasources.detect_kind``."""
        return datasources.detect_kind(datasetFolder)

    def resumableRun(self, outputFolder) -> bool:
        """Whether ``outputFolder`` holds a training run with a complete checkpoint to continue from."""
        return setup.resumable_run(outputFolder)

    def stoppedRunFiles(self, outputFolder) -> list[str]:
        """Files that a run which stopped before its first checkpoint left in ``outputFolder`` (empty: none)."""
        return setup.stopped_run_files(outputFolder)

    def writeConfig(self, datasetFolder, method: str, preset: str, steps: int, outputFolder,
                    initFrom: str | None = None) -> Path:
        """Write ``<outputFolder>/config.yaml`` from the method's shipped config (``x2ct.training_setup``);
        ``initFrom`` (a model id or folder) fine-tunes that model."""
        return setup.write_config(datasetFolder, method, preset, steps, outputFolder, self.presetNames(), initFrom)

    def startTraining(self, datasetFolder, method: str, preset: str, steps: int, outputFolder, resume: bool = False,
                      onProgress=None, onDone=None, overwrite: bool = False,
                      initFrom: str | None = None) -> "TrainingRun":
        """Start ``x2ct train`` in the background and return its TrainingRun (poll it, or wait for it).

        With ``resume`` the run in ``outputFolder`` continues from its last
        checkpoint with its own config.yaml, up to ``steps``. The files of a
        run that stopped before its first checkpoint are deleted only with
        ``overwrite`` (the panel asks first). A set-up problem raises
        InputError and starts nothing. ``onProgress(run)`` is called on each
        polled step, ``onDone(run)`` once when the process has ended.
        ``initFrom`` (a model id of the catalog, or a model folder) fine-tunes
        that model: the run starts from its weights, network and views.
        """
        problems = self.settingsProblems(datasetFolder, method, preset, steps, outputFolder, resume, initFrom)
        stopped = [] if resume or overwrite else self.stoppedRunFiles(outputFolder)
        if stopped:
            problems.append(f"Output folder {outputFolder} holds the files of a run that stopped before its first "
                            f"checkpoint ({', '.join(stopped)}); start with overwrite=True to delete them and start "
                            "again, or choose another folder.")
        if problems:
            raise InputError(" ".join(problems))
        out = Path(outputFolder).resolve()
        config = (out / "config.yaml" if resume
                  else self.writeConfig(datasetFolder, method, preset, steps, out, initFrom))
        args = ["train", "--config", str(config), "--out", str(out), "--steps", str(int(steps)), "--progress", "json"]
        if resume:
            args.append("--resume")
        elif overwrite:
            args.append("--overwrite")
        scene = _mrmlScene()
        curve = None
        if scene is not None:
            from .losscurve import LossCurve

            curve = LossCurve(scene, f"X2CT training {method}-{preset} ({out.name})")
        return TrainingRun(jobs.Job(args), out, int(steps), curve, onProgress, onDone)

    def train(self, datasetFolder, method: str, preset: str, steps: int, outputFolder, resume: bool = False,
              overwrite: bool = False, initFrom: str | None = None) -> dict:
        """Blocking one-liner for the Python console: train and return the summary (raises X2CTError on failure)."""
        return self.startTraining(datasetFolder, method, preset, steps, outputFolder, resume,
                                  overwrite=overwrite, initFrom=initFrom).wait()


class TrainingRun:
    """A training process as it goes: call ``poll()`` periodically (a QTimer, or ``wait``).

    After a poll: ``step``/``total``, ``eta_s`` (NaN before the first step),
    ``losses`` [(step, {name: value})], ``evaluations`` [{step, metric: value}],
    ``lossCurve`` (MRML table + chart, None without a scene), ``finished``,
    ``summary`` (the final {steps, model, metrics, best}), ``error`` (one line).
    """

    def __init__(self, job, outputFolder: Path, total: int, lossCurve=None, onProgress=None, onDone=None):
        self.job, self.outputFolder, self.total = job, Path(outputFolder), total
        self.lossCurve, self.onProgress, self.onDone = lossCurve, onProgress, onDone
        self.step, self.eta_s = 0, math.nan
        self.losses: list[tuple[int, dict]] = []
        self.evaluations: list[dict] = []
        self.skipped = 0
        self.summary: dict | None = None
        self.error: str | None = None
        self.finished = False
        self.log: collections.deque = collections.deque(maxlen=100)  # non-JSON output lines

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0

    @property
    def cancelled(self) -> bool:
        return self.job.cancelled

    def statusText(self) -> str:
        """One line for the panel: step, ETA and the last losses, or the outcome once finished."""
        if self.finished and self.error:
            return self.error
        if self.finished:
            metric = (self.summary or {}).get("metrics", {}).get("honest.psnr_db")
            scored = f"; validation PSNR {metric:.2f} dB" if metric is not None else ""
            return f"Trained {self.step} steps{scored}. Model: {(self.summary or {}).get('model')}"
        if not self.losses:
            return f"Starting (step {self.step} of {self.total})..."
        shown = ", ".join(f"{name} {value:.4g}" for name, value in self.losses[-1][1].items())
        return f"Step {self.step} of {self.total}, ETA {formatEta(self.eta_s)}: {shown}"

    def poll(self) -> None:
        """Take in the events that arrived; on the end, set ``finished``/``error`` and call onDone."""
        if self.finished:
            return
        running = self.job.running  # read first: events queued before the end are then all in the next poll
        stepped = False
        for event in self.job.poll():
            stepped |= self._take(event)
        if stepped and self.onProgress is not None:
            self.onProgress(self)
        if not running:
            self._finish()

    def cancel(self, wait: bool = True) -> None:
        """Stop the training process tree; the last checkpoint stays, so the run can be resumed.

        ``wait=False`` (the panel's Cancel) returns at once; the run finishes in the ``poll`` that sees the tree gone.
        """
        self.job.cancel(wait=wait)
        self.poll()

    def wait(self, timeout: float | None = None) -> dict:
        """Poll until the run ends; its summary. Raises X2CTError when it failed or was cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Training still running after {timeout} s (step {self.step}/{self.total}).")
            jobs.pause(0.1)
        if self.error:
            raise X2CTError(self.error)
        return self.summary

    def _take(self, event: dict) -> bool:
        kind = event.get("event")
        if kind in ("start", "step"):
            self.step = int(event.get("step", self.step))
            self.total = int(event.get("total", self.total))
        if kind == "step":
            self.eta_s = float(event.get("eta_s", math.nan))
            losses = {k: float(v) for k, v in event.items() if k not in _NOT_LOSSES and not k.startswith("lr")
                      and isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.losses.append((self.step, losses))
            if self.lossCurve is not None:
                self.lossCurve.add(self.step, losses)
            return True
        if kind == "evaluation":
            self.evaluations.append({k: v for k, v in event.items() if k != "event"})
        elif kind == "skipped":
            self.skipped += 1
        elif kind == "done":
            self.summary = {k: v for k, v in event.items() if k != "event"}
        elif kind == "text":
            self.log.append(event.get("text", ""))
        return False

    def _finish(self) -> None:
        self.finished = True
        code = self.job.returncode
        if self.job.cancelled:
            self.error = (f"Training cancelled at step {self.step} of {self.total}; the last checkpoint in "
                          f"{self.outputFolder} is kept: resume to continue.")
        elif code != 0:
            self.error = self.job.error or f"Training stopped with exit code {code}."
        elif self.summary is None:
            self.error = "Training ended without its final summary; see the log in the output folder."
        if self.onDone is not None:
            self.onDone(self)


def formatEta(seconds: float) -> str:
    """h:mm:ss, or "?" while unknown (NaN before the first step)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _mrmlScene():
    """Slicer's scene when running in (headless) Slicer, else None."""
    return getattr(sys.modules.get("slicer"), "mrmlScene", None)


def _registry():
    try:
        from x2ct.models import registry
    except ImportError as error:
        raise X2CTError(
            f"The model registry cannot be loaded ({error}); install PyTorch (in 3D Slicer: the PyTorch "
            "extension from the Extensions Manager) and restart."
        ) from error
    return registry
