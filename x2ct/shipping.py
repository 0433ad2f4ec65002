"""Retrain and export the models shipped in ``Resources/Models`` (one reproducible command per model).

Every shipped model is trained from scratch on pseudo-patients of the two
real chest CTs (``x2ct.data.simulate``): training seeds 0-199 (or the config's
``train_count``), the first 4
validation seeds (10000-) to pick the best checkpoint; the test seeds
(20000-) are never seen and score the model for its card. The config of
each model is ``Resources/Models/<id>/training.yaml`` (an ordinary
``x2ct train`` config); training runs through ``x2ct.training.train`` with
the simulated CTs kept in memory after their first use, so the simulator
runs once per case (``x2ct train <id>/training.yaml`` trains on the same
cases, only slower). On one CPU thread (``OMP_NUM_THREADS=1``)::

    python -m x2ct.shipping train henzler-1v      # -> output/ship/henzler-1v/
    python -m x2ct.shipping export henzler-1v     # -> Resources/Models/henzler-1v/ + Models.json
    python -m x2ct.shipping train ID [ID ...]     # several in turn (ids: see MODELS)
    python -m x2ct.shipping train ID --resume     # continue a stopped run; its time adds up on the card

``export`` takes the best validation checkpoint, stores float16 weights
when they score within ``HALF_TOLERANCE_DB`` of float32 on the validation
cases (else float32), scores it on held-out test seeds at the 128^3
protocol grid (``x2ct.benchmarks.quality``) and writes the model card and
its catalog entry.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from x2ct import catalog
from x2ct.data import datasets, simulate
from x2ct.data.protocol import get_protocol
from x2ct.errors import InputError, X2CTError
from x2ct.image import Volume

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "output" / "ship"
#: What ``train`` records in the run folder: training seconds over all sessions, threads, summary.
TRAIN_RECORD = "ship-train.json"
#: Largest float16 PSNR loss (dB, honest convention, validation cases) accepted for halving the weights.
HALF_TOLERANCE_DB = 0.05
#: Size limits of the shipped weights (a lent accelerator machine hands back files of at most 16 MB).
MAX_FILE_BYTES = 16 * 10**6
MAX_TOTAL_BYTES = 100 * 10**6
#: Protocol grid side every shipped model's output is resampled to.
OUTPUT_SIZE = 128
HARDWARE = "2-core CPU (shared with other jobs), no GPU; {threads} thread(s) per training process"
LICENCE = "Apache-2.0 (weights trained here from the x2ct sample data)"
INTENDED_USE = "Research use only, not for diagnosis. Demonstration of X-ray-to-CT reconstruction on the sample data."


def training_data(config) -> str:
    """The card's line on what the model was trained on (the simulator draws from both sample CTs)."""
    films = config.augment.film_p
    return ("Pseudo-patients of the two real chest CTs shipped as sample data (chest-ct, chest-ct-2; "
            "x2ct.data.simulate: habitus, elastic deformation, lung inflation, nodules, contrast, noise): train "
            f"seeds 0-{config.data.train_count - 1}, validation seeds 10000-{10000 + config.data.validation_count - 1}; "
            "test seeds 20000- held out. Views: X2CT-protocol DRRs"
            + (f", each film-simulated with probability {films:g} (x2ct.data.film)." if films else "."))


#: id -> (description, number of views it is meant for).
MODELS = {
    "henzler-1v": ("Henzler et al. single-image tomography (small, 64^3), one frontal view, with instance norm in "
                   "place of the paper's batch norm (docs/models.md). The paper follows it with Beer-Lambert fusion "
                   "(--fusion): re-projection NCC near 0.999, lung Dice lower (docs/benchmarks/quality.md).", 1),
    "x2ct-cnn-2v": ("X2CT-CNN (X2CT-GAN generator without the critic; small, 64^3), frontal + lateral views.", 2),
    "x2ct-cnn-1v": ("X2CT-CNN's single-view network (small, 64^3), one frontal view: x2ct-cnn-2v's network and "
                    "schedule given one view.", 1),
    "duolift-cnn-2v": ("DuoLift-CNN (feature + image lifting, U-Net++; small, 64^3), frontal + lateral views.", 2),
    "repeat-concat-2v": ("Repeat and Concatenate (SwinUNETR on the repeated views; small, 128^2 -> 64^3), frontal + "
                         "lateral views, fine-tuned with a voxel MSE term beside the paper's neural optimal transport "
                         "(a departure; docs/models.md). NOT FOR USE ON A PATIENT: about 2.1 dB above the mean CT on "
                         "held-out pseudo-patients, but a washed-out chest on the sample CT's DRRs (too little soft "
                         "tissue; docs/models.md). Use x2ct-cnn-2v for a first look.", 2),
    "code-diffusion-2v": ("Conditional VQ code diffusion (small, 64^3), frontal + lateral views, its CT decoder "
                          "fine-tuned alone on the CTs' codes, then on the codes its prior draws (a departure; "
                          "docs/models.md). NOT FOR USE ON A PATIENT: about 1.5 dB above the mean CT on held-out "
                          "pseudo-patients, with well-placed lungs (lung Dice 0.78), but a smooth chest whose soft "
                          "tissue is flat and below its true density (docs/models.md); its prior has had about 6,000 steps (the paper: 100k). Use x2ct-cnn-2v "
                          "for a first look.", 2),
}


