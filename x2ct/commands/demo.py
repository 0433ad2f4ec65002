"""``x2ct demo``: the main job on the bundled sample data."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the main job on the real sample cases")
    parser.add_argument("--out", type=Path, default=Path("output/demo"), help="output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from x2ct import demo

    demo.run(args.out)
    return 0
