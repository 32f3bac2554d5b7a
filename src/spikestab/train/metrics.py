"""Metrics as JSON lines, one record per line, trimmed back to a checkpoint's line count on resume."""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import atomic_write_text, strict_json


def read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Append-only JSONL file; ``lines`` is saved in checkpoints so resume can cut what came after."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lines = len(read_jsonl(self.path))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(strict_json(record) + "\n")  # NaN / inf as null
            fh.flush()
        self.lines += 1

    def truncate(self, n_lines: int) -> None:
        """Keep the first ``n_lines`` records (those written before the checkpoint being resumed)."""
        records = read_jsonl(self.path)[:n_lines]
        atomic_write_text("".join(strict_json(r) + "\n" for r in records), self.path)
        self.lines = len(records)
