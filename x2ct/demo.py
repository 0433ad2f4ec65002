"""The main job on the bundled sample data (the README's first command, ``x2ct demo``).

(a) The sample chest CT is put on the X2CT protocol grid (the ground truth),
its frontal and lateral X2CT-mode DRRs are written as NRRD files and read
back like a user's X-rays, and every shipped model reconstructs it (two-view
models from both views, one-view models from the frontal), plus the built-in
back-projection baseline; models whose method includes Beer-Lambert fusion
(Henzler's) run once more with it. Each result is scored against the ground
truth (``x2ct.metrics``: every convention, lung Dice) and by re-projection.
(b) The real PA radiograph (chest-xray.dcm) is reconstructed with the
one-view model (back-projection when none is shipped). The file records no
pixel spacing, so the spacing is assumed and the result's notes say so. Its
reconstruction is also shown in red-cyan stereo and from the side (the
lateral predicted from the PA film; ``x2ct.novelviews``).

Outputs: CT volumes (NRRD), a side-by-side PNG of each prediction against
the ground truth, and metrics (Markdown and JSON; ``metrics.json`` holds the
run records). The Slicer half (renders of Slicer's views, the scene file) is
the module's own: ``X2CTReconstructionLib.demoscene`` reads those records,
and ``scripts/demo`` runs it after this, so the core never reaches up into
the Slicer layer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from x2ct import catalog, inference, io, metrics, novelviews, physics, render, sampledata
from x2ct.data.protocol import X2CT, get_protocol, resample
from x2ct.image import Volume, XRay
from x2ct.io.outputs import write_text

#: Side of the X2CT detector in pixels: the input DRRs are written at full detector resolution.
DRR_PIXELS = physics.X2CT_GEOMETRY.pixels[0]
#: Methods whose published pipeline ends with Beer-Lambert fusion (Henzler et al., seed 004).
FUSION_METHODS = ("henzler",)
#: Display window of the PNGs: the lung window shows both lungs and bone on a chest.
WINDOW = render.CT_WINDOWS["lung"]
#: Folder holding the Slicer module (its Lib package is imported from there, as Slicer does).


@dataclasses.dataclass
class Run:
    """One reconstruction the demo makes: which model, from which inputs, with or without fusion."""

    name: str  # file stem of its outputs
    case: str  # "chest-ct" (has a ground truth) or "chest-xray"
    model: inference.LoadedModel
    views: tuple[str, ...]
    fusion: bool = False


@dataclasses.dataclass
class ChestCase:
    """The ground-truth chest CT on the protocol grid, its lung labels, and its DRRs read back from files."""

    ct: Volume  # HU, original grid
    labels: Volume | None
    lung_ids: list[int] | None
    xrays: dict[str, XRay]  # view -> the DRR as read back from its file
    ground_truth: dict[int, Volume] = dataclasses.field(default_factory=dict)  # size -> GT on that grid

    def truth(self, size: int) -> Volume:
        """The CT on the X2CT protocol grid of ``size``^3 (every model's output grid; the crop is shared)."""
        if size not in self.ground_truth:
            self.ground_truth[size] = get_protocol("x2ct", size).resample(self.ct)
        return self.ground_truth[size]

    def truth_labels(self, size: int) -> Volume | None:
        """The lung labels on the same grid (nearest neighbour)."""
        if self.labels is None:
            return None
        grid = get_protocol("x2ct", size).output_grid(self.ct)
        return resample(self.labels, grid, 0.0, interpolator="nearest")


def run(out, log=print, models: list[str] | None = None, radiograph: bool = True) -> dict:
    """Run the demo into folder ``out``; return the summary (also written to ``summary.json``).

    ``models``: catalog ids or model folders (default: the built-in
    baseline and every shipped model). ``radiograph``: also reconstruct the
    real chest radiograph.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    outputs: dict[str, str] = {}
    skipped: list[str] = []

    log("x2ct demo: preparing the sample chest CT and its DRRs")
    case = load_chest_case(out / "inputs", outputs, log)
    loaded = [inference.load(model, "cpu") for model in (models or default_models())]
    runs = plan(loaded)
    if radiograph:
        runs += plan_radiograph(loaded, skipped)

    records = []
    xray_file = sampledata.path("chest-xray")
    for item in runs:
        log(f"x2ct demo: {item.name}: {item.model.id} from {' + '.join(item.views)}"
            + (" with fusion" if item.fusion else ""))
        xrays = ([case.xrays[view] for view in item.views] if item.case == "chest-ct"
                 else [io.read_xray(xray_file)])
        record = reconstruct(item, xrays, case if item.case == "chest-ct" else None, out, outputs, log)
        records.append(record)

    table = write_metrics(records, out, outputs, log)

    summary = {"outputs": outputs, "skipped": skipped, "runs": [r["name"] for r in records],
               "seconds": round(time.perf_counter() - started, 1)}
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    outputs["summary"] = str(out / "summary.json")
    log("")
    log(table)
    log("")
    log(f"x2ct demo: done in {summary['seconds']} s. Outputs in {out.resolve()}:")
    for key, path in outputs.items():
        log(f"  {key:40s} {path}")
    for reason in skipped:
        log(f"  skipped: {reason}")
    return summary


def default_models() -> list[str]:
    """The built-in baselines and the shipped models (not user models: the demo shows what ships)."""
    return [entry.id for entry in catalog.entries() if entry.source in ("builtin", "shipped")]


def load_chest_case(folder: Path, outputs: dict, log) -> ChestCase:
    """Ground truth on the 128^3 protocol grid; its frontal and lateral DRRs written as files and read back."""
    files = sampledata.fetch("chest-ct")
    ct = io.read_ct(files["chest-ct.nii.gz"])
    labels = io.read_ct(files["chest-ct-labels.nii.gz"]) if "chest-ct-labels.nii.gz" in files else None
    lung_ids = metrics.lung_label_ids(files["chest-ct-structures.csv"]) if labels is not None else None
    case = ChestCase(ct, labels, lung_ids, {})
    truth = case.truth(X2CT.size)
    outputs["ground-truth"] = str(io.write_volume(truth, folder / "chest-ct-ground-truth.nrrd"))
    log(f"  wrote {outputs['ground-truth']}")
    for view in ("frontal", "lateral"):
        drr = physics.drr(truth, view, mode="x2ct", x2ct_size=DRR_PIXELS)
        path = io.write_xray(drr, folder / f"chest-ct-drr-{view}.nrrd")
        outputs[f"drr-{view}"] = str(path)
        log(f"  wrote {path}")
        case.xrays[view] = io.read_xray(path)
    return case


def plan(loaded: list[inference.LoadedModel]) -> list[Run]:
    """The chest-CT runs: two views where a model takes two, else the frontal; fusion methods also fused."""
    runs = []
    for model in loaded:
        views = views_for(model)
        runs.append(Run(f"chest-ct-{model.id}", "chest-ct", model, views))
        if uses_fusion(model):
            runs.append(Run(f"chest-ct-{model.id}-fusion", "chest-ct", model, views, fusion=True))
    return runs


def plan_radiograph(loaded: list[inference.LoadedModel], skipped: list[str]) -> list[Run]:
    """The real radiograph with each trained one-view model, else with back-projection (and a note)."""
    one_view = [m for m in loaded if m.id != "back-projection" and views_for(m) == ("frontal",)]
    if not one_view:
        fallback = [m for m in loaded if m.id == "back-projection"]
        skipped.append("no one-view model is shipped: the real radiograph is reconstructed with the "
                       "back-projection baseline instead" if fallback else
                       "the real radiograph: neither a one-view model nor back-projection was selected")
        one_view = fallback
    runs = []
    for model in one_view:
        runs.append(Run(f"chest-xray-{model.id}", "chest-xray", model, ("frontal",)))
        if uses_fusion(model):
            runs.append(Run(f"chest-xray-{model.id}-fusion", "chest-xray", model, ("frontal",), fusion=True))
    return runs


def views_for(model: inference.LoadedModel) -> tuple[str, ...]:
    """The views a model is given: as its catalog entry or card says, else both when it accepts two."""
    required = model.card.get("views_required")
    if required is None:
        entry = next((e for e in catalog.entries() if e.id == model.id and e.source == "shipped"), None)
        required = entry.views_required if entry is not None else None
    if required is not None:
        return tuple(required)
    return ("frontal", "lateral") if 2 in model.model.spec.view_counts else ("frontal",)


def uses_fusion(model: inference.LoadedModel) -> bool:
    """Whether the model's method ends with fusion (its card says so, or it is Henzler's)."""
    return bool(model.card.get("fusion")) or model.card.get("name") in FUSION_METHODS


def reconstruct(item: Run, xrays: list[XRay], case: ChestCase | None, out: Path, outputs: dict, log) -> dict:
    """Reconstruct, write the volume and its figure, score it; return the run's metrics record."""
    started = time.perf_counter()
    result = inference.reconstruct(xrays, item.model, device="cpu", fusion=item.fusion)
    seconds = time.perf_counter() - started
    volume_path = io.write_volume(result.volume, out / "volumes" / f"{item.name}.nrrd")
    outputs[item.name] = str(volume_path)
    log(f"  {seconds:.1f} s; wrote {volume_path}")
    record = {"name": item.name, "case": item.case, "model": item.model.id,
              "method": item.model.card.get("name", item.model.id), "views": list(item.views),
              "fusion": item.fusion, "seconds": round(seconds, 2), "device": result.device,
              "notes": result.notes, "volume": str(volume_path), "preparation": result.preparation,
              "reprojection": reprojection(result)}
    if case is not None:
        truth = case.truth(result.volume.shape[0])
        record["ground_truth_grid"] = f"{truth.shape[0]}^3 voxels of {truth.spacing[0]:g} mm"
        record["metrics"] = metrics.json_ready(metrics.evaluate_volumes(
            result.volume, truth, labels=case.truth_labels(truth.shape[0]), lung_ids=case.lung_ids))
        figure = render.side_by_side([
            render.ct_planes(result.volume, *WINDOW, title=item.name),
            render.ct_planes(truth, *WINDOW, title="ground truth"),
        ])
        key = f"{item.name}-vs-ground-truth"
    else:
        figure = render.side_by_side([
            render.xray_panel(xrays[0], height=512, lines=["input: real CR radiograph"]),
            render.xray_panel(prepared_view(result), height=512, lines=["prepared input (what the network saw)"]),
            render.ct_planes(result.volume, *WINDOW, title=item.name),
        ])
        key = f"{item.name}-preview"
        outputs.update(novelviews.write_novel_views(result.volume, out / "figures", item.name))  # Henzler's uses
    path = render.save_png(figure, out / "figures" / f"{key}.png")
    outputs[key] = str(path)
    record["figure"] = str(path)
    return record


