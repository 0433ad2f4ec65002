"""The real sample radiograph through a one-view model: does a clinician's PA film give a chest?

Issue 13's question, measured without fusion on the sample data's real PA
film (``chest-xray``, a DICOM radiograph, pixel spacing unknown to the
model's geometry), for every shipped one-view model as it is now and for
``MODEL_ID`` as it was shipped before issue 13 (its weights read from git at
``BEFORE_COMMIT``), each with the geometric preparation only
(``input_kind="drr"``: field fitted, normalised, as before issue 13) and the
film preparation (``input_kind="auto"``, here ``film``: ``x2ct.io.prepare``).
Per row:

* re-projection NCC: the prepared view against the X2CT-mode DRR of the
  output (``x2ct.metrics.reprojection_consistency``, as ``x2ct demo``);
  goal >= 0.90;
* lung voxels right / left (``x2ct.metrics.lung_mask`` on the 128^3 output,
  split at the middle right-left column) and their median HU; goal: air-filled
  lungs (-950..-400 HU) on both sides;
* mediastinum median HU: the central 8 right-left columns, middle half
  front-to-back, upper half of the height (denser than the lungs);
* air share: the share of the output's voxels below -900 HU (the air
  around the body and in the lungs): a chest leaves 40-50 % of the protocol
  cube as air (``REFERENCE_SEEDS``), a box that fills the field almost none;
* the input-likeness score and its threshold (``x2ct.likeness``).

It also draws ``docs/real-radiograph-before-after.png`` (one row per
measurement: the film, the prepared input, central slices and MIPs).

    python -m x2ct.benchmarks.realfilm        # or: x2ct benchmark --only realfilm
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

TITLE = "Real sample radiograph (one-view model, no fusion)"

MODEL_ID = "henzler-1v"
#: The commit whose shipped henzler-1v predates issue 13's retraining (DRRs of one patient, no film simulation).
BEFORE_COMMIT = "642f433"
GOAL_NCC = 0.90
LUNG_HU = (-950.0, -400.0)
AIR_HU = -900.0
#: Held-out test pseudo-patients whose air share is the reference for a chest.
REFERENCE_SEEDS = (20000, 20001, 20002, 20003)
ROOT = Path(__file__).resolve().parents[2]
FIGURE = ROOT / "docs" / "real-radiograph-before-after.png"


def model_at(commit: str, folder: Path) -> Path | None:
    """The shipped model folder as it was at ``commit`` (git), written under ``folder``; None outside a checkout."""
    target = folder / f"{MODEL_ID}-{commit}"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", "model.safetensors"):
        done = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:Resources/Models/{MODEL_ID}/{name}"],
                              capture_output=True)
        if done.returncode != 0:
            return None
        (target / name).write_bytes(done.stdout)
    return target


def measure(result) -> dict:
    """The row's numbers for one reconstruction (``x2ct.inference.Reconstruction``)."""
    from x2ct import metrics
    from x2ct.demo import reprojection
    from x2ct.image import to_canonical

    ncc = reprojection(result)["ncc"]
    hu = to_canonical(result.volume).array  # (superior-inferior, anterior-posterior, right-left)
    lungs = metrics.lung_mask(hu)
    d, h, w = hu.shape
    sides = [(lungs[:, :, :w // 2], hu[:, :, :w // 2]), (lungs[:, :, w // 2:], hu[:, :, w // 2:])]
    mediastinum = hu[d // 2:, h // 4:3 * h // 4, w // 2 - 4:w // 2 + 4]
    likeness = result.preparation[0]["likeness"] or {}
    return {"ncc": float(ncc), "lung_voxels": [int(mask.sum()) for mask, _ in sides],
            "lung_median_hu": [float(np.median(values[mask])) if mask.any() else float("nan")
                               for mask, values in sides],
            "mediastinum_hu": float(np.median(mediastinum)), "air_share": float((hu < AIR_HU).mean()),
            "likeness": likeness.get("score"), "threshold": likeness.get("threshold")}


def one_view_models() -> list[str]:
    """The shipped models that take the frontal view alone (``MODEL_ID`` first)."""
    from x2ct import catalog

    ids = [e.id for e in catalog.entries() if e.source == "shipped" and e.views_required == ("frontal",)]
    return sorted(ids, key=lambda i: i != MODEL_ID)


def run(quick: bool = False) -> str:
    from x2ct import inference, sampledata
    from x2ct.io import read_xray

    film = read_xray(sampledata.path("chest-xray"))
    with tempfile.TemporaryDirectory() as folder:
        before = model_at(BEFORE_COMMIT, Path(folder))
        models = ([(f"{MODEL_ID} before ({BEFORE_COMMIT})", before)] if before else []) + \
            [(f"{model_id} now (shipped)", model_id) for model_id in one_view_models()]
        rows, results = [], []
        for label, model in models:
            loaded = inference.load(model)
            for kind, how in (("drr", "geometric only"), ("auto", "film (x2ct.io.prepare)")):
                if quick and kind == "drr" and model != before:
                    continue
                result = inference.reconstruct([film], loaded, device="cpu", input_kind=kind)
                rows.append((label, how, measure(result)))
                results.append((f"{label}, {how}", result))
    _figure(film, results)
    return _table(rows, before is not None, reference_air_share())


def reference_air_share() -> tuple[float, float]:
    """(lowest, highest) air share of the ground truths of ``REFERENCE_SEEDS`` on the protocol grid."""
    from x2ct.data import datasets, simulate

    shares = [float((simulate.pseudo_patient(seed, datasets.X2CT).ct.array < AIR_HU).mean())
              for seed in REFERENCE_SEEDS]
    return min(shares), max(shares)


def _table(rows, with_before: bool, air: tuple[float, float]) -> str:
    lines = ["| model | preparation | re-projection NCC | lung voxels right / left | lung median HU right / left "
             "| mediastinum median HU | air share | input likeness (threshold) |", "|---|---|---|---|---|---|---|---|"]
    for label, how, m in rows:
        likeness = "-" if m["likeness"] is None else f"{m['likeness']:.2f} ({m['threshold']:.2f})"
        lines.append(f"| {label} | {how} | {m['ncc']:.3f} | {m['lung_voxels'][0]:,} / {m['lung_voxels'][1]:,} | "
                     f"{m['lung_median_hu'][0]:.0f} / {m['lung_median_hu'][1]:.0f} | {m['mediastinum_hu']:.0f} | "
                     f"{m['air_share']:.2f} | "
                     f"{likeness} |")
    notes = [
        "",
        "- Command: `x2ct benchmark --only realfilm` (or `python -m x2ct.benchmarks.realfilm`); CPU, no fusion.",
        "- Input: the sample data's real PA radiograph (`chest-xray`); every shipped one-view model"
        + (f"; before = `{MODEL_ID}`'s weights at commit {BEFORE_COMMIT} (read with git)." if with_before else
           "; no git checkout here, so no 'before' rows."),
        f"- Goals (issue 13): re-projection NCC >= {GOAL_NCC:.2f}; lungs of {LUNG_HU[0]:.0f}..{LUNG_HU[1]:.0f} HU "
        "on both sides of a denser mediastinum.",
        f"- Air share: voxels below {AIR_HU:.0f} HU; the ground truths of held-out test pseudo-patients "
        f"{REFERENCE_SEEDS[0]}-{REFERENCE_SEEDS[-1]} hold {air[0]:.2f}-{air[1]:.2f} (a chest with air around it).",
        "- Re-projection NCC compares each row's own prepared view with the DRR of its output, so rows with "
        "different preparations compare different inputs.",
        f"- Picture: `{FIGURE.relative_to(ROOT)}` (rows as in the table: film, prepared input, axial, coronal, "
        "sagittal slices and MIPs, lung window).",
    ]
    return "\n".join(lines + notes)


def _figure(film, results) -> None:
    from x2ct import render
    from x2ct.demo import prepared_view

    rows = []
    for title, result in results:
        planes = render.ct_planes(result.volume, -600.0, 1500.0, height=160, title=title)
        rows.append(render.side_by_side([render.xray_panel(film, height=planes.height, lines=[title]),
                                         render.xray_panel(prepared_view(result), height=planes.height,
                                                           lines=["prepared input"]), planes]))
    render.save_png(render.stacked(rows), FIGURE)


if __name__ == "__main__":
    print(run())
