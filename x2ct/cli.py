"""The ``x2ct`` command line.

Each sub-command lives in its own module under ``x2ct/commands`` and defines
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed arguments and returning an exit code). Expected failures
(``X2CTError``) print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"x2ct {args.command}: {'interrupted' if signum == signal.SIGINT else 'cancelled'}", file=sys.stderr)
        return 128 + int(signum)
    except BrokenPipeError:  # the reader went away (x2ct catalog list | head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 128 + int(getattr(signal, "SIGPIPE", 13))
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class Cancelled(KeyboardInterrupt):
    """A cancel by signal: unwinds like Ctrl-C, and the exit status says which signal (128 + its number)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on_cancel() -> dict:
    """Make a cancel (SIGTERM; CTRL_BREAK on Windows) unwind like Ctrl-C, so output locks and staging files
    are removed. Returns the previous handlers (none off the main thread, where none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):
        raise Cancelled(signum)

    numbers = [getattr(signal, name) for name in ("SIGTERM", "SIGBREAK") if hasattr(signal, name)]
    return {number: signal.signal(number, stop) for number in numbers}


if __name__ == "__main__":
    sys.exit(main())
