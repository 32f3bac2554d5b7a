"""Metrics as JSON lines, one record per line, trimmed back to a checkpoint's line count on resume."""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_write_text, read_jsonl, strict_json

__all__ = ["MetricsLog", "read_jsonl"]


class MetricsLog:
    """Append-only JSONL file; ``lines`` is saved in checkpoints so resume can cut what came after.
    ``enabled=False`` (ranks > 0 of a data-parallel run) counts records but touches no file."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.lines = len(read_jsonl(self.path)) if enabled else 0

    def write(self, record: dict) -> None:
        if not self.enabled:
            self.lines += 1
            return
        with open(self.path, "a") as fh:
            fh.write(strict_json(record) + "\n")  # NaN / inf as null
            fh.flush()
        self.lines += 1

    def truncate(self, n_lines: int) -> None:
        """Keep the first ``n_lines`` records (those written before the checkpoint being resumed)."""
        if not self.enabled:
            self.lines = n_lines
            return
        records = read_jsonl(self.path)[:n_lines]
        atomic_write_text("".join(strict_json(r) + "\n" for r in records), self.path)
        self.lines = len(records)
