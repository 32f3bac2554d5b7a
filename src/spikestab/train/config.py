"""Training configuration: one flat, JSON-able dataclass, validated before any work starts."""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from ..data.tasks import TASKS as TASK_LOADERS
from ..dynamics import check_reset
from ..models import NETS, parse_layers
from ..stability.regime import validate_regime
from ..stability.stabilize import MODES, RECIPE, resolve_conditions
from ..surrogate import SHAPES, canonical_shape

__all__ = ["TASKS", "TrainConfig", "parse_conditions", "parse_layers", "with_defaults"]

TASKS = tuple(TASK_LOADERS)  # the names data.load_task accepts
ON_NONFINITE = ("stop", "skip")
LR_MAX = 3.4e37  # AdamW's first update is lr / (1 - beta1) = 10 lr, and float32 ends at 3.4e38

# fields that do not change what a run computes: they may differ when a run is resumed
NON_RESULT_FIELDS = ("out", "data_dir", "checkpoint_every", "progress", "max_minutes", "threads")


def parse_conditions(spec: str | list | tuple | None) -> tuple[str, ...]:
    """``I,II,III,IV`` -> ("I", "II", "III", "IV"); ``auto`` -> ("auto",) (the recommended recipe, kept by
    name so a run records that it asked for it); ``none``, empty or None -> ()."""
    if not spec or spec == "none" or list(spec) == ["none"]:  # None, "", (), [] (a saved config's list)
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = tuple(str(c).strip() for c in items)
    if items == ("auto",):
        return items
    try:
        resolve_conditions(items)
    except ValueError as err:
        raise ValueError(f"stabilize must be 'auto', 'none' or a comma-separated list of conditions: {err}") from None
    return items


