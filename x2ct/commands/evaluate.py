"""``x2ct evaluate``: score a predicted CT against the ground truth, or a model on a dataset, in every convention.

Two forms: ``--pred P --gt G`` (two CT files in HU), and ``--model ID_OR_FOLDER
--data-kind KIND [--data SOURCE]`` (``x2ct.evaluation``: the model
reconstructs each case of the split from the dataset's views).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from x2ct.datasources import DATA_KINDS
from x2ct.request import DEVICES
from x2ct.errors import InputError
from x2ct.io import read_ct
from x2ct.metrics import DEFAULT_HU_RANGE, evaluate_volumes, json_ready, lung_label_ids
from x2ct.metrics.alignment import SECTION_DEFINITIONS, compare_centred


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a predicted CT against a ground truth, or a model on a dataset (every convention)",
        description="With --pred/--gt: both CTs are in HU, on the same grid (shape and spacing); they are "
                    "normalised to [0, 1] by the HU window (the X2CT protocol's by default) and scored in every "
                    "convention. With --model/--data-kind: the model reconstructs every case of the split from the "
                    "dataset's views (at its own view size and angles) and each case is scored on the model's grid.")
    parser.add_argument("--pred", type=Path, help="predicted CT in HU (DICOM folder, NIfTI, NRRD or MetaImage)")
    parser.add_argument("--gt", type=Path, help="ground-truth CT on the same grid (or any grid with --align-centres)")
    parser.add_argument("--align-centres", action="store_true",
                        help="resample --gt onto --pred's grid with the volume centres aligned (linear, -1000 HU "
                             "outside), as the Slicer module's Compare does; for a reconstruction from X-rays, "
                             "which knows nothing of the scanner's coordinates")
    parser.add_argument("--model", help="catalog model id or model folder to evaluate on --data")
    parser.add_argument("--data-kind", choices=DATA_KINDS, default="simulated",
                        help="dataset kind for --model (default: simulated pseudo-patients)")
    parser.add_argument("--data", help="dataset folder or file for --model (not needed for simulated)")
    parser.add_argument("--split", choices=("train", "validation", "test"), default="test",
                        help="which split of the dataset (default: test)")
    parser.add_argument("--count", type=int, help="evaluate only the first N cases of the split")
    parser.add_argument("--device", choices=[d for d in DEVICES if d != "auto"], default="cpu",
                        help="device for --model")
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
    if args.model is not None:
        if args.pred is not None or args.gt is not None:
            raise InputError("Give either --pred and --gt (two CT files) or --model with --data-kind/--data, not both.")
        return run_model(args)
    if args.pred is None or args.gt is None:
        raise InputError("Give --pred and --gt (a predicted and a ground-truth CT), or --model and --data-kind to "
                         "evaluate a model on a dataset.")
    if (args.labels is None) != (args.structures is None):
        raise InputError("--labels and --structures go together: the label map and the CSV naming its ids "
                         "(e.g. chest-ct-labels.nii.gz with chest-ct-structures.csv).")
    labels = lung_ids = None
    if args.labels is not None:
        lung_ids = lung_label_ids(args.structures)
        labels = read_ct(args.labels)  # any 3D volume file; label ids stay exact in float32
    if args.align_centres:
        if labels is not None:
            raise InputError("--labels lie on the ground truth's grid; give them without --align-centres.")
        _, _, result = compare_centred(read_ct(args.pred), read_ct(args.gt), hu_range=(args.hu_min, args.hu_max))
    else:
        result = evaluate_volumes(read_ct(args.pred), read_ct(args.gt), hu_range=(args.hu_min, args.hu_max),
                                  labels=labels, lung_ids=lung_ids)
    if args.json:
        print(json.dumps(json_ready(result), indent=2, allow_nan=False))
    else:
        print(format_table(result, (args.hu_min, args.hu_max)))
    return 0


def run_model(args) -> int:
    from x2ct import inference
    from x2ct.evaluation import dataset_for, evaluate_model

    if args.count is not None and args.count < 1:
        raise InputError(f"--count must be at least 1, got {args.count}.")
    loaded = inference.load(args.model, args.device)
    dataset = dataset_for(loaded.model.spec, args.data_kind, args.data, args.split, args.count)
    result = evaluate_model(loaded, dataset, args.count, args.device)
    if args.json:
        print(json.dumps(json_ready(result), indent=2, allow_nan=False))
    else:
        print(f"{result['model']} on {len(result['cases'])} {args.split} case(s) of {args.data_kind} "
              f"{args.data or ''}".rstrip() + " (mean; scored on the model's output grid)")
        for name, value in result["mean"].items():
            print(f"  {name:32s} {_number(name, value)}")
        fidelity = result["fidelity"]
        print(f"  {'fidelity.density':32s} {_number('density', fidelity['density'])}")
        print(f"  {'fidelity.coverage':32s} {_number('coverage', fidelity['coverage'])}")
        print(f"  ({fidelity['about']}; {fidelity['real']} real, {fidelity['fake']} predicted, k = {fidelity['k']})")
    return 0


def format_table(result: dict, hu_range) -> str:
    """A readable report: one block per convention, headed by what the convention is."""
    lines = [f"HU window [{hu_range[0]:g}, {hu_range[1]:g}] -> [0, 1]"]
    for section, metrics in result.items():
        lines += ["", f"{section}: {SECTION_DEFINITIONS.get(section, '')}"]
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
