"""Metrics as JSON lines, one record per line, trimmed back to a checkpoint's line count on resume; the
loggers (``loggers.py``: CSV, TensorBoard) get each record as the file holds it and are rebuilt from the
kept lines on resume."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..files import atomic_write_text, read_jsonl, strict_json
from .loggers import Logger

__all__ = ["MetricsLog", "read_jsonl"]


class MetricsLog:
    """Append-only JSONL file; ``lines`` is saved in checkpoints so resume can cut what came after.
    ``enabled=False`` (ranks > 0 of a data-parallel run) counts records but touches no file. ``loggers``
    copy every record; they start from the file's records on the first ``truncate`` or ``write``."""

    def __init__(self, path: str | Path, enabled: bool = True, loggers: Sequence[Logger] = ()) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.lines = len(read_jsonl(self.path)) if enabled else 0
        self.loggers = list(loggers) if enabled else []
        self._synced = False  # whether the loggers hold the file's records

    def write(self, record: dict) -> None:
        if not self.enabled:
            self.lines += 1
            return
        if not self._synced:
            self._reset_loggers(read_jsonl(self.path))
        line = strict_json(record)  # NaN / inf as null
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
        self.lines += 1
        for logger in self.loggers:
            logger.write(json.loads(line))  # the record as metrics.jsonl holds it

    def truncate(self, n_lines: int) -> None:
        """Keep the first ``n_lines`` records (those written before the checkpoint being resumed)."""
        if not self.enabled:
            self.lines = n_lines
            return
        records = read_jsonl(self.path)[:n_lines]
        atomic_write_text("".join(strict_json(r) + "\n" for r in records), self.path)
        self.lines = len(records)
        self._reset_loggers(records)

    def _reset_loggers(self, records: list[dict]) -> None:
        for logger in self.loggers:
            logger.reset(records)
        self._synced = True

    def close(self) -> None:
        """Close the loggers (metrics.jsonl itself is closed after every line)."""
        for logger in self.loggers:
            logger.close()
