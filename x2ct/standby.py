"""A spare ``x2ct`` process: its imports done ahead of time, waiting for the one command it will run.

Slicer runs every reconstruction in a fresh background process, so that a
cancel can kill it and a crash cannot take Slicer down; such a process spends
most of its time importing torch and MONAI (docs/benchmarks/startup.md: 5.7 s
of 8.6 s). A spare pays for the imports while the user is still looking at
the last result. It imports what ``x2ct reconstruct`` needs, prints ``READY``
as a JSON line, then waits for one line on stdin: the command's arguments as
a JSON list of strings. It runs that command exactly as ``python -m x2ct``
would and exits with its status, so every command still gets a process of
its own. It exits without running anything when stdin closes (the parent
has gone or dropped it) or after ``--idle`` seconds (it holds memory).

    python -m x2ct.standby [--idle SECONDS]    # started by x2ct.jobs.Spare
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import threading

READY = {"event": "standby-ready"}
#: What a reconstruction imports, heaviest first; every network module is imported below too.
PRELOAD = ("torch", "monai", "SimpleITK", "x2ct.io", "x2ct.inference", "x2ct.cli")
#: Exit status after the idle time ran out (EX_TEMPFAIL): nothing was run.
EXIT_IDLE = 75
DEFAULT_IDLE_SECONDS = 900.0


def preload() -> None:
    """Import the modules a reconstruction needs, every method's network module included."""
    for name in PRELOAD:
        importlib.import_module(name)
    import x2ct.models.methods as methods

    for info in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"{methods.__name__}.{info.name}")


def command_from(line: str) -> list[str]:
    """The command's arguments from the line the parent sent; ValueError when it is not a JSON list of strings."""
    arguments = json.loads(line)
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        raise ValueError(f"expected a JSON list of strings, got {line.strip()[:200]!r}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x2ct.standby", description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE_SECONDS,
                        help="exit after this many seconds without a command (default %(default)g)")
    args = parser.parse_args(argv)
    from x2ct.startup import skip_unused_optional_imports

    skip_unused_optional_imports()  # this process is x2ct's own, like `python -m x2ct`
    # The idle clock starts now, not after the imports: the parent knows when it started this process and
    # stops handing it commands well before the time is up (x2ct.jobs.Spare.usable).
    timer = threading.Timer(args.idle, os._exit, (EXIT_IDLE,))
    timer.daemon = True
    timer.start()
    preload()
    print(json.dumps(READY), flush=True)
    line = sys.stdin.readline()
    timer.cancel()
    if not line.strip():
        return 0  # stdin closed: nothing to run
    try:
        arguments = command_from(line)
    except ValueError as error:
        print(f"x2ct standby: error: {error}", file=sys.stderr)
        return 2
    from x2ct.cli import main as run_command

    return run_command(arguments)


if __name__ == "__main__":
    sys.exit(main())
