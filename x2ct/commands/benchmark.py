"""``x2ct benchmark``: measure speed and memory, regenerate BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

from x2ct import benchmarks
from x2ct.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser("benchmark", help="run benchmarks and regenerate BENCHMARKS.md")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this section (repeatable); others keep their saved results")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--results", type=Path, default=Path("docs/benchmarks"),
                        help="folder of saved section results (default: docs/benchmarks)")
    parser.add_argument("--report", type=Path, default=Path("BENCHMARKS.md"))
    parser.set_defaults(func=run)


def run(args) -> int:
    known = benchmarks.sections()
    chosen = args.only or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise InputError(f"Unknown benchmark section(s) {', '.join(unknown)}; known: {', '.join(known)}.")
    for name in chosen:
        if benchmarks.needs_missing_gpu(name):
            print(f"x2ct benchmark: skipped {name}: it measures a GPU and this machine has none; its saved result "
                  "stays (scripts/gpu-benchmark runs it on a GPU machine)", flush=True)
            continue
        print(f"x2ct benchmark: running {name} ...", flush=True)
        print(f"x2ct benchmark: wrote {benchmarks.run_section(name, args.quick, args.results)}")
    benchmarks.write_report(args.results, args.report)
    print(f"x2ct benchmark: wrote {args.report}")
    return 0