def prepared_view(result: inference.Reconstruction) -> XRay:
    """The first input as the network saw it, on the training DRRs' detector (its pixels span that detector)."""
    view = np.asarray(result.views[0])
    pixel_mm = physics.X2CT_GEOMETRY.detector_mm[0] / view.shape[0]
    return XRay(view, (pixel_mm, pixel_mm), "frontal", sad=physics.X2CT_GEOMETRY.sad, sid=physics.X2CT_GEOMETRY.sid)


def reprojection(result: inference.Reconstruction) -> dict:
    """NCC of each prepared input view with the X2CT-mode DRR of the reconstruction at that view's angle."""
    size = result.views.shape[-1]
    drrs = [physics.drr(result.volume, angle, mode="x2ct", x2ct_size=size).image for angle in result.angles]
    return metrics.json_ready(metrics.reprojection_consistency(list(result.views), drrs))


def write_metrics(records: list[dict], out: Path, outputs: dict, log) -> str:
    """``metrics.json`` (every number) and ``metrics.md`` (the main ones); return the Markdown table."""
    payload = {"conventions": metrics.CONVENTIONS,
               "ground_truth": "the sample chest CT on the X2CT protocol grid (320 mm cube, top of the scan "
                               "kept), HU window [-1024, 1476] -> [0, 1]; inputs are its X2CT-mode DRRs",
               "runs": records}
    json_path = out / "metrics.json"
    write_text(json_path, json.dumps(payload, indent=2, allow_nan=False))
    table = markdown_table(records)
    md_path = out / "metrics.md"
    write_text(md_path, "# x2ct demo: metrics\n\n" + table + "\n\n" + "\n".join(
        f"- **{name}**: {text}" for name, text in metrics.CONVENTIONS.items()) + "\n")
    outputs["metrics-json"], outputs["metrics-md"] = str(json_path), str(md_path)
    log(f"  wrote {json_path} and {md_path}")
    return table


