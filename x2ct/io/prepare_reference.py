"""Remake ``x2ct/io/drr_reference.json``: what the training DRRs look like, per view angle.

    python -m x2ct.io.prepare_reference [--train 24] [--held-out 12] [--films 3] [--out FILE]

From the frontal (0) and lateral (90) X2CT-protocol DRRs (128 pixels, as the
shipped models' training views) of pseudo-patients of both real CTs
(``x2ct.data.simulate``; training seeds 0.. and validation seeds 10000..):

* ``quantiles``: the mean quantile function (101 levels) of the training
  views: the target of the preparation's histogram matching;
* ``mean_view``: the mean training view (64 pixels), the target of the
  preparation's registration (``x2ct.io.align``);
* ``lung_field``: the median lung field (top row, centre column, height,
  width as fractions of the side; ``x2ct.io.prepare.field_box``) of the lung
  labels projected in the DRRs' geometry;
* ``likeness``: the input-likeness model (``x2ct.likeness``) fitted on the
  training views, clean and ``--films`` film-simulated copies of each, all
  prepared as real films are; its threshold from the held-out seeds;
* ``film_agreement``: how well the preparation undoes the film simulation
  (NCC of prepared held-out films with their clean DRRs).

Takes a few minutes on two CPU cores (DRRs are cached in the user cache).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import numpy as np

from x2ct import likeness
from x2ct.image import XRay
from x2ct.io import prepare

ANGLES = (0.0, 90.0)
VIEW_PIXELS = 128
#: Side of the stored mean training DRR (the registration target of ``x2ct.io.align``).
MEAN_VIEW_PIXELS = 64


def training_views(seeds) -> tuple[np.ndarray, np.ndarray]:
    """Frontal and lateral DRR views (N, 2, 128, 128) of the pseudo-patients of ``seeds``, and their lung
    fields (N, 2, 4) from the lung labels projected in the same geometry (``prepare.field_box``)."""
    import torch
    import torch.nn.functional as F

    from x2ct.data import datasets, simulate
    from x2ct.physics.geometry import X2CT_GEOMETRY
    from x2ct.physics.projector import project

    cache = datasets.default_views(VIEW_PIXELS, ANGLES)
    views, fields = [], []
    for seed in seeds:
        patient = simulate.pseudo_patient(seed, datasets.X2CT)
        ct, state = datasets.X2CT.normalise(patient.ct)
        views.append(cache.views(ct, state))
        lungs = np.isin(patient.labels.array, simulate.load_template(datasets.X2CT.size).lung_labels)
        spacing = (float(patient.ct.spacing[0]),) * 3
        paths = project(torch.from_numpy(lungs.astype(np.float32))[None, None], spacing, list(ANGLES),
                        X2CT_GEOMETRY)
        paths = F.interpolate(paths, size=(VIEW_PIXELS, VIEW_PIXELS), mode="bilinear", align_corners=True)[0]
        fields.append([prepare.field_box(path.numpy() > 0.15 * float(path.max())) for path in paths])
    return np.stack(views), np.asarray(fields)


def as_xray(view: np.ndarray, angle: float, spacing_known: bool) -> XRay:
    """A DRR view as an X-ray file would give it: with its detector spacing, or with none (a picture)."""
    pixel = prepare.DETECTOR_MM / view.shape[-1]
    metadata = {"source": "training DRR", "pixel_spacing_source": "file" if spacing_known else "assumed"}
    if spacing_known:
        return XRay(view, (pixel, pixel), angle, sid=prepare.X2CT_SID, sad=prepare.X2CT_SAD, metadata=metadata)
    return XRay(view, (1.0, 1.0), angle, metadata=metadata)


def prepared_features(views: np.ndarray, angle_index: int, films: int, seed: int) -> tuple[np.ndarray, np.ndarray,
                                                                                           list[float]]:
    """Likeness features of each view prepared as a film: clean (spacing known), then ``films`` film-simulated
    copies (spacing unknown, as a picture); (thumbnails (N, T), scalars (N, 3), and the NCC of each prepared
    film with its clean view: how well the preparation undoes the film)."""
    from x2ct.data import film
    from x2ct.io.align import ncc

    rng = np.random.default_rng(seed)
    angle = ANGLES[angle_index]
    out, agreement = [], []
    for case in views:
        view = case[angle_index]
        out.append(likeness.features(prepare.prepare(as_xray(view, angle, True), VIEW_PIXELS, "film").view, angle))
        for _ in range(films):
            filmed = film.simulate(view, rng)[0]
            prepared = prepare.prepare(as_xray(filmed, angle, False), VIEW_PIXELS, "film").view
            out.append(likeness.features(prepared, angle))
            agreement.append(ncc(prepared, view))
    return np.array([t for t, _ in out]), np.array([s for _, s in out]), agreement


def build(train: int, held_out: int, films: int, out: Path) -> dict:
    import torch
    import torch.nn.functional as F

    from x2ct.data import simulate

    train_views, train_fields = training_views(simulate.seeds("train")[:train])
    held_views, _ = training_views(simulate.seeds("validation")[:held_out])
    reference = {"made_by": f"python -m x2ct.io.prepare_reference --train {train} --held-out {held_out} "
                            f"--films {films}",
                 "date": datetime.date.today().isoformat(),
                 "source": f"X2CT-protocol DRRs ({VIEW_PIXELS} px) of pseudo-patients of both sample chest CTs: "
                           f"training seeds 0-{train - 1}, held-out validation seeds 10000-{10000 + held_out - 1}",
                 "views": []}
    for index, angle in enumerate(ANGLES):
        views = train_views[:, index]
        quantiles = np.mean([np.quantile(v, np.linspace(0.0, 1.0, 101)) for v in views], axis=0)
        mean_view = F.interpolate(torch.from_numpy(views.mean(axis=0))[None, None].float(), size=MEAN_VIEW_PIXELS,
                                  mode="area")[0, 0].numpy()
        reference["views"].append({"angle": angle, "quantiles": np.round(quantiles, 5).tolist(),
                                   "mean_view": np.round(mean_view, 4).tolist(),
                                   "lung_field": np.round(np.median(train_fields[:, index], axis=0), 4).tolist(),
                                   "lung_field_spread": np.round(train_fields[:, index].std(axis=0), 4).tolist()})
    _write(reference, out)  # the preparation below uses the quantiles and lung fields
    for index, entry in enumerate(reference["views"]):
        model = likeness.fit(*prepared_features(train_views, index, films, seed=index)[:2])
        thumbnails, scalars, agreement = prepared_features(held_views, index, films, seed=100 + index)
        scores = [likeness.score_features(t, s, model) for t, s in zip(thumbnails, scalars)]
        model.update(threshold=likeness.threshold(scores), held_out_scores={
            "count": len(scores), "median": float(np.median(scores)), "max": float(np.max(scores)),
            "percentile_99": float(np.percentile(scores, 99))})
        entry["likeness"] = model
        entry["film_agreement"] = {"what": "NCC of held-out film-simulated views, prepared as pictures (spacing "
                                           "unknown), with their clean DRRs",
                                   "count": len(agreement), "median": round(float(np.median(agreement)), 4),
                                   "percentile_10": round(float(np.percentile(agreement, 10)), 4)}
    _write(reference, out)
    return reference


def _write(reference: dict, out: Path) -> None:
    partial = out.with_name(f".{out.name}.partial")
    with open(partial, "w") as handle:
        json.dump(reference, handle, separators=(",", ":"))
        handle.flush()
        os.fsync(handle.fileno())
    json.loads(partial.read_text())
    os.replace(partial, out)
    prepare.load_reference.cache_clear()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=24, help="training pseudo-patients (seeds 0..)")
    parser.add_argument("--held-out", type=int, default=12, help="held-out pseudo-patients (seeds 10000..)")
    parser.add_argument("--films", type=int, default=3, help="film-simulated copies of each view")
    parser.add_argument("--out", type=Path, default=prepare.REFERENCE_FILE)
    args = parser.parse_args(argv)
    reference = build(args.train, args.held_out, args.films, args.out)
    for view in reference["views"]:
        model = view["likeness"]
        print(f"{view['angle']:g} deg: lung field {view['lung_field']} (sd {view['lung_field_spread']}), likeness "
              f"threshold {model['threshold']:.3f} (held-out {model['held_out_scores']}); prepared films vs clean "
              f"DRRs: {view['film_agreement']}")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
