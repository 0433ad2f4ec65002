"""``x2ct info FILE [--xray] [--json]``: the geometry of a CT or X-ray file, as x2ct reads it."""

from __future__ import annotations

import json

import numpy as np

from x2ct import io
from x2ct.image import Volume, view_angle

#: LPS axis letters of a direction column, by (axis, sign).
LETTERS = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="print the geometry of a CT or X-ray file")
    parser.add_argument("path", metavar="FILE", help="CT (DICOM folder, NIfTI, NRRD, MetaImage) or X-ray file")
    parser.add_argument("--xray", action="store_true", help="read the file as an X-ray (2D image)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def run(args) -> int:
    image = io.read_xray(args.path) if args.xray else io.read_image(args.path)
    report = describe(image)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            if isinstance(value, dict):
                print(f"{key}:")
                for name, item in value.items():
                    print(f"  {name}: {item}")
            else:
                print(f"{key}: {_text(key, value)}")
    return 0


def describe(image) -> dict:
    """Geometry and value range of a Volume or XRay as JSON-ready values."""
    values = image.array if isinstance(image, Volume) else image.image
    common = {"min": float(values.min()), "max": float(values.max()), "dtype": str(values.dtype)}
    if isinstance(image, Volume):
        k, j, i = image.shape
        return {"kind": "CT volume", "size_ijk": [i, j, k], "spacing_mm": list(image.spacing),
                "extent_mm": [round(s, 3) for s in image.size_mm], "origin_lps_mm": list(image.origin),
                "orientation": orientation_code(image.direction),
                "direction": np.round(image.direction, 6).tolist(), "values": common}
    return {"kind": "X-ray", "size_rows_cols": list(image.shape), "pixel_spacing_mm": list(image.pixel_spacing),
            "view": image.view, "view_angle_deg": view_angle(image.view), "sad_mm": image.sad,
            "sid_mm": image.sid, "values": common, "metadata": image.metadata}


def orientation_code(direction: np.ndarray) -> str:
    """Patient directions of the i, j, k index axes, e.g. 'LPS' (oblique axes show their nearest)."""
    columns = np.asarray(direction).T
    return "".join(LETTERS[(int(np.abs(c).argmax()), int(np.sign(c[np.abs(c).argmax()])))] for c in columns)


def _text(key: str, value) -> str:
    if key.startswith("origin"):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    if isinstance(value, list) and value and isinstance(value[0], list):
        return "; ".join(" ".join(f"{v:g}" for v in row) for row in value)
    if isinstance(value, list):
        return " x ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)
