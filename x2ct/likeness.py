"""Input likeness: how far a prepared view lies from the views the models were trained on.

A network trained on DRRs returns a confident-looking volume for anything,
a hand or a photograph included. Every reconstruction therefore scores each
prepared view (``x2ct.io.prepare``) against the training DRRs and warns
above a threshold.

Features, after the view's intensities are matched to the training DRRs
(``x2ct.io.prepare.match_intensity``; a film already is, a DRR is made
comparable): the view shrunk to ``THUMBNAIL`` x ``THUMBNAIL`` pixels (area
average), which keeps the chest's layout (dark lung fields either side of a
bright mediastinum, shoulders, diaphragm), and three scalars: the share of
the variance in fine detail (the view minus a 2-pixel blur: noise and
photographs have much more), the contrast of the thumbnail (a skull or limb
has more, a slice or noise less), its mean horizontal step, and its layout
contrast: the mean of the pixels where the mean training view is darkest (the
lungs) minus where it is brightest (mediastinum, abdomen). Model, fitted
on training DRRs of pseudo-patients of both real CTs, clean and through the
film simulation (``x2ct.data.film``), each prepared as a real film is: a
principal-component model of the thumbnails and the mean and standard
deviation of the scalars. Score: the root mean square of the whitened
coordinates on the ``COMPONENTS`` axes (their mean square), the residual off
them relative to the training residual, and the scalars' z-scores; about 1
for a typical training view. The threshold is chosen on held-out
pseudo-patients (validation seeds): ``MARGIN`` times their ``PERCENTILE``-th
percentile. The numbers live in ``x2ct/io/drr_reference.json`` (per view
angle) and are remade with ``python -m x2ct.io.prepare_reference``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Side of the views the model was fitted on (the shipped models' training views); others are prepared again.
VIEW_PIXELS = 128
#: Side of the feature thumbnail.
THUMBNAIL = 16
#: Principal components kept.
COMPONENTS = 12
#: Threshold = MARGIN x the PERCENTILE-th percentile of held-out scores.
MARGIN, PERCENTILE = 1.25, 99.0


@dataclasses.dataclass(frozen=True)
class Likeness:
    """A view's score, the threshold it is compared with, and whether it is like the training inputs."""

    score: float
    threshold: float
    angle: float

    @property
    def like_training(self) -> bool:
        return self.score <= self.threshold

    def as_dict(self) -> dict:
        return {"score": round(self.score, 3), "threshold": round(self.threshold, 3), "angle": self.angle,
                "like_training": self.like_training}

    def note(self, name: str) -> str:
        if self.like_training:
            return (f"{name}: input-likeness score {self.score:.2f} (threshold {self.threshold:.2f}): like the "
                    "training views.")
        return (f"WARNING {name}: input-likeness score {self.score:.2f} is above the threshold "
                f"{self.threshold:.2f}: this view is unlike the chest views the model was trained on (another "
                "body part, a photograph, a CT slice, or an unusual film); the reconstruction is unreliable.")


def features(view: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(thumbnail (THUMBNAIL^2,), scalars (3,)) of a prepared (S, S) view at ``angle`` degrees."""
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    from x2ct.io.prepare import match_intensity

    view = match_intensity(np.asarray(view, dtype=np.float64), angle)
    tensor = torch.from_numpy(np.ascontiguousarray(view, dtype=np.float32))[None, None]
    thumbnail = F.adaptive_avg_pool2d(tensor, THUMBNAIL)[0, 0].numpy().astype(np.float64)
    fine = view - ndimage.gaussian_filter(view, 2.0 * view.shape[0] / 128.0)
    scalars = np.array([fine.var() / max(float(view.var()), 1e-9), thumbnail.std(),
                        np.abs(np.diff(thumbnail, axis=1)).mean()])
    return thumbnail.ravel(), scalars


def fit(thumbnails: np.ndarray, scalars: np.ndarray, components: int = COMPONENTS) -> dict:
    """The model of training features: thumbnails (N, T) by principal components, scalars (N, 3) by mean and sd."""
    mean = thumbnails.mean(axis=0)
    centred = thumbnails - mean
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    k = min(components, len(singular) - 1)
    variances = singular[:k] ** 2 / max(len(thumbnails) - 1, 1)
    residual = centred - (centred @ axes[:k].T) @ axes[:k]
    return {"mean": mean.tolist(), "components": axes[:k].tolist(), "variances": variances.tolist(),
            "residual": float((residual ** 2).sum(axis=1).mean()), "scalar_mean": scalars.mean(axis=0).tolist(),
            "scalar_sd": np.maximum(scalars.std(axis=0), 1e-9).tolist(), **_layout_model(thumbnails, mean)}


def _layout_model(thumbnails: np.ndarray, mean: np.ndarray) -> dict:
    """Where the mean training view is darkest and brightest (a quarter of the pixels each), and the training
    mean and sd of the layout contrast (dark minus bright) of each thumbnail."""
    dark = mean <= np.quantile(mean, 0.25)
    bright = mean >= np.quantile(mean, 0.75)
    contrast = thumbnails[:, dark].mean(axis=1) - thumbnails[:, bright].mean(axis=1)
    return {"dark": np.flatnonzero(dark).tolist(), "bright": np.flatnonzero(bright).tolist(),
            "layout_mean": float(contrast.mean()), "layout_sd": max(float(contrast.std()), 1e-9)}


def score_features(thumbnail: np.ndarray, scalars: np.ndarray, model: dict) -> float:
    axes, variances = np.asarray(model["components"]), np.asarray(model["variances"])
    centred = thumbnail - np.asarray(model["mean"])
    coords = axes @ centred
    residual = centred - axes.T @ coords
    z = (scalars - np.asarray(model["scalar_mean"])) / np.asarray(model["scalar_sd"])
    layout = thumbnail[model["dark"]].mean() - thumbnail[model["bright"]].mean()
    z = np.append(z, (layout - model["layout_mean"]) / model["layout_sd"])
    total = float(np.mean(coords ** 2 / variances)) + float((residual ** 2).sum() / model["residual"])
    return float(np.sqrt((total + float((z ** 2).sum())) / (2 + len(z))))


def threshold(held_out_scores) -> float:
    return float(MARGIN * np.percentile(np.asarray(held_out_scores, dtype=np.float64), PERCENTILE))


def score(view: np.ndarray, angle: float) -> Likeness | None:
    """The likeness of a prepared view at ``angle`` degrees, or None when no model exists for that angle."""
    from x2ct.io.prepare import reference_for

    reference = reference_for(angle % 360.0)
    if reference is None or "likeness" not in reference:
        return None
    model = reference["likeness"]
    return Likeness(score_features(*features(view, angle), model), float(model["threshold"]),
                    float(reference["angle"]))
