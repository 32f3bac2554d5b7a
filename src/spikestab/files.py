"""Files that survive an interruption: atomic writes (temporary file + fsync + rename), strict JSON and
JSON-lines reading. A leaf: the training, sweep, stability and plotting code all write through it."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "atomic_torch_save",
    "atomic_write_json",
    "atomic_write_text",
    "json_safe",
    "previous_path",
    "read_jsonl",
    "remove_stale_temporaries",
    "strict_json",
]


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def previous_path(path: str | Path) -> Path:
    """Where ``atomic_torch_save(..., keep_previous=True)`` keeps the file it replaces:
    ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _atomic_write(path: Path, mode: str, write: Callable[[Any], None], keep_previous: bool = False) -> None:
    """``write(fh)`` into a temporary file in the same folder, fsync, then rename over ``path`` (after moving
    the current ``path`` to ``previous_path(path)`` when ``keep_previous``). A write that fails (disk full,
    Ctrl-C) removes its temporary file and leaves ``path`` as it was."""
    tmp = _tmp_path(path)
    try:
        with open(tmp, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path, keep_previous: bool = False) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``; with
    ``keep_previous`` the file it replaces becomes ``previous_path(path)`` (the last two survive)."""
    _atomic_write(Path(path), "wb", lambda fh: torch.save(obj, fh), keep_previous)


def atomic_write_text(text: str, path: str | Path) -> None:
    """``text`` written atomically (the old file, if any, stays whole until the new one is complete)."""
    _atomic_write(Path(path), "w", lambda fh: fh.write(text))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process left in ``folder``."""
    stale = sorted(Path(folder).glob(".*.tmp[0-9]*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def json_safe(value: Any) -> Any:
    """``value`` with every NaN / inf float (at any depth of dicts, lists and tuples) replaced by None:
    JSON has no NaN, and strict readers refuse the ``NaN`` literal Python would write."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def strict_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``json_safe(obj)`` that can never write a NaN / Infinity literal."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def atomic_write_json(obj: Any, path: str | Path) -> None:
    """Strict JSON (non-finite numbers written as null), written atomically."""
    atomic_write_text(strict_json(obj, indent=2, sort_keys=True) + "\n", path)


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSONL file ([] when it is missing); a last line without its newline (a process
    killed while writing it) is left out when it does not parse."""
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
