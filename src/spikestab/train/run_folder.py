"""The run folder (docs/run_folder.md): where a run writes, what it refuses to overwrite, and what it
needs to continue.

``checkpoint.pt`` (model, optimiser, RNG, epoch, position inside the epoch, language-model state, epoch
totals, metrics line count) is written atomically every ``checkpoint_every`` steps and at the end of every
epoch, keeping the one it replaces as ``checkpoint.prev.pt``; ``best.pt`` holds the weights of the epoch
with the best validation loss; ``config.json``, ``stability.json`` and ``results.json`` are strict JSON."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..files import atomic_torch_save, atomic_write_json, previous_path, remove_stale_temporaries
from ..models import load_model_state
from .checkpoint import load_checkpoint, load_latest_checkpoint
from .config import TrainConfig, with_defaults
from .device import host
from .loggers import open_loggers
from .metrics import MetricsLog

VIRTUAL_ROOTS = ("/proc", "/sys")  # the kernel's virtual file systems: no run folder there
NAME_MARGIN = 40  # bytes of the longest path a run writes inside its folder (".checkpoint.prev.pt.tmpPID", figures/...)


def check_out_path(out: str | Path) -> None:
    """ValueError unless ``out`` is (or can be created as) a folder for a run: not empty, not under the
    kernel's virtual file systems, within the file system's name and path lengths, neither it nor a
    parent a file, and the nearest existing folder writable."""
    if not str(out).strip():
        raise ValueError("out is empty: name a folder for the run (--out runs/NAME)")
    out = Path(out)
    resolved = out.expanduser().resolve()
    for root in map(Path, VIRTUAL_ROOTS):
        if resolved == root or root in resolved.parents:
            raise ValueError(
                f"out {str(out)!r} is under {root}, a virtual file system: choose a folder on disk (--out)"
            )
    existing = next((p for p in (out, *out.parents) if _exists(p)), Path.cwd())
    _check_lengths(out, resolved, existing)
    if not existing.is_dir():
        where = "is a file" if existing == out else f"cannot be created: {str(existing)!r} is a file"
        raise ValueError(f"out {str(out)!r} {where}, not a folder; choose a folder for the run (--out)")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"out {str(out)!r} cannot be written: {str(existing)!r} is not writable; choose another --out")


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; False for one the OS cannot even look up (a name too long)."""
    try:
        return path.exists()
    except OSError:
        return False


def _check_lengths(out: Path, resolved: Path, existing: Path) -> None:
    """ValueError for a folder name or a path longer than the file system of ``existing`` allows."""
    name_max, path_max = os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    longest = max(resolved.parts, key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(longest)) > name_max:
        raise ValueError(
            f"out {str(out)[:60]!r}... has a folder name of {len(os.fsencode(longest))} bytes; the file system "
            f"allows {name_max}: choose a shorter --out"
        )
    if len(os.fsencode(str(resolved))) + NAME_MARGIN > path_max:
        raise ValueError(
            f"out {str(out)[:60]!r}... is {len(os.fsencode(str(resolved)))} bytes long as an absolute path; the "
            f"file system allows {path_max} (less {NAME_MARGIN} for the run's files): choose a shorter --out"
        )


