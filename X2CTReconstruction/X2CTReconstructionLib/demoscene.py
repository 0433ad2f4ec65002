"""The Slicer half of ``x2ct demo``: the demo's results in a scene, pictures of Slicer's views, a .mrb file.

``x2ct.demo`` writes the volumes and metrics (with the run records) without
Slicer; ``build`` (``python -m X2CTReconstructionLib.demoscene OUT``, run by
``scripts/demo`` after ``x2ct demo``) then loads them into a headless Slicer scene (slicer-core), lets the module's
Logic show each CT as the module does (``showOutputs``: CT window, volume
rendering with a cut-away ROI, MIP rendering, MIP volumes) and compare it
with the ground truth (``compare``: metrics table, difference volume,
side-by-side layout), renders the views offscreen to PNG, and saves the
whole scene as a Slicer data bundle (.mrb) that opens in 3D Slicer.

Imports ``slicer`` and ``vtk`` (no ``qt``); needs ``trame-slicer`` for the views.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from X2CTReconstructionLib import outputs as output_glue
from X2CTReconstructionLib import render
from X2CTReconstructionLib.compare import GT_VIEWS
from X2CTReconstructionLib.logic import ReconstructionLogic

#: Side of each rendered view in pixels (CPU ray casting costs about 0.3 s a frame at this size).
VIEW_PIXELS = 384
#: Scene file name in the output folder.
SCENE_FILE = "scene.mrb"
#: Name of the ground-truth node.
GROUND_TRUTH = "chest-ct ground truth"


def build(records: list[dict], out, log=print, app=None) -> dict[str, str]:
    """Load the demo's results (``x2ct.demo`` run records) into a scene, render them, save ``scene.mrb``.

    ``app`` is a headless Slicer application (one is created when None).
    Returns the written files by key.
    """
    out = Path(out)
    folder = out / "slicer"
    folder.mkdir(parents=True, exist_ok=True)
    app = app or render.create_app()
    views = DemoViews(app)
    logic = ReconstructionLogic(app.scene, applicationLogic=app.app_logic)
    written: dict[str, str] = {}

    inputs = out / "inputs"
    truth = logic.loadCT(inputs / "chest-ct-ground-truth.nrrd", name=GROUND_TRUTH)
    xrays = {("chest-ct", view): logic.loadXRay(inputs / f"chest-ct-drr-{view}.nrrd", name=f"chest-ct DRR {view}")
             for view in ("frontal", "lateral")}
    if any(r["case"] == "chest-xray" for r in records):
        from x2ct import sampledata

        xrays["chest-xray", "frontal"] = logic.loadXRay(sampledata.path("chest-xray"),
                                                        name="chest-xray (real radiograph)")

    previous = None
    for record in records:
        node = logic.loadCT(record["volume"], name=record["name"])
        sources = [xrays[record["case"], view] for view in record["views"]]
        node.SetAttribute(output_glue.MODEL, record["model"])
        node.SetAttribute(output_glue.NOTES, json.dumps(record["notes"]))
        output_glue.set_inputs(node, sources)  # for the re-projection check
        node.SetAttribute(output_glue.VIEWS, json.dumps([{"node": x.GetName(), "role": view}
                                                         for x, view in zip(sources, record["views"])]))
        if previous is not None:
            views.hide(previous)
        logic.showOutputs(node, reprojection=False)  # x2ct.demo already scored re-projection (metrics.json)
        written.update(views.save_outputs(node, folder, record["name"]))
        if record["case"] == "chest-ct":
            table = logic.compare(node, truth)
            table.SetName(f"{record['name']} metrics")
            written[f"{record['name']}-slicer-side-by-side"] = str(views.save_side_by_side(
                folder / f"{record['name']}-side-by-side.png"))
        previous = node
        log(f"  rendered {record['name']} in Slicer's views")

    scene_path = out / SCENE_FILE
    if not save_scene(app, scene_path):
        raise RuntimeError(f"Slicer could not write the scene file {scene_path}.")
    written["scene"] = str(scene_path)
    log(f"  wrote {scene_path}")
    return written


def save_scene(app, path: Path) -> bool:
    """Write the scene and every node's data as a Slicer data bundle (.mrb: a zip of the .mrml and files)."""
    path = Path(path).resolve()
    partial = path.with_name(f".{path.stem}.partial.mrb")
    scene = app.scene
    scene.SetRootDirectory(str(path.parent))
    scene.SetURL(str(partial))
    import vtk

    quiet = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()  # the zip writer reports every file it adds
    try:
        ok = bool(scene.WriteToMRB(str(partial)))
    finally:
        vtk.vtkObject.SetGlobalWarningDisplay(quiet)
    if ok:
        os.replace(partial, path)
    return ok


