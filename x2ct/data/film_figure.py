"""The film-simulation figure of docs/film-simulation.png: the real sample film beside simulated ones.

    python -m x2ct.data.film_figure docs/film-simulation.png

Top row: the real PA radiograph (``x2ct sampledata path chest-xray``) as
stored, and as the model sees it after ``x2ct.io.prepare``. Then, for a
pseudo-patient of each real CT (seeds 0 and 1), its clean frontal DRR and
four film simulations (``x2ct.data.film``, seeds 0-3), each captioned with
a few of its draws.
"""

from __future__ import annotations

import sys

import numpy as np

PANEL = 200


def _panel(image: np.ndarray, caption: str):
    from PIL import Image, ImageDraw

    low, high = np.percentile(image, (0.5, 99.5))
    grey = np.clip((image - low) / max(float(high - low), 1e-6), 0, 1)
    rows, cols = grey.shape
    panel = Image.fromarray((grey * 255).astype(np.uint8)).resize((round(PANEL * cols / rows), PANEL))
    panel = panel.convert("RGB")
    draw = ImageDraw.Draw(panel)
    for n, line in enumerate(caption.split("\n")):
        draw.text((3, 2 + 11 * n), line, fill=(255, 220, 0))
    return panel


def _caption(drawn: dict) -> str:
    parts = [f"rot {drawn['rotation_deg']:+.1f} mag {drawn['magnification']:.2f}",
             f"scatter {drawn['scatter_ratio']:.2f} noise {drawn['noise']:.3f}",
             f"gamma {drawn['gamma']:.2f}" + (" LUT" if "lut" in drawn else "") +
             (" unsharp" if "unsharp" in drawn else "")]
    return "\n".join(parts)


def figure():
    from PIL import Image

    from x2ct import sampledata
    from x2ct.data import datasets, film, simulate
    from x2ct.io import prepare, read_xray

    real = read_xray(sampledata.path("chest-xray"))
    rows = [[_panel(real.image, "real PA film (sample data)"),
             _panel(prepare.prepare(real, 128).view, "real film, prepared")]]
    views = datasets.default_views(128)
    for seed in (0, 1):
        patient = simulate.pseudo_patient(seed, datasets.X2CT)
        drr = views.views(*datasets.X2CT.normalise(patient.ct))[0]
        row = [_panel(drr, f"clean DRR, {patient.parameters['patient']}")]
        for film_seed in range(4):
            filmed, drawn = film.simulate(drr, np.random.default_rng(film_seed))
            row.append(_panel(filmed, _caption(drawn)))
        rows.append(row)
    width = max(sum(p.width + 4 for p in row) for row in rows)
    canvas = Image.new("RGB", (width, len(rows) * (PANEL + 4)), (0, 0, 0))
    for r, row in enumerate(rows):
        x = 0
        for panel in row:
            canvas.paste(panel, (x, r * (PANEL + 4)))
            x += panel.width + 4
    return canvas


def main(argv=None) -> int:
    from x2ct.render import save_png

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m x2ct.data.film_figure OUT.png", file=sys.stderr)
        return 2
    print(save_png(figure(), argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
