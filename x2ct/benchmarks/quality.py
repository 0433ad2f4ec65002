"""Reconstruction quality of every shipped model and of the baselines (issue 7).

The questions: does each learned model beat the back-projection and mean-CT
baselines by at least 2 dB PSNR (honest convention) on held-out cases? Do
two views beat one? Does Beer-Lambert fusion bring the re-projection NCC
above 0.99 while costing at most 0.5 dB PSNR?

Cases: held-out test pseudo-patients (``x2ct.data.simulate`` test seeds
20000-; no shipped model saw them) and the real sample chest CT (every
pseudo-patient is a deformation of it, so it is in-distribution by
construction, not an independent test). Each ground truth is the CT on the
X2CT protocol grid (128^3 voxels of 2.5 mm); the inputs are its X2CT-mode
DRRs at full detector resolution (``x2ct.physics.drr``), given to
``x2ct.inference.reconstruct`` as a user's X-rays would be, so every model
runs through the same view preparation, fusion and output resampling as in
the extension. Scores: ``x2ct.metrics.evaluate_volumes`` (X2CT and honest
conventions, lung Dice) and re-projection NCC (the X2CT-mode DRR of the
reconstruction against each prepared input view, as ``x2ct demo`` does);
over the held-out cases, density and coverage (``x2ct.metrics.fidelity``,
the code-diffusion paper's terms) from each score's embeddings.

Baselines: ``back-projection`` as built in (no training), the same with its
affine intensity map fitted on training pseudo-patients, and ``mean-ct``
(the voxel-wise mean of training pseudo-patients); both fitted on train
seeds 0-15 (quick: 0-1) on the 128^3 grid.

A full run scores about 14 runs x 9 cases, minutes of CPU each; so every
score is kept in the x2ct cache (``<cache>/benchmarks/quality``) under a key
made of the model's weights checksum (or the baseline's definition), the
case, the simulator's settings (its patients: a pseudo-patient's seed names
another CT when they change), the views, fusion and the x2ct version, and cases and baselines are
only built when a score is missing. Retraining one model re-scores that
model only; ``--fresh`` ignores the kept scores.

    python -m x2ct.benchmarks.quality [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from x2ct import __version__, catalog, inference, io, metrics, physics, sampledata
from x2ct.data import simulate
from x2ct.data.protocol import X2CT, resample
from x2ct.image import Volume, XRay, to_canonical
from x2ct.metrics.fidelity import DESCRIPTION as FIDELITY
from x2ct.metrics.fidelity import Embedder, density_coverage

TITLE = "Reconstruction quality: shipped models against baselines"

#: Held-out test pseudo-patients (full run, quick run) and training seeds the baselines are fitted on.
TEST_CASES, QUICK_TEST_CASES = 8, 1
BASELINE_SEEDS, QUICK_BASELINE_SEEDS = 16, 2
#: Side of the input DRRs (the X2CT detector), as ``x2ct demo`` writes them.
DRR_PIXELS = physics.X2CT_GEOMETRY.pixels[0]
#: The issue's goals.
GOAL_MARGIN_DB, GOAL_FUSION_NCC, GOAL_FUSION_LOSS_DB = 2.0, 0.99, 0.5
#: Published numbers (methods.md), LIDC-IDRI test split, two views unless noted: method -> (convention, text).
PUBLISHED = {
    "x2ct-cnn": ("X2CT: PSNR 2D / 3D (dB), SSIM 2D", "27.41 / 22.75, 0.689 (DuoLift authors' retraining, seed 003)"),
    "duolift-cnn": ("X2CT: PSNR 2D / 3D (dB), SSIM 2D", "27.85 / 23.04, 0.727 (seed 003; one view 23.78 PSNR 2D)"),
    "repeat-concat": ("R&C code: PSNR (dB), SSIM", "24.35, 0.527 (seed 000 Table 2)"),
    "code-diffusion": ("R&C code: PSNR (dB), SSIM", "25.05, 0.436 (seed 002 Table 2)"),
    "henzler": ("own: L2, DSSIM", "L2 0.051, DSSIM 0.097 (skulls, one view; seed 004)"),
}
#: Density / coverage on LIDC-IDRI (seed 002 Table 2, the paper's own random encoder): method -> text.
PUBLISHED_FIDELITY = {"code-diffusion": "1.42 / 0.97", "x2ct-gan": "0.87 / 0.88"}


@dataclasses.dataclass
class Case:
    """A ground truth on the 128^3 protocol grid, its lung labels and its frontal and lateral DRRs."""

    name: str
    truth: Volume
    labels: Volume | None
    lung_ids: list[int] | None
    xrays: dict[str, XRay]


def _with_drrs(name: str, truth: Volume, labels: Volume | None, lung_ids) -> Case:
    xrays = {view: physics.drr(truth, view, mode="x2ct", x2ct_size=DRR_PIXELS) for view in ("frontal", "lateral")}
    return Case(name, truth, labels, lung_ids, xrays)


def lung_ids() -> list[int]:
    return metrics.lung_label_ids(sampledata.fetch("chest-ct")["chest-ct-structures.csv"])


def pseudo_case(seed: int) -> Case:
    """A pseudo-patient (its labels carry the template's lung lobe ids)."""
    patient = simulate.pseudo_patient(seed, X2CT)
    return _with_drrs(f"sim-{seed:05d}", patient.ct, patient.labels, lung_ids())


def chest_case() -> Case:
    """The real sample chest CT on the protocol grid, its labels resampled (nearest) onto it."""
    files = sampledata.fetch("chest-ct")
    ct = io.read_ct(files["chest-ct.nii.gz"])
    labels = io.read_ct(files["chest-ct-labels.nii.gz"])
    truth = X2CT.resample(ct)
    grid_labels = resample(labels, X2CT.output_grid(ct), 0.0, interpolator="nearest")
    return _with_drrs(CHEST, truth, grid_labels, lung_ids())


def fitted_baselines(seeds) -> list[inference.LoadedModel]:
    """Back-projection with its affine map fitted, and mean CT, from training pseudo-patients (128^3)."""
    from x2ct.models import baselines

    volumes, views = [], []
    for seed in seeds:
        case = pseudo_case(seed)
        volumes.append(torch.from_numpy(X2CT.normalise(case.truth)[0]))
        views.append(torch.from_numpy(np.stack([_prepared(case.xrays[v]) for v in ("frontal", "lateral")])))
    volumes, views = torch.stack(volumes), torch.stack(views)
    fitted = baselines.build("back-projection", volumes, views, (0.0, 90.0))
    mean = baselines.build("mean-ct", volumes, view_size=X2CT.size)
    return [inference.LoadedModel("back-projection (fitted)", fitted, {"name": "back-projection"}),
            inference.LoadedModel("mean-ct", mean, {"name": "mean-ct"})]


def _prepared(xray: XRay) -> np.ndarray:
    return inference.prepare_view(xray, X2CT.size)[0]


def score(loaded: inference.LoadedModel, case: Case, views: tuple[str, ...], fusion: bool = False) -> dict:
    """One reconstruction of ``case`` from ``views``: all metrics and the re-projection NCC."""
    started = time.perf_counter()
    result = inference.reconstruct([case.xrays[v] for v in views], loaded, device="cpu", fusion=fusion)
    seconds = time.perf_counter() - started
    m = metrics.evaluate_volumes(result.volume, case.truth, labels=case.labels, lung_ids=case.lung_ids)
    size = result.views.shape[-1]
    drrs = [physics.drr(result.volume, angle, mode="x2ct", x2ct_size=size).image for angle in result.angles]
    ncc = metrics.reprojection_consistency(list(result.views), drrs)["ncc"]
    return {"honest_psnr": m["honest"]["psnr_db"], "honest_ssim": m["honest"]["ssim_3d"],
            "mae_hu": m["honest"]["mae_hu"], "x2ct_psnr_3d": m["x2ct"]["psnr_3d_db"],
            "x2ct_psnr_2d": m["x2ct"]["psnr_2d_db"], "x2ct_ssim": m["x2ct"]["ssim_2d"],
            "rc_psnr": m["repeat_concatenate"]["psnr_3d_db"], "rc_ssim": m["repeat_concatenate"]["ssim_2d"],
            "dice": m["lung_dice"]["threshold"], "dice_label": m["lung_dice"].get("label", math.nan),
            "ncc": ncc, "seconds": seconds, **_embeddings(result.volume, case.truth)}


@functools.lru_cache(maxsize=1)
def _embedder() -> Embedder:
    return Embedder()


def _embeddings(volume: Volume, truth: Volume) -> dict:
    """The random-CNN embeddings of the reconstruction and its ground truth (for density/coverage), rounded."""
    return {key: np.round(_embedder()(metrics.normalise_hu(to_canonical(v).array)), 6).tolist()
            for key, v in (("embedding", volume), ("embedding_truth", truth))}


@dataclasses.dataclass
class Run:
    """A row of the table: a model, the views it gets and whether fusion follows."""

    label: str
    loaded: object  # an inference.LoadedModel, or a LazyBaseline
    views: tuple[str, ...]
    fusion: bool = False
    learned: bool = True


def plan(shipped: list[inference.LoadedModel], baselines: list) -> list[Run]:
    """Baselines with one and two views; every shipped model with its views, without and with fusion."""
    both, frontal = ("frontal", "lateral"), ("frontal",)
    builtin = inference.load("back-projection")
    runs = [Run("back-projection (built-in), 1 view", builtin, frontal, learned=False),
            Run("back-projection (built-in), 2 views", builtin, both, learned=False)]
    runs += [Run(f"{b.id}, 2 views" if b.id != "mean-ct" else "mean-ct (ignores the views)", b, both,
                 learned=False) for b in baselines]
    for model in shipped:
        views = catalog.find(model.id).views_required
        name = f"{model.id}, {len(views)} view{'s' if len(views) > 1 else ''}"
        runs += [Run(name, model, views), Run(f"{name} + fusion", model, views, fusion=True)]
    return runs


def shipped_models(quick: bool) -> list[inference.LoadedModel]:
    ids = [e.id for e in catalog.entries() if e.source == "shipped"]
    if quick:  # the cheapest one-view model, or the first shipped model
        one_view = [i for i in ids if catalog.find(i).views_required == ("frontal",)]
        ids = (one_view or ids)[:1]
    return [inference.load(i, "cpu") for i in ids]


class LazyBaseline:
    """Stands in for a fitted baseline: its identity is its definition; it is fitted on first use."""

    def __init__(self, index: int, seeds) -> None:
        self.index, self.seeds = index, tuple(seeds)
        self.id = ("back-projection (fitted)", "mean-ct")[index]
        self.card = {"name": ("back-projection", "mean-ct")[index]}

    @property
    def identity(self) -> str:
        return f"{self.id} on train seeds {self.seeds[0]}-{self.seeds[-1]}"

    def get(self) -> inference.LoadedModel:
        return _fitted(self.seeds)[self.index]


@functools.lru_cache(maxsize=1)
def _fitted(seeds: tuple) -> list[inference.LoadedModel]:
    return fitted_baselines(seeds)


def _identity(loaded) -> str:
    """What a score depends on besides the case: the weights' checksum, or the baseline's definition."""
    return getattr(loaded, "identity", None) or f"{loaded.id} sha256 {loaded.card.get('sha256', 'built-in')}"


def cache_folder() -> Path:
    return sampledata.cache_dir() / "benchmarks" / "quality"


def cache_key(run: "Run", case_name: str) -> str:
    """What a kept score depends on: the model or baseline, the case and the simulator that makes it, the
    views, fusion and the x2ct version."""
    return json.dumps([_identity(run.loaded), case_name, repr(simulate.DEFAULT_SETTINGS), run.views, run.fusion,
                       __version__])


def cached_score(run: "Run", case_name: str, make_case, fresh: bool = False) -> dict:
    """``score`` of ``run`` on the named case, from the cache when the same model scored it before.

    The result carries ``kept``: whether it came from the cache.
    """
    key = cache_key(run, case_name)
    path = cache_folder() / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
    if path.is_file() and not fresh:
        return {**json.loads(path.read_text())["score"], "kept": True}
    loaded = run.loaded.get() if isinstance(run.loaded, LazyBaseline) else run.loaded
    result = score(loaded, make_case(case_name), run.views, run.fusion)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"key": key, "score": result}, allow_nan=True))
    partial.replace(path)
    return {**result, "kept": False}