class DemoViews:
    """The offscreen views the demo captures: slice views, the 3D view, the MIP view and ground-truth slices."""

    def __init__(self, app):
        from trame_slicer.views import NoScheduleRendering, ViewLayoutDefinition

        self.offscreen = render.OffscreenViews(app, size=(VIEW_PIXELS, VIEW_PIXELS))
        definitions = [ViewLayoutDefinition.threed_view(name=output_glue.MIP_VIEW, label="MIP")]
        definitions += [ViewLayoutDefinition.slice_view(orientation, label=tag)
                        for tag, (orientation, _) in GT_VIEWS.items()]
        import vtk

        warnings = vtk.vtkObject.GetGlobalWarningDisplay()
        vtk.vtkObject.GlobalWarningDisplayOff()  # VTK 9.6 warns about a resize event trame-slicer observes
        try:
            for definition in definitions:  # Logic's MIP view and compare layout find these by layout name
                view = app.view_manager.create_view(definition)
                view.set_scheduled_render(NoScheduleRendering())
                view.update_size(VIEW_PIXELS, VIEW_PIXELS)
                self.offscreen.views[definition.singleton_tag] = view
        finally:
            vtk.vtkObject.SetGlobalWarningDisplay(warnings)

    def capture(self, name: str, reset: bool = True) -> np.ndarray:
        if reset:
            self.offscreen.views[name].reset_view()
        return self.offscreen.capture(name)

    def save_outputs(self, node, folder: Path, stem: str) -> dict[str, str]:
        """PNGs of what ``showOutputs`` set up: slice views, volume rendering, cut-away, MIP rendering."""
        cropped = [d for d in volume_rendering_displays(node) if d.GetCroppingEnabled()]
        # The ROI box drawn over a CPU ray-cast rendering comes out as a mosaic on Mesa, so it is
        # hidden while capturing (the crop still applies); it stays visible in the saved scene.
        rois = [d.GetROINode().GetDisplayNode() for d in cropped
                if d.GetROINode() is not None and d.GetROINode().GetDisplayNode() is not None]
        shown = [roi.GetVisibility() for roi in rois]
        for roi in rois:
            roi.SetVisibility(False)
        pictures = {"slices": _row([self.capture(name) for name in render.SLICE_VIEWS]),
                    "cutaway": self.capture(render.THREE_D_VIEW),
                    "mip": self.capture(output_glue.MIP_VIEW)}
        for display in cropped:
            display.SetCroppingEnabled(False)
        pictures["volume-rendering"] = self.capture(render.THREE_D_VIEW)
        for display in cropped:
            display.SetCroppingEnabled(True)
        for roi, visible in zip(rois, shown):
            roi.SetVisibility(visible)
        written = {}
        for what, pixels in pictures.items():
            path = folder / f"{stem}-{what}.png"
            Image.fromarray(pixels).save(path)
            written[f"{stem}-{what}"] = str(path)
        return written

    def save_side_by_side(self, path: Path) -> Path:
        """The compare layout as one picture: prediction's slice views above, ground truth's below."""
        top = _row([self.capture(name) for name in render.SLICE_VIEWS])
        bottom = _row([self.capture(tag) for tag in GT_VIEWS])
        Image.fromarray(np.concatenate([top, bottom], axis=0)).save(path)
        return path

    def hide(self, node) -> None:
        """Hide a node's volume renderings and ROIs so the next CT renders alone."""
        for display in volume_rendering_displays(node):
            display.SetVisibility(False)
            roi = display.GetROINode()
            if roi is not None and roi.GetDisplayNode() is not None:
                roi.GetDisplayNode().SetVisibility(False)


def volume_rendering_displays(node) -> list:
    displays = (node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes()))
    return [d for d in displays if d is not None and d.IsA("vtkMRMLVolumeRenderingDisplayNode")]


def _row(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Images of equal height side by side with black gaps."""
    height = max(i.shape[0] for i in images)
    spacer = np.zeros((height, gap, 3), dtype=np.uint8)
    parts = []
    for image in images:
        parts += [image, spacer]
    return np.concatenate(parts[:-1], axis=1)


def main(argv=None) -> int:
    """The Slicer half of the demo on the outputs of ``x2ct demo --out OUT``."""
    parser = argparse.ArgumentParser(prog="python -m X2CTReconstructionLib.demoscene",
                                     description="Render x2ct demo's results in Slicer's views and write scene.mrb.")
    parser.add_argument("out", type=Path, help="the folder x2ct demo wrote (holds metrics.json)")
    args = parser.parse_args(argv)
    metrics = args.out / "metrics.json"
    if not metrics.is_file():
        print(f"error: {metrics} does not exist; run x2ct demo --out {args.out} first.", file=sys.stderr)
        return 2
    written = build(json.loads(metrics.read_text())["runs"], args.out)
    print(f"x2ct demo (Slicer): done. Outputs in {args.out.resolve()}:")
    for key, path in written.items():
        print(f"  {key:40s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
