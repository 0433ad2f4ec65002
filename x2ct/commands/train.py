"""``x2ct train``: train a model from a YAML config (a file or a shipped name such as x2ct-gan-tiny).

Several processes: ``torchrun --nproc_per_node=N -m x2ct train ...`` (docs/training.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a reconstruction model with its published schedule",
                                   description="Checkpoints go to OUT/checkpoints (latest and best kept), the "
                                               "final model to OUT/model, the logs to OUT/log.csv and "
                                               "OUT/tensorboard. Under torchrun each process trains its share of "
                                               "every global batch and rank 0 writes.")
    parser.add_argument("--config", required=True,
                        help="YAML config file, or a shipped config name (x2ct/training/configs/<name>.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="output folder of the run")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run already in --out (checkpoints, model, logs) and start again")
    parser.add_argument("--steps", type=int, help="override train.steps")
    parser.add_argument("--init-from", metavar="MODEL",
                        help="fine-tune: start from this model's weights (a model id of `x2ct catalog list` or a "
                             "model folder; overrides train.init_from)")
    parser.add_argument("--progress", choices=("line", "json", "none"), default="line",
                        help="terminal line with ETA (default), JSON lines on stdout, or nothing")
    parser.set_defaults(func=run)


def run(args) -> int:
    from x2ct.training import load, train

    summary = train(load(args.config), args.out, resume=args.resume, steps=args.steps, progress=args.progress,
                    overwrite=args.overwrite, init_from=args.init_from)
    if args.progress != "json" and os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2, default=float))
    return 0