class RunFolder:
    """The files of one run under ``out``; ``writes=False`` (ranks > 0 of a data-parallel run) reads
    what it must and writes nothing."""

    def __init__(self, out: str | Path, writes: bool = True, log: Callable[[str], None] = print) -> None:
        check_out_path(out)
        self.out = Path(out)
        self.writes = writes
        self.log = log
        self.checkpoint = self.out / "checkpoint.pt"
        self.best = self.out / "best.pt"
        self.results = self.out / "results.json"

    def check(self, cfg: TrainConfig, resume: bool) -> dict | None:
        """Refuse to overwrite a run; on resume, refuse a run written by a different configuration (epochs
        may differ: a run continues, or a finished one is extended, to ``cfg.epochs``). Returns the newest
        readable checkpoint (``checkpoint.pt``, else ``checkpoint.prev.pt`` with a message), None for a
        fresh start (said on resume). Writes nothing."""
        cfg_path = self.out / "config.json"
        if not resume:
            if any(p.exists() for p in (self.checkpoint, previous_path(self.checkpoint), cfg_path)):
                raise ValueError(
                    f"out {str(self.out)!r} already holds a run; pass --resume to continue it or choose another --out"
                )
            return None
        found = load_latest_checkpoint(self.checkpoint, self.log)
        if found is None:
            if cfg_path.exists():
                compare(cfg, TrainConfig.from_json(cfg_path).result_fields(), cfg_path)
            self.log(f"resume: no checkpoint in {self.out} yet, starting a fresh run")
            return None
        ck, where = found
        compare(cfg, ck["config"], where)
        if ck["epoch"] > cfg.epochs:
            raise ValueError(
                f"cannot resume {str(where)!r} with epochs={cfg.epochs}: it has trained "
                f"{ck['epoch']} epochs already (pass --epochs {ck['epoch']} or more)"
            )
        return ck

    def open(self, resume: bool, log: Sequence[str] = ()) -> MetricsLog:
        """Create the folder; on resume, remove the temporaries of writes a killed run left unfinished (also
        of one killed before its first checkpoint). Returns the metrics log, copied to the loggers ``log``
        names (``loggers.py``: metrics.csv, tensorboard/)."""
        if self.writes:
            self.out.mkdir(parents=True, exist_ok=True)
            if resume:
                remove_stale_temporaries(self.out)
        loggers = open_loggers(log, self.out) if self.writes else []
        return MetricsLog(self.out / "metrics.jsonl", enabled=self.writes, loggers=loggers)

    def write_json(self, name: str, obj: Any) -> None:
        """``obj`` as strict JSON in ``out/name`` (this process writes)."""
        if self.writes:
            atomic_write_json(obj, self.out / name)

    def save_checkpoint(self, state: dict) -> None:
        """checkpoint.pt, keeping the one it replaces as checkpoint.prev.pt (resume falls back to it)."""
        if self.writes:
            atomic_torch_save(state, self.checkpoint, keep_previous=True)

    def save_best(self, model: nn.Module) -> None:
        if self.writes:
            atomic_torch_save(host(model.state_dict()), self.best)  # CPU tensors: loads on any device

    def load_best(self, model: nn.Module) -> bool:
        """Load best.pt into ``model`` (buffer shapes included); False when no epoch has written one."""
        if not self.best.exists():
            return False
        try:
            load_model_state(model, load_checkpoint(self.best))
        except (RuntimeError, KeyError, TypeError) as err:
            raise ValueError(
                f"{str(self.best)!r} does not hold this run's model weights ({type(err).__name__}: "
                f"{' '.join(str(err).split())}); move it away to test the last weights instead"
            ) from None
        return True

    def kept_checkpoint(self) -> str:
        """Which good checkpoint a stopped run keeps, in words."""
        if self.checkpoint.exists():
            return (
                f"the last good checkpoint (step {load_checkpoint(self.checkpoint)['global_step']}) is kept "
                f"in {self.checkpoint}"
            )
        return "no checkpoint had been written yet"


def compare(cfg: TrainConfig, saved: dict, where: Path) -> None:
    """ValueError unless ``saved`` (a stored config's result fields) matches ``cfg`` (epochs aside)."""
    mine = cfg.result_fields()
    saved = with_defaults(saved)  # a field added since the run was written: it behaved as the default
    diff = sorted(k for k in set(saved) | set(mine) if k != "epochs" and saved.get(k) != mine.get(k))
    if diff:
        detail = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {mine.get(k)!r}" for k in diff)
        raise ValueError(f"cannot resume {str(where)!r}: it was written by a different config ({detail})")
