"""Atomic writes (tmp file + os.replace) so that an interrupted run never leaves a half-written file."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = _tmp_path(path)
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(text: str, path: str | Path) -> None:
    path = Path(path)
    tmp = _tmp_path(path)
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
