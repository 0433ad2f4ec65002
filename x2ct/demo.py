"""The main job on the bundled sample data (the README's first command).

Today it fetches the three real sample cases, writes a labelled preview of
each (CT planes and MIPs; the radiograph with its geometry) and the frontal
and lateral DRRs of the chest CT with previews. Each step prints what it
wrote; a summary lists every output in ``summary.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from x2ct import io, physics, render, sampledata


def run(out: Path, log=print) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    started = time.perf_counter()

    for name in ("chest-ct", "head-ct"):
        volume = io.read_ct(sampledata.path(name))
        level, width = render.CT_WINDOWS["soft-tissue"]
        title = f"{name} {volume.shape[2]}x{volume.shape[1]}x{volume.shape[0]}"
        outputs[f"{name}-preview"] = _save(render.ct_planes(volume, level, width, title=title),
                                           out / f"{name}-preview.png", log)

    xray = io.read_xray(sampledata.path("chest-xray"))
    outputs["chest-xray-preview"] = _save(render.xray_panel(xray, lines=["real CR radiograph (MONOCHROME1)"]),
                                          out / "chest-xray-preview.png", log)

    chest = io.read_ct(sampledata.path("chest-ct"))
    geometry = physics.DRRGeometry()
    panels = []
    for view in ("frontal", "lateral"):
        drr = physics.drr(chest, view, geometry)
        target = out / f"chest-ct-drr-{view}.nrrd"
        io.write_xray(drr, target)
        outputs[f"drr-{view}"] = str(target)
        log(f"  wrote {target}")
        panels.append(render.xray_panel(drr, height=384, lines=["DRR of the sample chest CT"]))
    outputs["drr-preview"] = _save(render.side_by_side(panels), out / "chest-ct-drr-preview.png", log)

    summary = {"outputs": outputs, "seconds": round(time.perf_counter() - started, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"x2ct demo: done in {summary['seconds']} s; outputs in {out.resolve()}")
    return summary


def _save(image, path: Path, log) -> str:
    render.save_png(image, path)
    log(f"  wrote {path}")
    return str(path)
