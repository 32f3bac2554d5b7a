"""The run folder (docs/run_folder.md): where a run writes, what it refuses to overwrite, and what it
needs to continue.

``checkpoint.pt`` (model, optimiser, RNG, epoch, position inside the epoch, language-model state, epoch
totals, metrics line count) is written atomically every ``checkpoint_every`` steps and at the end of every
epoch, keeping the one it replaces as ``checkpoint.prev.pt``; ``best.pt`` holds the weights of the epoch
with the best validation loss; ``config.json``, ``stability.json`` and ``results.json`` are strict JSON."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..files import atomic_torch_save, atomic_write_json, previous_path, remove_stale_temporaries
from ..models import load_model_state
from .checkpoint import load_checkpoint, load_latest_checkpoint
from .config import TrainConfig, with_defaults
from .loggers import open_loggers
from .metrics import MetricsLog


def check_out_path(out: str | Path) -> None:
    """ValueError unless ``out`` is (or can be created as) a folder: neither it nor a parent a file."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == out else f"cannot be created: {str(p)!r} is a file"
                raise ValueError(f"out {str(out)!r} {where}, not a folder; choose a folder for the run (--out)")
            return


class RunFolder:
    """The files of one run under ``out``; ``writes=False`` (ranks > 0 of a data-parallel run) reads
    what it must and writes nothing."""

    def __init__(self, out: str | Path, writes: bool = True, log: Callable[[str], None] = print) -> None:
        self.out = Path(out)
        self.writes = writes
        self.log = log
        check_out_path(self.out)
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
            atomic_torch_save(model.state_dict(), self.best)

    def load_best(self, model: nn.Module) -> bool:
        """Load best.pt into ``model`` (buffer shapes included); False when no epoch has written one."""
        if not self.best.exists():
            return False
        load_model_state(model, load_checkpoint(self.best))
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
