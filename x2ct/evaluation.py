"""Score a trained model on a dataset: ``x2ct evaluate --model ID --data ...`` and the trainer's evaluation.

Each case is reconstructed from the dataset's own views (made at the model's
view size and angles, as in training) and scored on the model's output grid
against the case's CT under the model's intensity protocol, with
``x2ct.metrics.evaluate`` (X2CT and honest conventions). No HU round trip:
the numbers are those the trainer reports for its validation cases. Over the
whole set, density and coverage of the predictions against the cases' CTs
(``x2ct.metrics.fidelity``, the code-diffusion paper's fidelity metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from x2ct.errors import InputError
from x2ct.metrics import evaluate as score
from x2ct.metrics.fidelity import DESCRIPTION as FIDELITY
from x2ct.metrics.fidelity import Embedder, density_coverage


def case_row(prediction: torch.Tensor, item: dict) -> dict[str, float]:
    """The flat metrics ('x2ct.psnr_3d_db', 'honest.ssim_3d', ...) of one prediction (D, H, W) in [0, 1]."""
    result = score(prediction.float().cpu().numpy(), item["ct"][0].numpy(), hu_range=tuple(item["hu_range"].tolist()))
    return {f"{section}.{key}": float(value) for section in ("x2ct", "honest")
            for key, value in result[section].items() if isinstance(value, (int, float))}


def mean_row(rows: list[dict[str, float]]) -> dict[str, float]:
    """Metric-wise mean over cases (NaN where a metric is undefined for every case)."""
    if not rows:
        return {}
    return {key: float(np.nanmean([row[key] for row in rows])) if any(np.isfinite(row[key]) for row in rows)
            else float("nan") for key in rows[0]}


def dataset_for(spec, kind: str, source: str | Path | None = None, split: str = "test", count: int | None = None):
    """The cases of ``kind`` (and ``source``) in ``split``, with views and CTs at the model's sizes."""
    from x2ct.data import datasets
    from x2ct.data.protocol import get_protocol
    from x2ct.datasources import make_dataset

    protocol = get_protocol(spec.protocol, spec.volume_size)
    views = datasets.default_views(spec.view_size, spec.default_angles)
    return make_dataset(kind, source, split, protocol, views, spec.view_size, count)

def evaluate_model(model, dataset, count: int | None = None, device: str = "cpu",
                   progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Reconstruct and score the first ``count`` cases (all by default): {model, cases: [rows], mean}.

    ``model`` is a catalog id, a model folder or an ``inference.LoadedModel``.
    ``progress(done, total, case_id)`` is called after each case.
    """
    from x2ct import inference

    loaded = model if isinstance(model, inference.LoadedModel) else inference.load(model, device)
    network = loaded.model.to(device).eval()
    total = len(dataset) if count is None else min(int(count), len(dataset))
    if total < 1:
        raise InputError("The dataset has no case in this split; choose another --split or more data.")
    rows, real, fake = [], [], []
    embed = Embedder(device=device)
    for index in range(total):
        item = dataset[index]
        if "views" not in item:
            raise InputError(f"Case {item['id']} has no X-ray views; this dataset cannot be used to evaluate.")
        with torch.no_grad():
            prediction = network(item["views"][None].to(device), item["angles"][None].to(device))
        rows.append({"id": item["id"], **case_row(prediction[0, 0], item)})
        real.append(embed(item["ct"][0]))
        fake.append(embed(prediction[0, 0]))
        if progress is not None:
            progress(index + 1, total, item["id"])
    metrics = [{key: value for key, value in row.items() if key != "id"} for row in rows]
    fidelity = {**density_coverage(np.stack(real), np.stack(fake)), "about": FIDELITY}
    return {"model": loaded.id, "cases": rows, "mean": mean_row(metrics), "fidelity": fidelity}
