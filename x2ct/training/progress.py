"""Progress of a run: a terminal line with ETA, JSON lines on request, a CSV log and TensorBoard scalars."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

LOG = "log.csv"
TENSORBOARD = "tensorboard"


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _writer(folder: Path, purge_step: int | None = None):
    """A TensorBoard SummaryWriter, or None when the tensorboard package is not installed.

    ``purge_step`` (a resumed run's first new step) hides the events a killed
    run wrote from that step on, so replayed steps are not shown twice.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().strip().split(",")


def truncate_log(path: Path, step: int) -> None:
    """Keep the header and the rows up to ``step`` of a resumed run's log.csv (atomically), so replayed
    steps are not logged twice; a row cut short by a kill ends the kept part."""
    from x2ct.io.outputs import write_text

    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    kept = lines[:1] if lines and lines[0].endswith("\n") else []
    for line in lines[1:]:
        first = line.split(",", 1)[0]
        if not line.endswith("\n") or not first.isdigit() or int(first) > step:
            break
        kept.append(line)
    if kept != lines:
        write_text(path, "".join(kept))


def _add_columns(path: Path, columns: list[str], added: int) -> None:
    """Rewrite log.csv (atomically) under the header ``columns``, its rows padded with ``added`` empty fields: a
    loss term that first appears mid-run (code diffusion's next stage) gets a column."""
    from x2ct.io.outputs import write_text

    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = [line + "," * added for line in lines[1:]]
    write_text(path, "\n".join([",".join(columns)] + rows) + "\n")


class Progress:
    """``update(step, logs)`` after each step; ``event(kind, **fields)`` for evaluations and the end.

    ``mode``: 'line' (a carriage-return line with ETA on stderr), 'json' (one
    JSON object per line on stdout, for the Slicer module) or 'none'. With
    ``files`` (the main process of a run), every step is appended to
    ``log.csv`` and written as TensorBoard scalars to ``tensorboard/`` in the
    output folder, whatever the mode: ``train/<term>`` per step (losses and
    ``train/lr``) and ``evaluate/<convention>.<metric>`` per evaluation. Without
    the tensorboard package a 'note' event says so once and the CSV goes on.
    """

    def __init__(self, out: Path, total: int, start: int = 0, mode: str = "line", stream=None, files: bool = True):
        self.total, self.start, self.mode, self.files = total, start, mode, files
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.began = time.monotonic()
        self.csv_path = out / LOG
        self.tensorboard_path = out / TENSORBOARD
        self.columns: list[str] | None = None
        self.writer = _writer(self.tensorboard_path, start + 1 if start else None) if files else None
        self.tensorboard = self.writer is not None
        if files and self.writer is None:
            self.event("note", text="tensorboard is not installed, so there are no TensorBoard logs; log.csv is "
                                    "written (pip install tensorboard to get them).")

    def eta(self, step: int) -> float:
        done = step - self.start
        return (time.monotonic() - self.began) / done * (self.total - step) if done > 0 else float("nan")

    def update(self, step: int, logs: dict) -> None:
        if self.files:
            self._csv({"step": step, **logs})
            self._scalars("train", step, logs)
        if self.mode == "json":
            self.event("step", step=step, total=self.total, eta_s=round(self.eta(step), 1), **logs)
        elif self.mode == "line":
            shown = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
            eta = self.eta(step)
            self.stream.write(f"\rstep {step}/{self.total} {shown} ETA {_clock(eta) if eta == eta else '?'} ")
            self.stream.flush()

    def evaluation(self, step: int, metrics: dict) -> None:
        """Validation metrics (both conventions) as an event and as TensorBoard scalars."""
        if self.files:
            self._scalars("evaluate", step, metrics)
        self.event("evaluation", step=step, **metrics)

    def event(self, kind: str, **fields) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps({"event": kind, **fields}, default=float) + "\n")
            self.stream.flush()
        elif self.mode == "line" and kind != "step":
            shown = ", ".join(f"{k} {v}" for k, v in fields.items())
            self.stream.write(f"\n{kind}: {shown}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _scalars(self, section: str, step: int, values: dict) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{section}/{key}", value, step)
        if section == "evaluate":
            self.writer.flush()

    def _csv(self, row: dict) -> None:
        new = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
        if self.columns is None:  # a resumed run keeps the columns of its log
            self.columns = list(row) if new else _header(self.csv_path)
        added = [key for key in row if key not in self.columns]
        if added:
            self.columns += added
            if not new:
                _add_columns(self.csv_path, self.columns, len(added))
        try:
            with open(self.csv_path, "a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)
        except OSError as error:  # a full disk: one line; the last checkpoint is intact, resume drops the cut row
            from x2ct.io.outputs import failure

            raise failure(self.csv_path, error) from None