class MemoisedSimulation(datasets.SimulatedDataset):
    """Simulated pseudo-patients made once each and then kept in memory (64^3: 1 MB a case)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._made: dict[str, Volume] = {}

    def load_hu(self, case):
        if case.id not in self._made:
            self._made[case.id] = super().load_hu(case)
        return self._made[case.id]


def config_path(model_id: str) -> Path:
    if model_id not in MODELS:
        raise InputError(f"Unknown shipped model {model_id!r}; choose one of {', '.join(MODELS)}.")
    return catalog.SHIPPED_FOLDER / model_id / "training.yaml"


def training_sets(config, spec) -> tuple:
    """(train, validation) datasets of ``config.data`` (kind simulated) at the model's sizes, memoised."""
    data = config.data
    if data.kind != "simulated":
        raise InputError(f"Shipped models train on simulated pseudo-patients; {data.kind} is not supported here.")
    protocol = get_protocol(data.protocol, spec.volume_size)
    views = datasets.default_views(spec.view_size, data.angles)
    return (MemoisedSimulation("train", count=data.train_count, protocol=protocol, views=views),
            MemoisedSimulation("validation", count=data.validation_count, protocol=protocol, views=views))


def config_and_spec(model_id: str) -> tuple:
    """A shipped model's training config and its network's spec (sizes)."""
    from x2ct.models import build
    from x2ct.training import load

    config = load(config_path(model_id))
    return config, build(config.method, config.preset, **config.model).spec


def train(model_id: str, out: Path | None = None, resume: bool = False) -> dict:
    """Train one shipped model from scratch into ``output/ship/<id>`` (JSON progress lines on stdout)."""
    from x2ct.training import train as run

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    config, spec = config_and_spec(model_id)
    out = Path(out or RUNS / model_id)
    before = training_seconds(out) if resume else 0.0  # read before the trainer rewrites config.yaml
    started = time.time()
    summary = run(config, out, resume=resume, progress="json", datasets=training_sets(config, spec))
    record = {"seconds": before + time.time() - started, "threads": torch.get_num_threads(), "summary": summary}
    (out / TRAIN_RECORD).write_text(json.dumps(record, indent=2, default=str))
    return record


def training_seconds(out: Path) -> float:
    """Training time of the run in ``out`` so far, over every session (resumed runs add up)."""
    from x2ct.training import checkpoint

    record = out / TRAIN_RECORD
    if record.is_file():
        return float(json.loads(record.read_text())["seconds"])
    pointer = checkpoint.read_pointer(out, checkpoint.LATEST)
    if pointer is None:
        return 0.0
    # An interrupted first session left no record: from the config it wrote to its last checkpoint.
    return (out / pointer["folder"]).stat().st_mtime - (out / "config.yaml").stat().st_mtime


#: Test pseudo-patients scored for each model card (the quality benchmark uses more).
CARD_TEST_CASES = 4


def limitations(config) -> list[str]:
    """The card's limitations for a model trained with ``config``."""
    films = ("real radiographs only as simulated films (x2ct.data.film)" if config.augment.film_p else
             "real radiographs")
    return [
        "Trained on deformations of TWO real chest CTs: it has not seen other patients, scanners, pathologies, "
        f"children, implants, or {films}; on real X-rays expect the output to look like those CTs.",
        "Trained for a few thousand steps on a shared 2-core CPU: far from converged.",
        "Trained and run at 64^3 (5 mm voxels); the output is resampled (trilinear) to the 128^3 protocol grid "
        "(2.5 mm), so nothing finer than about 5 mm is reconstructed.",
        "Inputs must follow the X2CT view protocol (PA frontal, left lateral, 500 mm detector field at the X2CT "
        "magnification); films are framed to it by x2ct.io.prepare (docs/real-radiographs.md).",
    ]


def _validation_psnr(model, validation) -> float:
    """Mean honest PSNR (dB) of ``model`` on the validation cases, on its own grid and protocol."""
    from x2ct.metrics import evaluate

    values = []
    with torch.no_grad():
        for index in range(len(validation)):
            item = validation[index]
            pred = model(item["views"][None], item["angles"][None])[0, 0].numpy()
            values.append(evaluate(pred, item["ct"][0].numpy(), hu_range=tuple(item["hu_range"].tolist()))
                          ["honest"]["psnr_db"])
    return float(np.mean(values))


