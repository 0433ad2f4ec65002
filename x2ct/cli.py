"""The ``x2ct`` command line.

Each sub-command lives in its own module under ``x2ct/commands`` and defines
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed arguments and returning an exit code). Expected failures
(``X2CTError``) print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
import threading

from x2ct import __version__
from x2ct.errors import X2CTError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="x2ct", description="CT volumes from X-ray images.")
    parser.add_argument("--version", action="version", version=f"x2ct {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import x2ct.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"x2ct.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    previous = _stop_on_cancel()
    try:
        return int(args.func(args) or 0)
    except X2CTError as error:
        print(f"x2ct {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"x2ct {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _stop_on_cancel() -> dict:
    """Make a cancel (SIGTERM; CTRL_BREAK on Windows) unwind like Ctrl-C, so output locks and staging files
    are removed. Returns the previous handlers (none off the main thread, where none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):
        raise KeyboardInterrupt

    numbers = [getattr(signal, name) for name in ("SIGTERM", "SIGBREAK") if hasattr(signal, name)]
    return {number: signal.signal(number, stop) for number in numbers}


if __name__ == "__main__":
    sys.exit(main())
