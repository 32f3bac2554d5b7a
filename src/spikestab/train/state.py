"""Where a run stands: the counters a checkpoint holds, the epoch's running totals, and what they give
to the checkpoint, the metrics records and results.json."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..models import load_model_state
from ..neurons import NeuronState
from .config import TrainConfig
from .nonfinite import LossWatch
from .step import new_totals

# the counters a checkpoint holds besides the model, the optimiser, the RNG and the epoch totals
RESUMED = (
    "epoch",
    "step_in_epoch",
    "global_step",
    "states",
    "best_val",
    "best_epoch",
    "train_seconds",
    "stability",
    "skipped_steps",
    "skipped_in_a_row",
)


@dataclass
class RunState:
    """A run's position (epoch, batch inside it, optimisation steps), best validation loss, training time,
    stabilisation result, skipped-step counts, a language model's carried state and the epoch totals."""

    n_layers: int
    watch: LossWatch
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    states: list[NeuronState] | None = None  # a language model's state, carried from batch to batch
    best_val: float = math.inf
    best_epoch: int = -1
    train_seconds: float = 0.0
    stability: dict | None = None
    skipped_steps: int = 0  # optimiser steps skipped for a non-finite loss or gradient
    skipped_in_a_row: int = 0
    totals: dict = field(default_factory=dict)
    last_checkpoint: dict | None = None  # which step and epoch the newest checkpoint holds

    def __post_init__(self) -> None:
        self.totals = self.totals or new_totals(self.n_layers)

    def checkpoint(
        self, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, metrics_lines: int, finished: bool
    ) -> dict:
        """checkpoint.pt's content (``saved()`` once it is written)."""
        return {
            "config": cfg.result_fields(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "acc": self.totals,
            "metrics_lines": metrics_lines,
            "finished": finished,
            **{k: getattr(self, k) for k in RESUMED},
            "loss_start": self.watch.start,
            "loss_growth": self.watch.growth,
        }

    def restore(self, ck: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Continue from checkpoint ``ck``: weights, optimiser, RNG and counters (a counter the checkpoint
        predates keeps its start value)."""
        try:
            load_model_state(model, ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            torch.set_rng_state(ck["rng"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise ValueError(
                f"the checkpoint does not fit the model and optimiser of this configuration ({type(err).__name__}: "
                f"{' '.join(str(err).split())}); move the run folder away and start again, or choose another --out"
            ) from None
        for key in RESUMED:
            setattr(self, key, ck.get(key, getattr(self, key)))
        self.watch.start, self.watch.growth = ck.get("loss_start"), ck.get("loss_growth")
        self.totals = {**new_totals(self.n_layers), **ck["acc"]}
        self.saved()

    def saved(self) -> None:
        """The checkpoint of this step is written: ``last_checkpoint`` says so."""
        self.last_checkpoint = {"global_step": self.global_step, "epoch": self.epoch}

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.totals = new_totals(self.n_layers)

    def record(self, kind: str, **values: Any) -> dict:
        """A metrics record of this epoch and step."""
        return {"kind": kind, "epoch": self.epoch, "step": self.global_step, **values}

    def results(self, cfg: TrainConfig, val: dict | None, test: dict | None, stopped: bool) -> dict:
        """results.json: the tested weights' scores and how the run went."""
        return {
            "task": cfg.external_task["name"] if cfg.external_task else cfg.task,
            "config": cfg.to_dict(),
            "epochs_done": self.epoch,
            "global_steps": self.global_step,
            "best_epoch": self.best_epoch,
            "val": val,
            "test": test,
            "train_seconds": self.train_seconds,
            "stopped_by_time_limit": stopped,
            "stability": self.stability,
            "skipped_steps": self.skipped_steps,
            "loss_growth": self.watch.growth,
            "stopped_by_nonfinite": None,
        }