def _halved(model):
    """A copy of ``model`` whose floating weights went through float16, as the shipped file stores them.

    Values beyond the float16 range are clipped to it first (in the runs here only unused VQ codebook
    entries grew that large; the validation check in ``export`` shows whether clipping changed anything).
    """
    import copy

    copied = copy.deepcopy(model)
    top = torch.finfo(torch.float16).max
    with torch.no_grad():
        for tensor in list(copied.parameters()) + list(copied.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.clamp(-top, top).half().float())
    return copied


def _out_of_half_range(model) -> list[str]:
    top = torch.finfo(torch.float16).max
    return [name for name, t in model.state_dict().items() if t.is_floating_point() and t.abs().max() > top]


def test_scores(loaded, views: tuple[str, ...], fusion: bool, count: int = CARD_TEST_CASES) -> dict:
    """Mean scores over the first ``count`` test pseudo-patients at the 128^3 protocol grid."""
    from x2ct.benchmarks import quality

    rows = [quality.score(loaded, quality.pseudo_case(seed), views, fusion) for seed in simulate.TEST_SEEDS[:count]]
    return {key: round(float(np.nanmean([r[key] for r in rows])), 4) for key in rows[0] if key != "seconds"}


def export(model_id: str) -> dict:
    """Best validation checkpoint of ``output/ship/<id>`` -> ``Resources/Models/<id>`` + its catalog entry."""
    from x2ct import inference
    from x2ct.modelfile import load_model, save_model
    from x2ct.training import checkpoint, load

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    out = RUNS / model_id
    config = load(config_path(model_id))
    # Code diffusion's stage-1 checkpoints can score well with an untrained prior: ship its last checkpoint.
    first = checkpoint.LATEST if config.train.stage1_steps else checkpoint.BEST
    pointer = checkpoint.read_pointer(out, first) or checkpoint.read_pointer(out, checkpoint.LATEST)
    if pointer is None:
        raise InputError(f"No checkpoint in {out}; run `python -m x2ct.shipping train {model_id}` first.")
    folder = out / pointer["folder"]
    model, run_card = load_model(folder)
    _, validation = training_sets(config, model.spec)
    clipped = _out_of_half_range(model)
    full, half = _validation_psnr(model, validation), _validation_psnr(_halved(model), validation)
    use_half = full - half <= HALF_TOLERANCE_DB
    record = json.loads((out / TRAIN_RECORD).read_text()) if (out / TRAIN_RECORD).is_file() else {}
    threads = record.get("threads", 1)
    train_command = record.get("command", f"OMP_NUM_THREADS={threads} python -m x2ct.shipping train {model_id}")
    description, views = MODELS[model_id]
    view_names = ("frontal", "lateral")[:views]
    fusion = config.method == "henzler"
    card = {
        "description": description,
        "training_data": training_data(config),
        "training": {
            "config": config.to_dict(),
            "config_file": f"Resources/Models/{model_id}/training.yaml",
            "command": f"{train_command} && python -m x2ct.shipping export {model_id}",
            "steps": int(pointer["step"]),
            "steps_planned": config.train.steps,
            "chosen": "best checkpoint by honest PSNR on the validation cases" if "metric" in pointer
                      else "last checkpoint",
            "seconds": round(training_seconds(out)),
            "hardware": record.get("hardware", HARDWARE.format(threads=threads)),
            "parameters": sum(p.numel() for p in model.parameters()),
            **({"init_from": run_card["training"]["init_from"]} if "init_from" in run_card.get("training", {})
               else {}),
        },
        "output_size": OUTPUT_SIZE,
        "output_note": f"trained and run at {model.spec.volume_size}^3; the output is resampled (trilinear) to "
                       f"the {OUTPUT_SIZE}^3 X2CT protocol grid",
        "weights_precision": {"stored": "float16" if use_half else "float32",
                              "validation_honest_psnr_db": {"float32": round(full, 4), "float16": round(half, 4)},
                              "clipped_to_float16_range": clipped if use_half else [],
                              "rule": f"float16 when it loses at most {HALF_TOLERANCE_DB} dB"},
        "fusion": fusion,
        "views": list(view_names),
        "limitations": limitations(config),
        "licence": LICENCE,
        "intended_use": INTENDED_USE,
    }
    shipped = model if not use_half else _halved(model)
    loaded = inference.LoadedModel(model_id, shipped.eval(), card)
    test = {"cases": f"test seeds {simulate.TEST_SEEDS[0]}-{simulate.TEST_SEEDS[0] + CARD_TEST_CASES - 1}, "
                     f"{OUTPUT_SIZE}^3 protocol grid, X2CT-mode DRR inputs",
            "plain": test_scores(loaded, view_names, False)}
    if fusion:
        test["fusion"] = test_scores(loaded, view_names, True)
    card["metrics"] = {"test": test, "validation_honest_psnr_db_own_grid": round(full, 4)}
    target = catalog.SHIPPED_FOLDER / model_id
    save_model(shipped, target, card, half=use_half)
    _check_sizes()
    return _catalog_entry(model_id, card, target)


