"""Atomic writes (tmp file + os.replace) so that an interrupted run never leaves a half-written file."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


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


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by ``atomic_torch_save``; a corrupt file is a clear ValueError."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for truncated/corrupt archives
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(err).__name__}: {err})") from None


def load_latest_checkpoint(path: str | Path, log: Callable[[str], None] = print) -> tuple[dict, Path] | None:
    """The newest readable checkpoint of ``path`` and ``previous_path(path)`` and where it came from; a
    missing or unreadable ``path`` falls back to the previous one with a message (``log``). None when
    neither exists; ValueError when they exist but none can be read."""
    path = Path(path)
    problems = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            problems.append(f"checkpoint {str(candidate)!r} is missing")
            continue
        try:
            ck = load_checkpoint(candidate)
        except ValueError as err:
            problems.append(str(err))
            continue
        if candidate != path:
            log(f"warning: {problems[0]}; falling back to the previous checkpoint {candidate} "
                f"(epoch {ck['epoch']}, step {ck['global_step']})")
        return ck, candidate
    if all(p.endswith("is missing") for p in problems):
        return None
    raise ValueError(f"{'; '.join(problems)}: no readable checkpoint to resume from (move the folder away and "
                     f"start again, or choose another --out)")
