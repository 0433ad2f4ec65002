"""``x2ct demo``: the main job on the bundled sample data."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="reconstruct the sample chest CT (from its DRRs) and the real radiograph with every shipped "
                     "model; write volumes, figures and metrics",
        description="Writes CT volumes (NRRD), side-by-side PNGs against the ground truth and metrics.md/.json "
                    "(with the run records). scripts/demo then renders them in Slicer's views and writes "
                    "scene.mrb (X2CTReconstructionLib.demoscene).")
    parser.add_argument("--out", type=Path, default=Path("output/demo"), help="output folder")
    parser.add_argument("--models", nargs="+", metavar="ID",
                        help="catalog ids or model folders (default: back-projection and every shipped model)")
    parser.add_argument("--no-radiograph", action="store_true", help="skip the real chest radiograph")
    parser.set_defaults(func=run)


def run(args) -> int:
    from x2ct import demo

    demo.run(args.out, models=args.models, radiograph=not args.no_radiograph)
    return 0
