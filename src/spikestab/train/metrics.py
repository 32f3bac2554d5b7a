"""Metrics as JSON lines, one record per line, trimmed back to a checkpoint's line count on resume."""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import atomic_write_text, strict_json


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSONL file; a last line without its newline (a process killed while writing it)
    is left out when it does not parse."""
    p = Path(path)
    if not p.exists():
        return []
    text = p.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    if lines:
        try:
            records.append(json.loads(lines[-1]))
        except json.JSONDecodeError:
            if text.endswith("\n"):
                raise
    return records


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
