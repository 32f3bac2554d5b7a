"""Copies of metrics.jsonl for other tools (``--log tensorboard,csv``): ``metrics.csv`` for spreadsheets,
``tensorboard/`` event files for TensorBoard. metrics.jsonl stays the source of truth: every record a
logger gets is the record as metrics.jsonl holds it (NaN and inf read back as None), and on resume each
logger is rebuilt from the records kept there, so a resumed run's copies hold each record once.

A record's values are flattened into named numbers: a list gives ``rates.0``, ``rates.1``, ..., a dict
``nonfinite.loss``; the CSV has one column per name and one row per record, TensorBoard one scalar
``<kind>/<name>`` (``step/loss``, ``epoch/val_accuracy``) per number, at the record's ``step``.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..files import atomic_write_text

__all__ = ["LOGGERS", "CsvLog", "Logger", "TensorBoardLog", "check_installed", "flatten", "open_loggers"]

# logger name -> (the module it needs, the extra that installs it)
LOGGERS = {"tensorboard": ("tensorboard", "log"), "csv": (None, None)}
CSV_NAME = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
LEADING = ("kind", "epoch", "step")  # the CSV's first columns, in every run


class Logger(Protocol):
    """Where the metrics records go besides metrics.jsonl."""

    def reset(self, records: Sequence[dict]) -> None:
        """Start over from ``records`` (those metrics.jsonl keeps: none for a fresh run)."""

    def write(self, record: dict) -> None:
        """One more record."""

    def close(self) -> None:
        """Flush and release the files."""


def flatten(record: dict, prefix: str = "") -> dict[str, Any]:
    """``{"rates": [0.1, 0.2], "nonfinite": {"loss": None}}`` -> ``{"rates.0": 0.1, "rates.1": 0.2,
    "nonfinite.loss": None}``: one name per value, in the record's order."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out.update(flatten({str(i): v for i, v in enumerate(value)}, name + "."))
        else:
            out[name] = value
    return out


def check_installed(names: Iterable[str]) -> None:
    """ValueError naming the extra to install for a logger whose package is missing (said before any work,
    like any other option the run cannot take)."""
    for name in names:
        module, extra = LOGGERS[name]
        if module is not None and importlib.util.find_spec(module) is None:
            raise ValueError(
                f"log {name!r} (--log {name}) needs the {module!r} package, which is not installed; install it with "
                f'pip install "spikestab[{extra}]" (or pip install {module})'
            )


def open_loggers(names: Iterable[str], out: Path) -> list[Logger]:
    """The loggers ``names`` writing into run folder ``out``."""
    check_installed(names)
    kinds: dict[str, Callable[[Path], Logger]] = {"csv": CsvLog, "tensorboard": TensorBoardLog}
    return [kinds[name](out) for name in names]


def _cell(value: Any) -> str:
    """A CSV cell: empty for None (a NaN or inf in the run), ``repr`` of a float (read back exactly)."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


class CsvLog:
    """``metrics.csv``: one row per record, one header line. Its columns are ``kind, epoch, step`` and then
    every other name in the order it first appears; a record that brings a new name rewrites the file
    (atomically) with that column added at the end, so a column never moves."""

    def __init__(self, out: Path) -> None:
        self.path = out / CSV_NAME
        self.columns: list[str] = list(LEADING)

    def reset(self, records: Sequence[dict]) -> None:
        rows = [flatten(r) for r in records]
        self.columns = list(LEADING)
        for row in rows:
            self.columns += [k for k in row if k not in self.columns]
        self._rewrite([{k: _cell(v) for k, v in row.items()} for row in rows])

    def write(self, record: dict) -> None:
        row = {k: _cell(v) for k, v in flatten(record).items()}
        new = [k for k in row if k not in self.columns]
        if new:
            with open(self.path, newline="") as fh:
                old = list(csv.DictReader(fh))
            self.columns += new
            self._rewrite([*old, row])
            return
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, self.columns).writerow(row)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, self.columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(text.getvalue(), self.path)

    def close(self) -> None:
        """Nothing held open: every row is written when it comes."""


class TensorBoardLog:
    """``tensorboard/``: one event per record (``torch.utils.tensorboard``), flushed as it comes, like
    metrics.jsonl's lines. ``reset`` removes the folder's event files and writes the kept records into a
    new one: a resumed run shows each step once, in any TensorBoard reader."""

    def __init__(self, out: Path) -> None:
        self.folder = out / TENSORBOARD_DIR
        self.writer: Any = None

    def reset(self, records: Sequence[dict]) -> None:
        from torch.utils.tensorboard.writer import FileWriter

        self.close()
        old = list(self.folder.glob("events.out.tfevents.*"))
        self.writer = FileWriter(str(self.folder))
        for record in records:
            self._add(record)
        self.writer.flush()
        for path in old:  # once the new file holds the kept records (a kill before: the next reset removes both)
            path.unlink()

    def write(self, record: dict) -> None:
        self._add(record)
        self.writer.flush()

    def _add(self, record: dict) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        kind = record.get("kind", "record")
        values = [
            Summary.Value(tag=f"{kind}/{name}", simple_value=float(v))
            for name, v in flatten(record).items()
            if name not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        self.writer.add_summary(Summary(value=values), global_step=record.get("step", 0))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