@dataclass
class TrainConfig:
    """Everything a training run depends on (plus where it writes)."""

    task: str = "sl-mnist"
    data_dir: str | None = None
    task_options: dict = field(default_factory=dict)
    time_repeat: int = 1
    input_dropout: float = 0.0
    net: str = "lif"
    layers: tuple[int, ...] = (128, 128)
    recurrent: bool = True
    tau: float = 20.0
    threshold: float = 1.0
    reset: str = "subtract"
    dropout: float = 0.1
    sg: str = "fast-sigmoid"
    dampening: float = 1.0
    sharpness: float = 1.0
    tail: float | None = None
    stabilize: tuple[str, ...] = ("auto",)  # the recommended recipe; () or "none": off
    stability_mode: str = "measured"
    regime: str = "auto"  # the recipe's start: auto (measured on a labelled probe set), dense or sparse
    init_rate: float | None = None
    sparsity: str | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    paper_weight_decay: bool = False
    clip_norm: float = 1.0
    on_nonfinite: str = "stop"  # a non-finite loss or gradient: "stop" the run, or "skip" that optimiser step
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    seq_len: int = 100
    seed: int = 0
    data_seed: int = 0
    backend: str = "auto"
    time_checkpoint: int = 0  # > 0: spiking layers recompute segments of this many steps in backward
    out: str = "runs/train"
    checkpoint_every: int = 50
    eval_every: int | None = None
    max_minutes: float | None = None
    progress: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        self.layers = parse_layers(self.layers)
        self.stabilize = parse_conditions(self.stabilize)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and its accepted range."""
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if self.net not in NETS:
            raise ValueError(f"net must be one of {sorted(NETS)}, got {self.net!r}")
        if self.net == "slstm" and (self.stabilize or self.init_rate is not None):
            raise ValueError("net 'slstm' takes stabilize 'none' and no init_rate: the stability conditions and the "
                             f"rate calibration are for LIF/ALIF layers (got stabilize={list(self.stabilize)!r}, "
                             f"init_rate={self.init_rate!r})")
        if canonical_shape(self.sg) not in SHAPES:
            raise ValueError(f"sg must be one of {sorted(SHAPES)}, got {self.sg!r}")
        check_reset(self.reset)
        if self.on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {self.on_nonfinite!r}")
        if self.stability_mode not in MODES:
            raise ValueError(f"stability_mode must be one of {list(MODES)}, got {self.stability_mode!r}")
        validate_regime(self.regime)
        if self.regime != "auto" and (not self.stabilize or resolve_conditions(self.stabilize) != RECIPE):
            raise ValueError(f"regime {self.regime!r} applies to the recommended recipe (stabilize 'auto') only, "
                             f"got stabilize={list(self.stabilize)!r}")
        positive = {"lr": self.lr, "tau": self.tau, "threshold": self.threshold, "dampening": self.dampening,
                    "sharpness": self.sharpness, "clip_norm": self.clip_norm}
        for name, val in positive.items():
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {val!r}")
        if self.lr > LR_MAX:
            raise ValueError(f"lr must be a finite number in (0, {LR_MAX:g}], got {self.lr!r} (AdamW's first step "
                             f"is lr / (1 - 0.9), which must fit in float32)")
        ints = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                "seq_len": self.seq_len, "time_repeat": self.time_repeat, "checkpoint_every": self.checkpoint_every}
        for name, val in ints.items():
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {val!r}")
        for name in ("dropout", "input_dropout"):
            val = getattr(self, name)
            if not (isinstance(val, (int, float)) and 0.0 <= val < 1.0):
                raise ValueError(f"{name} must be in [0, 1), got {val!r}")
        if not (isinstance(self.weight_decay, (int, float)) and 0.0 <= self.weight_decay < 1.0):
            raise ValueError(f"weight_decay must be in [0, 1), got {self.weight_decay!r}")
        if self.init_rate is not None and not 0.0 < self.init_rate < 1.0:
            raise ValueError(f"init_rate must be in (0, 1), got {self.init_rate!r}")
        if self.tail is not None and not (math.isfinite(self.tail) and self.tail > 1.0):
            raise ValueError(f"tail must be a finite q > 1, got {self.tail!r}")
        if self.eval_every is not None and (not isinstance(self.eval_every, int) or self.eval_every < 1):
            raise ValueError(f"eval_every must be None (once per epoch) or an integer >= 1, got {self.eval_every!r}")
        if (
            not isinstance(self.time_checkpoint, int)
            or isinstance(self.time_checkpoint, bool)
            or self.time_checkpoint < 0
        ):
            raise ValueError(f"time_checkpoint must be an integer >= 0 (0: off), got {self.time_checkpoint!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be None (torch's default) or an integer >= 1, got {self.threads!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes!r}")
        for name in ("seed", "data_seed"):
            val = getattr(self, name)
            if not isinstance(val, int) or isinstance(val, bool) or val < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {val!r}")
        if self.sparsity:
            from ..regularizers import parse_sparsity

            parse_sparsity(self.sparsity, len(self.layers), self.epochs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        d["stabilize"] = list(self.stabilize)
        return d

    def result_fields(self) -> dict:
        """The fields that determine the run's results (compared on ``--resume``)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}; accepted keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {str(p)!r} does not exist")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {str(p)!r} is not valid JSON: {err}") from None
        if not isinstance(d, dict):
            raise ValueError(f"config file {str(p)!r} must hold a JSON object")
        return cls.from_dict(d)


# result fields with a plain default: a saved config that lacks one was written before the field existed,
# and behaved as that default (resume and sweep continuation compare with it filled in)
DEFAULT_RESULT_FIELDS = {f.name: (list(f.default) if isinstance(f.default, tuple) else f.default)
                         for f in fields(TrainConfig) if f.name not in NON_RESULT_FIELDS and f.default is not MISSING}


def with_defaults(saved: dict) -> dict:
    """``saved`` (a stored config dict) with every result field it lacks set to that field's default."""
    return {**{k: v for k, v in DEFAULT_RESULT_FIELDS.items() if k not in saved}, **saved}
