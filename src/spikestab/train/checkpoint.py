"""Reading a run's checkpoint files (``checkpoint.pt`` and the ``checkpoint.prev.pt`` it replaced); they
are written by ``files.atomic_torch_save``, so an interrupted write never leaves a half-written one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..dynamics import NeuronState
from ..files import previous_path
from ..neurons.cuba import CubaState
from ..neurons.slstm import SLSTMState

# the classes a checkpoint may hold besides tensors and plain data: the language model's carried states
# (NamedTuples of tensors: unpickling one only builds a tuple)
CHECKPOINT_CLASSES = (NeuronState, CubaState, SLSTMState)
# what every run checkpoint holds (``state.RunState.checkpoint``); one without them cannot be resumed
RUN_KEYS = ("config", "model", "optimizer", "rng", "acc", "metrics_lines", "finished", "epoch", "global_step")


def missing_keys(ck: object) -> list[str]:
    """The ``RUN_KEYS`` a loaded run checkpoint lacks (all of them for anything but a dict)."""
    return [k for k in RUN_KEYS if not isinstance(ck, dict) or k not in ck]


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by ``atomic_torch_save``; a corrupt file is a clear ValueError. Only
    tensors, plain data and ``CHECKPOINT_CLASSES`` are unpickled (``weights_only=True``): a crafted file
    cannot run code."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(CHECKPOINT_CLASSES)):
            return torch.load(path, map_location="cpu", weights_only=True)
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
        if missing_keys(ck):
            problems.append(f"checkpoint {str(candidate)!r} lacks {missing_keys(ck)} (not a complete run checkpoint)")
            continue
        if candidate != path:
            log(
                f"warning: {problems[0]}; falling back to the previous checkpoint {candidate} "
                f"(epoch {ck['epoch']}, step {ck['global_step']})"
            )
        return ck, candidate
    if all(p.endswith("is missing") for p in problems):
        return None
    raise ValueError(
        f"{'; '.join(problems)}: no readable checkpoint to resume from (move the folder away and "
        f"start again, or choose another --out)"
    )