@functools.lru_cache(maxsize=None)
def _case(name: str) -> Case:
    return chest_case() if name == CHEST else pseudo_case(int(name.removeprefix("sim-")))


CHEST = "chest-ct (real)"


def measure(quick: bool = False, fresh: bool = False, log=lambda text: None) -> dict:
    """{"rows": {run label: {case name: scores}}, "cases": [...], "runs": [...]} for the tables."""
    torch.set_num_threads(2)
    names = [f"sim-{s:05d}" for s in simulate.TEST_SEEDS[: QUICK_TEST_CASES if quick else TEST_CASES]]
    names += [] if quick else [CHEST]
    seeds = simulate.TRAIN_SEEDS[: QUICK_BASELINE_SEEDS if quick else BASELINE_SEEDS]
    runs = plan(shipped_models(quick), [LazyBaseline(0, seeds), LazyBaseline(1, seeds)])
    rows: dict[str, dict] = {}
    for run in runs:
        log(f"quality: {run.label}")
        rows[run.label] = {name: cached_score(run, name, _case, fresh) for name in names}
    return {"rows": rows, "cases": names, "runs": runs}


def _mean(values) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def _f(value, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def summarise(result: dict) -> dict:
    """Per run: the means over the pseudo-patients and the real-CT scores."""
    out = {}
    for label, by_case in result["rows"].items():
        synthetic = [s for name, s in by_case.items() if name.startswith("sim-")]
        real = next((s for name, s in by_case.items() if not name.startswith("sim-")), None)
        out[label] = {"mean": {key: _mean([s[key] for s in synthetic]) for key in synthetic[0]
                               if key != "kept" and not key.startswith("embedding")},
                      "real": real,
                      "psnr_sd": statistics.pstdev([s["honest_psnr"] for s in synthetic]),
                      "fidelity": density_coverage(np.array([s["embedding_truth"] for s in synthetic]),
                                                   np.array([s["embedding"] for s in synthetic]))
                      if all("embedding" in s for s in synthetic) else None}
    return out


def goals(result: dict, summary: dict) -> list[str]:
    """The issue's goals, each checked on the held-out pseudo-patients' means (honest PSNR)."""
    runs = {run.label: run for run in result["runs"]}
    honest = {label: s["mean"]["honest_psnr"] for label, s in summary.items()}
    floor_labels = [label for label, run in runs.items() if not run.learned and len(run.views) == 2]
    floor = max(honest[label] for label in floor_labels)
    lines = [f"- Best baseline (held-out mean): {_f(floor)} dB honest PSNR ({max(floor_labels, key=honest.get)})."]
    for label, run in runs.items():
        if run.learned and not run.fusion:
            margin = honest[label] - floor
            verdict = "met" if margin >= GOAL_MARGIN_DB else "NOT met"
            lines.append(f"- {label}: {_f(honest[label])} dB, {margin:+.2f} dB against the best baseline: goal "
                         f"(>= +{GOAL_MARGIN_DB:g} dB) {verdict}.")
    one = [label for label, run in runs.items() if run.learned and not run.fusion and len(run.views) == 1]
    two = [label for label, run in runs.items() if run.learned and not run.fusion and len(run.views) == 2]
    if one and two:
        best_one, best_two = max(one, key=honest.get), max(two, key=honest.get)
        verdict = "met" if honest[best_two] > honest[best_one] else "NOT met"
        lines.append(f"- Two views beat one: best two-view model {best_two} {_f(honest[best_two])} dB against "
                     f"best one-view model {best_one} {_f(honest[best_one])} dB: {verdict} (different networks; "
                     "back-projection 1 vs 2 views: "
                     f"{_f(honest.get('back-projection (built-in), 1 view'))} vs "
                     f"{_f(honest.get('back-projection (built-in), 2 views'))} dB).")
    lines += same_network_lines([runs[label] for label in one + two], honest)
    for label, run in runs.items():
        if run.fusion:
            plain = label.removesuffix(" + fusion")
            ncc, loss = summary[label]["mean"]["ncc"], honest[plain] - honest[label]
            verdict = "met" if ncc > GOAL_FUSION_NCC and loss <= GOAL_FUSION_LOSS_DB else "NOT met"
            lines.append(f"- Fusion, {plain}: re-projection NCC {_f(summary[plain]['mean']['ncc'], 4)} -> "
                         f"{_f(ncc, 4)}, PSNR change {-loss:+.2f} dB: goal (NCC > {GOAL_FUSION_NCC}, loss <= "
                         f"{GOAL_FUSION_LOSS_DB} dB) {verdict}.")
    return lines


def same_network_lines(runs: list[Run], honest: dict) -> list[str]:
    """For each network shipped both as a one-view and a two-view model: do two views beat one?"""
    by_network: dict[str, dict[int, list[str]]] = {}
    for run in runs:
        by_network.setdefault(run.loaded.card["name"], {}).setdefault(len(run.views), []).append(run.label)
    lines = []
    for network, counts in sorted(by_network.items()):
        if 1 in counts and 2 in counts:
            one, two = max(counts[1], key=honest.get), max(counts[2], key=honest.get)
            verdict = "met" if honest[two] > honest[one] else "NOT met"
            lines.append(f"- Two views beat one, same network ({network}): {two} {_f(honest[two])} dB against "
                         f"{one} {_f(honest[one])} dB ({honest[two] - honest[one]:+.2f} dB): {verdict}.")
    return lines


def table(summary: dict, key: str) -> list[str]:
    """Markdown rows for the held-out means (``key`` 'mean') or the real chest CT ('real')."""
    header = ("| run | honest PSNR (dB) | honest SSIM 3D | MAE (HU) | X2CT PSNR 3D / 2D (dB) | X2CT SSIM 2D "
              "| R&C PSNR (dB) | R&C SSIM | lung Dice (thr. / label) | re-proj. NCC | time (s) |"
              + (" density / coverage |" if key == "mean" else ""))
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for label, s in summary.items():
        m = s[key]
        if m is None:
            continue
        psnr = _f(m["honest_psnr"]) + (f" ± {_f(s['psnr_sd'])}" if key == "mean" else "")
        rows.append(f"| {label} | {psnr} | {_f(m['honest_ssim'], 3)} | {_f(m['mae_hu'], 0)} | "
                    f"{_f(m['x2ct_psnr_3d'])} / {_f(m['x2ct_psnr_2d'])} | {_f(m['x2ct_ssim'], 3)} | "
                    f"{_f(m['rc_psnr'])} | {_f(m['rc_ssim'], 3)} | {_f(m['dice'], 3)} / {_f(m['dice_label'], 3)} | "
                    f"{_f(m['ncc'], 4)} | {_f(m['seconds'], 1)} |" + (_fidelity(s["fidelity"]) if key == "mean" else ""))
    return rows


def _fidelity(fidelity: dict | None) -> str:
    if fidelity is None:
        return " n/a (scores kept from before; --fresh) |"
    return f" {_f(fidelity['density'])} / {_f(fidelity['coverage'])} |"


def published(result: dict, summary: dict) -> list[str]:
    """The papers' numbers and ours in the same convention (held-out pseudo-patients)."""
    rows = ["| our model | published (LIDC-IDRI, 2 views unless noted) | ours, same convention | convention |",
            "|---|---|---|---|"]
    for run in result["runs"]:
        name = run.loaded.card.get("name")
        if run.learned and not run.fusion and name in PUBLISHED:
            convention, text = PUBLISHED[name]
            m = summary[run.label]["mean"]
            ours = {"X2CT": f"{_f(m['x2ct_psnr_2d'])} / {_f(m['x2ct_psnr_3d'])}, {_f(m['x2ct_ssim'], 3)}",
                    "R&C ": f"{_f(m['rc_psnr'])}, {_f(m['rc_ssim'], 3)}"}.get(convention[:4], "not computed")
            rows.append(f"| {run.label} | {text} | {ours} | {convention} |")
        if run.learned and not run.fusion and name in PUBLISHED_FIDELITY:
            rows.append(f"| {run.label} | {PUBLISHED_FIDELITY[name]} (seed 002 Table 2) |"
                        f"{_fidelity(summary[run.label]['fidelity'])} density / coverage, random 3D CNN embeddings "
                        "(each its own encoder) |")
    return rows


def run(quick: bool = False, fresh: bool = False) -> str:
    started = time.perf_counter()
    result = measure(quick, fresh)
    summary = summarise(result)
    n = sum(1 for name in result["cases"] if name.startswith("sim-"))
    scores = [s for by_case in result["rows"].values() for s in by_case.values()]
    kept = sum(1 for s in scores if s.get("kept"))
    made = sum(s["seconds"] for s in scores)
    lines = [f"Command: `x2ct benchmark --only quality{' --quick' if quick else ''}` "
             f"({time.perf_counter() - started:.0f} s this run, 2 threads; {kept} of {len(scores)} scores kept "
             "from earlier runs of the same weights, see the module docstring; the reconstructions alone took "
             f"{made:.0f} s when made, scoring and DRRs several times that). Ground truths on the X2CT protocol grid "
             "(128^3, 2.5 mm); inputs are their X2CT-mode DRRs (320^2 detector) prepared as user X-rays. "
             f"Held-out cases: {n} test pseudo-patients (seeds {simulate.TEST_SEEDS[0]}-"
             f"{simulate.TEST_SEEDS[0] + n - 1}); baselines fitted on train seeds 0-"
             f"{(QUICK_BASELINE_SEEDS if quick else BASELINE_SEEDS) - 1}. Shipped models were trained at 64^3 "
             "and are resampled (trilinear) to 128^3; fusion runs on the model's 64^3 grid first.",
             "", "### Goals (issue 7), held-out pseudo-patients", "", *goals(result, summary), "",
             f"### Held-out test pseudo-patients (mean over {n}; honest PSNR ± population SD)", "",
             *table(summary, "mean")]
    if any(s["real"] for s in summary.values()):
        lines += ["", "### The real sample chest CT (its own DRRs as input)", "",
                  "Every pseudo-patient is a deformation of this CT, so this is in-distribution by construction, "
                  "not an independent test.", "", *table(summary, "real")]
    lines += ["", "### Published numbers beside ours", "",
              "Not comparable as a leaderboard: the papers train on ~900 LIDC-IDRI patients for 10^4-10^5 steps "
              "on GPUs at 128^3 (R&C at 64^3), we train small presets on pseudo-patients of one chest CT for "
              "10^2-10^3 steps on a 2-core CPU at 64^3; and each paper uses its own metric convention (our "
              "table gives the X2CT and R&C conventions for that reason).", "", *published(result, summary), "",
              "Conventions:", *[f"- **{k}**: {v}" for k, v in metrics.CONVENTIONS.items()],
              f"- **density / coverage**: {FIDELITY}; over the held-out cases, predictions against their ground "
              "truths (ideal about 1 / 1).",
              "- **re-proj. NCC**: Pearson correlation of each prepared input view with the X2CT-mode DRR of the "
              "reconstruction at that angle, mean over views.",
              "- **time**: wall time of the reconstruction (model on CPU, fusion included) when its score was made, "
              "on a machine shared with other jobs: indicative only (see the model inference section for timings)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="ignore the kept scores and score everything again")
    args = parser.parse_args(argv)
    print(run(args.quick, args.fresh))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