def _check_sizes() -> None:
    files = [p for p in catalog.SHIPPED_FOLDER.glob("*/model.safetensors")]
    for path in files:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise X2CTError(f"{path} is {path.stat().st_size / 1e6:.1f} MB, over the {MAX_FILE_BYTES / 1e6:.0f} MB limit.")
    total = sum(p.stat().st_size for p in files)
    if total > MAX_TOTAL_BYTES:
        raise X2CTError(f"The shipped weights total {total / 1e6:.1f} MB, over {MAX_TOTAL_BYTES / 1e6:.0f} MB.")


def _catalog_entry(model_id: str, card: dict, target: Path) -> dict:
    """Add or replace the model's entry in Models.json (validated against the schema before writing)."""
    from x2ct.modelfile import read_card

    written = read_card(target)
    test = card["metrics"]["test"]["plain"]
    entry = {"id": model_id, "folder": model_id, "sha256": written["sha256"], "description": card["description"],
             "views_required": card["views"], "training_data": card["training_data"],
             "metrics": {"test_pseudo_patients": card["metrics"]["test"]["cases"],
                         "honest_psnr_db": test["honest_psnr"], "honest_ssim_3d": test["honest_ssim"],
                         "mae_hu": test["mae_hu"], "x2ct_psnr_3d_db": test["x2ct_psnr_3d"],
                         "x2ct_psnr_2d_db": test["x2ct_psnr_2d"], "x2ct_ssim_2d": test["x2ct_ssim"],
                         "lung_dice": test["dice"], "reprojection_ncc": test["ncc"],
                         "training_steps": card["training"]["steps"]},
             "licence": card["licence"], "intended_use": card["intended_use"]}
    manifest = json.loads(catalog.MANIFEST.read_text())
    manifest["models"] = [m for m in manifest["models"] if m["id"] != model_id] + [entry]
    manifest["models"].sort(key=lambda m: list(MODELS).index(m["id"]) if m["id"] in MODELS else len(MODELS))
    problems = catalog.validate(manifest, json.loads(catalog.SCHEMA.read_text()))
    if problems:
        raise X2CTError(f"The new catalog entry is invalid: {problems[0]}.")
    partial = catalog.MANIFEST.with_name(".Models.json.partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, catalog.MANIFEST)
    return entry


def model_table() -> str:
    """Markdown table of the shipped models from their cards (for docs/models.md)."""
    from x2ct.modelfile import read_card

    rows = ["| id | method | views | parameters | weights (MB, dtype) | steps (planned) | training time (min) "
            "| test honest PSNR (dB) | test X2CT PSNR 3D / 2D (dB) | test MAE (HU) | lung Dice | re-proj. NCC |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for entry in catalog.read_manifest()["models"]:
        folder = catalog.SHIPPED_FOLDER / entry["folder"]
        card = read_card(folder)
        t, m = card["training"], card["metrics"]["test"]["plain"]
        size = (folder / card["weights"]).stat().st_size / 1e6
        rows.append(f"| {entry['id']} | {card['name']} ({card['preset']}) | {'+'.join(card['views'])} | "
                    f"{t['parameters'] / 1e6:.2f}M | {size:.1f}, {card['weights_dtype']} | {t['steps']} "
                    f"({t['steps_planned']}) | {t['seconds'] / 60:.0f} | {m['honest_psnr']:.2f} | "
                    f"{m['x2ct_psnr_3d']:.2f} / {m['x2ct_psnr_2d']:.2f} | {m['mae_hu']:.0f} | {m['dice']:.3f} | "
                    f"{m['ncc']:.4f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x2ct.shipping", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("train", "export", "table"))
    parser.add_argument("model_ids", nargs="*", metavar="ID",
                        help=f"one or more of {', '.join(MODELS)}")
    parser.add_argument("--resume", action="store_true", help="train: continue the run in output/ship/<id>")
    args = parser.parse_args(argv)
    if args.action == "table":
        print(model_table())
        return 0
    if not args.model_ids:
        parser.error("give at least one model id")
    try:
        for model_id in args.model_ids:
            result = train(model_id, resume=args.resume) if args.action == "train" else export(model_id)
            print(json.dumps(result, default=str), flush=True)
    except X2CTError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
