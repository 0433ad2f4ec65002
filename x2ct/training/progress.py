"""Progress of a run: a terminal line with ETA, JSON lines on request, and a CSV log."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``update(step, logs)`` after each step; ``event(kind, **fields)`` for evaluations and the end.

    ``mode``: 'line' (a carriage-return line with ETA on stderr), 'json' (one
    JSON object per line on stdout, for the Slicer module) or 'none'. Every
    step is appended to ``log.csv`` in the output folder whatever the mode.
    """

    def __init__(self, out: Path, total: int, start: int = 0, mode: str = "line", stream=None):
        self.total, self.start, self.mode = total, start, mode
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.began = time.monotonic()
        self.csv_path = out / "log.csv"
        self.columns: list[str] | None = None

    def eta(self, step: int) -> float:
        done = step - self.start
        return (time.monotonic() - self.began) / done * (self.total - step) if done > 0 else float("nan")

    def update(self, step: int, logs: dict) -> None:
        self._csv({"step": step, **logs})
        if self.mode == "json":
            self.event("step", step=step, total=self.total, eta_s=round(self.eta(step), 1), **logs)
        elif self.mode == "line":
            shown = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
            eta = self.eta(step)
            self.stream.write(f"\rstep {step}/{self.total} {shown} ETA {_clock(eta) if eta == eta else '?'} ")
            self.stream.flush()

    def event(self, kind: str, **fields) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps({"event": kind, **fields}, default=float) + "\n")
            self.stream.flush()
        elif self.mode == "line" and kind != "step":
            shown = ", ".join(f"{k} {v}" for k, v in fields.items())
            self.stream.write(f"\n{kind}: {shown}\n")
            self.stream.flush()

    def _csv(self, row: dict) -> None:
        new = not self.csv_path.is_file()
        if self.columns is None:
            self.columns = list(row)
        with open(self.csv_path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