def markdown_table(records: list[dict]) -> str:
    """One row per run: both metric conventions, honest scores, lung Dice, re-projection NCC, run time."""
    header = ("| run | model | views | fusion | X2CT PSNR 3D / 2D (dB) | X2CT SSIM 2D | R&C PSNR (dB) | R&C SSIM "
              "| honest PSNR (dB) | honest SSIM 3D | MAE (HU) | lung Dice (thr. / label) | re-proj. NCC | time (s) |")
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in records:
        m = r.get("metrics")
        if m:
            x, rc, h, lung = m["x2ct"], m["repeat_concatenate"], m["honest"], m["lung_dice"]
            scores = [f"{_n(x['psnr_3d_db'], 2)} / {_n(x['psnr_2d_db'], 2)}", _n(x["ssim_2d"], 3),
                      _n(rc["psnr_3d_db"], 2), _n(rc["ssim_2d"], 3), _n(h["psnr_db"], 2), _n(h["ssim_3d"], 3),
                      _n(h["mae_hu"], 0), f"{_n(lung['threshold'], 3)} / {_n(lung.get('label'), 3)}"]
        else:
            scores = ["no ground truth"] + ["-"] * 7
        rows.append("| " + " | ".join([r["name"], r["model"], "+".join(r["views"]), "yes" if r["fusion"] else "no",
                                       *scores, _n(r["reprojection"]["ncc"], 4), f"{r['seconds']:.1f}"]) + " |")
    return "\n".join(rows)


def _n(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"
