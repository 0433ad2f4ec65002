"""``x2ct evaluate``: score a predicted CT against the ground truth, in every labelled convention."""

from __future__ import annotations

import json
import math
from pathlib import Path

from x2ct.errors import InputError
from x2ct.io import read_ct
from x2ct.metrics import CONVENTIONS, DEFAULT_HU_RANGE, evaluate_volumes, json_ready, lung_label_ids


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a predicted CT against a ground-truth CT (X2CT, R&C and honest conventions)",
        description="Both CTs are in HU, on the same grid (shape and spacing); they are normalised to [0, 1] "
                    "by the HU window (the X2CT protocol's by default) and scored in every convention.")
    parser.add_argument("--pred", type=Path, required=True,
                        help="predicted CT in HU (DICOM folder, NIfTI, NRRD or MetaImage)")
    parser.add_argument("--gt", type=Path, required=True, help="ground-truth CT on the same grid")
    parser.add_argument("--labels", type=Path, help="organ label map of the ground truth, for lung Dice by label")
    parser.add_argument("--structures", type=Path,
                        help="CSV naming the label ids (columns id, structure), required with --labels")
    parser.add_argument("--hu-min", type=float, default=DEFAULT_HU_RANGE[0],
                        help=f"HU mapped to 0 (default {DEFAULT_HU_RANGE[0]:g})")
    parser.add_argument("--hu-max", type=float, default=DEFAULT_HU_RANGE[1],
                        help=f"HU mapped to 1 (default {DEFAULT_HU_RANGE[1]:g})")
    parser.add_argument("--json", action="store_true", help="print JSON (undefined values as null)")
    parser.set_defaults(func=run)


def run(args) -> int:
    if (args.labels is None) != (args.structures is None):
        raise InputError("--labels and --structures go together: the label map and the CSV naming its ids "
                         "(e.g. chest-ct-labels.nii.gz with chest-ct-structures.csv).")
    labels = lung_ids = None
    if args.labels is not None:
        lung_ids = lung_label_ids(args.structures)
        labels = read_ct(args.labels)  # any 3D volume file; label ids stay exact in float32
    result = evaluate_volumes(read_ct(args.pred), read_ct(args.gt), hu_range=(args.hu_min, args.hu_max),
                              labels=labels, lung_ids=lung_ids)
    if args.json:
        print(json.dumps(json_ready(result), indent=2, allow_nan=False))
    else:
        print(format_table(result, (args.hu_min, args.hu_max)))
    return 0


def format_table(result: dict, hu_range) -> str:
    """A readable report: one block per convention, headed by what the convention is."""
    lines = [f"HU window [{hu_range[0]:g}, {hu_range[1]:g}] -> [0, 1]"]
    for section, metrics in result.items():
        lines += ["", f"{section}: {CONVENTIONS.get(section, '')}"]
        for name, value in metrics.items():
            if isinstance(value, dict):
                value = "  ".join(f"{plane} {_number(name, v)}" for plane, v in value.items())
            else:
                value = _number(name, value)
            lines.append(f"  {name:24s} {value}")
    return "\n".join(lines)


def _number(name: str, value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if "_db" in name else f"{value:.5g}"
