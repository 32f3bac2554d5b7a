"""The training loop: AdamW, clipping, per-step cross-entropy, sparsity loss, val/best/test, checkpoints.

Nothing a run did is lost: the run folder (``run_folder.py``) holds a checkpoint written atomically every
``checkpoint_every`` steps and at the end of every epoch, and ``Trainer.fit(resume=True)`` continues from
it to the same final weights as an uninterrupted run with the same seed. A non-finite loss, gradient or
update stops the run or skips the step (``nonfinite.py``); the stopped run's results.json says why.

Epochs are numbered from 0 in metrics.jsonl and results.json (``best_epoch``, -1 when no epoch had a
finite validation loss) and from 1 on the console ("epoch 1/10").

A data-parallel run (``distributed.py``) sets ``Trainer.parallel``: its batch is sharded, its forward pass
goes through DistributedDataParallel, its step metrics are averaged over the ranks, and only rank 0
stabilises, evaluates and writes (``writes``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sized
from typing import Any

import torch
from torch import Tensor

from ..models import build_model, load_model_state
from ..neurons import NeuronState
from ..regularizers import SparsityLoss, parse_sparsity
from . import nonfinite as nf
from .config import TrainConfig
from .evaluate import evaluate, sample_activity
from .metrics import MetricsLog
from .progress import Progress
from .run_folder import RunFolder
from .start import initialise
from .step import Parallel, add_step, epoch_record, make_optimizer, new_totals, train_step
from .task import SCORES, load_config_task, network_config, probe_set, train_batches

# re-exported: the names callers have imported from this module
__all__ = ["EpochHook", "NonFiniteError", "StepHook", "Trainer", "load_config_task", "load_model_state"]

NonFiniteError = nf.NonFiniteError
StepHook = Callable[["Trainer", int], None]
EpochHook = Callable[["Trainer", dict], None]

# the counters a checkpoint holds besides the model, the optimiser and the RNG
RESUMED = ("epoch", "step_in_epoch", "global_step", "states", "best_val", "best_epoch", "train_seconds", "stability",
           "skipped_steps", "skipped_in_a_row")


class Trainer:
    """Train one configuration on one task, writing everything under ``cfg.out``.

    ``task`` defaults to ``load_config_task(cfg)``; ``on_step(trainer, global_step)`` is called after
    every optimisation step (and after any checkpoint of that step), e.g. to interrupt a run in tests;
    ``on_epoch(trainer, record)`` after every epoch's checkpoint with that epoch's metrics record (a
    sweep reports the objective to its pruner there; an exception it raises stops the run, checkpoint kept).
    """

    def __init__(self, cfg: TrainConfig, task: Any = None, on_step: StepHook | None = None,
                 log: Callable[[str], None] = print, on_epoch: EpochHook | None = None) -> None:
        self.cfg = cfg
        self.on_step, self.on_epoch, self.log = on_step, on_epoch, log
        self.folder = RunFolder(cfg.out, log=log)  # checks --out before any data loads
        self.out = self.folder.out
        if cfg.threads is not None:
            # tiny per-step ops: on a shared CPU one thread is often many times faster than two
            torch.set_num_threads(cfg.threads)
        self.task = task if task is not None else load_config_task(cfg)
        self.kind: str = self.task.kind
        torch.manual_seed(cfg.seed)
        self.model = build_model(network_config(cfg, self.task), self.kind)
        self.sparsity: SparsityLoss | None = (
            parse_sparsity(cfg.sparsity, len(cfg.layers), cfg.epochs) if cfg.sparsity else None
        )
        self.optimizer = make_optimizer(self.model, cfg)
        self.states: list[NeuronState] | None = None
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.best_val, self.best_epoch = math.inf, -1
        self.train_seconds = 0.0
        self.stability: dict | None = None
        self.skipped_steps = 0  # optimiser steps skipped for a non-finite loss or gradient
        self.skipped_in_a_row = 0
        self.watch = nf.LossWatch(log)
        self.last_checkpoint: dict | None = None  # which step and epoch the newest checkpoint holds
        self.totals = new_totals(len(cfg.layers))
        self.parallel: Parallel | None = None  # set by train.distributed for data-parallel runs

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (one process, or rank 0)."""
        return self.parallel is None or self.parallel.rank == 0

    # ---------------------------------------------------------------- batches and stabilisation
    def batches_per_epoch(self) -> int:
        batches = train_batches(self.task, self.cfg, 0)
        return len(batches) if isinstance(batches, Sized) else sum(1 for _ in batches)

    def first_batch(self) -> Tensor:
        """The model input of the first training batch (x [T, B, N] or tokens [T, B])."""
        return next(iter(train_batches(self.task, self.cfg, 0)))[0]

    def probe_set(self) -> tuple[Tensor, Tensor] | None:
        """The labelled samples the recipe chooses its regime on (``task.probe_set``)."""
        return probe_set(self.task, self.cfg.batch_size, self.cfg.seed)

    def stabilize(self) -> dict:
        """Calibrate, stabilise and measure the model before its first step (``start.initialise``, on the
        first batch); a new optimiser, since stabilisation may replace parameters."""
        result = initialise(self.model, self.cfg, self.first_batch(), self.probe_set, self.log)
        self.optimizer = make_optimizer(self.model, self.cfg)
        return result

    # ---------------------------------------------------------------- one step
    def train_step(self, batch: tuple[Tensor, Tensor], epoch_float: float) -> dict:
        """One optimisation step (``step.train_step``) on the run's model, optimiser and language-model
        state; an applied step's values go into the epoch totals, a non-finite one is counted as skipped."""
        rec, self.states, correct = train_step(self.model, self.optimizer, self.cfg, self.sparsity, self.parallel,
                                               batch, self.states, epoch_float)
        if rec["nonfinite"] is not None:
            self.totals["skipped"] = self.totals.get("skipped", 0) + 1
        else:
            add_step(self.totals, rec, correct)
        return rec

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, split: str) -> dict:
        """``evaluate.evaluate`` of the model on ``split``; on ranks > 0 of a data-parallel run, NaN
        placeholders (rank 0 alone evaluates, with the same weights, and reports)."""
        if not self.writes:
            nan = float("nan")
            return {"loss": nan, "rates": [nan] * len(self.cfg.layers), "accuracy": nan, "perplexity": nan}
        return evaluate(self.model, self.task, self.cfg, split)

    def sample_activity(self, split: str = "test", index: int = 0) -> tuple[Tensor | None, list[Tensor]]:
        """One sample's input [T, N] (None for token input) and every layer's spikes [T, H], eval mode."""
        return sample_activity(self.model, self.task, self.cfg, split, index)

    # ---------------------------------------------------------------- checkpoints
    def _state(self, metrics: MetricsLog, finished: bool = False) -> dict:
        return {"config": self.cfg.result_fields(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(), "acc": self.totals,
                "metrics_lines": metrics.lines, "finished": finished, **{k: getattr(self, k) for k in RESUMED},
                "loss_start": self.watch.start, "loss_growth": self.watch.growth}

    def save_checkpoint(self, metrics: MetricsLog, finished: bool = False) -> None:
        """Write checkpoint.pt (rank 0 of a data-parallel run); ``last_checkpoint`` says which step it holds."""
        self.folder.save_checkpoint(self._state(metrics, finished))
        self.last_checkpoint = {"global_step": self.global_step, "epoch": self.epoch}

    def _restore(self, ck: dict, metrics: MetricsLog) -> None:
        load_model_state(self.model, ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"])
        for key in RESUMED:  # a checkpoint written before a counter existed: its start value
            setattr(self, key, ck.get(key, getattr(self, key)))
        self.watch.start, self.watch.growth = ck.get("loss_start"), ck.get("loss_growth")
        self.totals = {**new_totals(len(self.cfg.layers)), **ck["acc"]}
        metrics.truncate(ck["metrics_lines"])
        self.last_checkpoint = {"global_step": self.global_step, "epoch": self.epoch}

    def check_out_dir(self, resume: bool) -> dict | None:
        """``RunFolder.check``: refuse to overwrite a run or to resume a different one; the checkpoint to
        continue from (None: a fresh start). Writes nothing."""
        return self.folder.check(self.cfg, resume)

    # ---------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> dict:
        """Train (or continue) to the configured number of epochs, then test the best-val checkpoint."""
        self.folder.writes = self.writes
        ck = self.check_out_dir(resume) if self.writes else None
        if self.parallel is not None:  # every rank continues rank 0's checkpoint
            ck = self.parallel.broadcast(ck)
        metrics = self.folder.open(resume)
        if ck is None:
            self._start(metrics)
        elif not self._continue(ck, metrics):
            return self._finish(metrics, already=True)
        self.folder.write_json("config.json", self.cfg.to_dict())
        if self.parallel is not None:
            self.parallel.start(self)
        n_batches = self.batches_per_epoch()
        stopped = False
        self.model.train()
        while self.epoch < self.cfg.epochs and not stopped:
            stopped = self._train_epoch(metrics, n_batches)
            if stopped and self.step_in_epoch < n_batches:
                self.log(f"time limit of {self.cfg.max_minutes} min reached in epoch {self.epoch + 1}/"
                         f"{self.cfg.epochs} after batch {self.step_in_epoch}")
            self._end_epoch(metrics)
        return self._finish(metrics, stopped=stopped)

    def _start(self, metrics: MetricsLog) -> None:
        """A fresh run: empty metrics, the seed, and (rank 0) stabilisation written to stability.json."""
        metrics.truncate(0)
        torch.manual_seed(self.cfg.seed)  # training randomness never depends on what ran before fit()
        if self.writes:  # rank 0 stabilises; parallel.start gives the others its weights
            self.stability = self.stabilize()
            self.folder.write_json("stability.json", self.stability)

    def _continue(self, ck: dict, metrics: MetricsLog) -> bool:
        """Restore a checkpoint; False when it finished at ``cfg.epochs`` already (nothing to train)."""
        self._restore(ck, metrics)
        cfg = self.cfg
        if ck["finished"] and self.epoch >= cfg.epochs:
            return False
        if ck["finished"]:
            metrics.truncate(metrics.lines - 1)  # the finished run's test record: testing comes at the end
            self.log(f"extending the finished run {self.out} from {self.epoch} to {cfg.epochs} epochs")
        else:
            self.log(f"resuming {self.out} at epoch {self.epoch + 1}/{cfg.epochs}, batch {self.step_in_epoch} "
                     f"done ({self.global_step} steps in all)")
        return True

    def _train_epoch(self, metrics: MetricsLog, n_batches: int) -> bool:
        """The rest of the current epoch's steps; True when the time limit stopped it."""
        cfg = self.cfg
        deadline = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
        bar = Progress(n_batches, f"epoch {self.epoch + 1}/{cfg.epochs}", enabled=cfg.progress,
                       start=self.step_in_epoch)
        if self.step_in_epoch == 0:
            self.states = None  # a language model reads the text from its start each epoch
        stopped, t0 = False, time.monotonic()
        for i, batch in enumerate(train_batches(self.task, cfg, self.epoch)):
            if i < self.step_in_epoch:
                continue  # batches done before the checkpoint being resumed
            rec = self.train_step(batch, self.epoch + i / n_batches)
            self.step_in_epoch, self.global_step = i + 1, self.global_step + 1
            self._record_step(metrics, rec, n_batches)
            bar.update(1, loss=rec["loss"])
            elapsed = self.train_seconds + time.monotonic() - t0
            if cfg.eval_every and self.global_step % cfg.eval_every == 0 and i + 1 < n_batches:
                self._eval_record(metrics, elapsed)
            stopped = deadline is not None and elapsed >= deadline
            if deadline is not None and self.parallel is not None:  # all ranks stop together
                stopped = self.parallel.any(stopped)
            if self.global_step % cfg.checkpoint_every == 0 or stopped:
                self.train_seconds, t0 = elapsed, time.monotonic()
                self.save_checkpoint(metrics)
            if self.on_step is not None:
                self.on_step(self, self.global_step)
            if stopped:
                break
        bar.close()
        self.train_seconds += time.monotonic() - t0
        return stopped

    def _record_step(self, metrics: MetricsLog, rec: dict, n_batches: int) -> None:
        """A step's metrics record; a non-finite step is counted as skipped or stops the run."""
        if rec["nonfinite"] is not None:
            self._nonfinite_step(metrics, rec, n_batches)
            return
        self.skipped_in_a_row = 0
        self.watch(rec["task_loss"], self.global_step, self.epoch)
        metrics.write({"kind": "step", "epoch": self.epoch, "step": self.global_step,
                       **{k: v for k, v in rec.items() if k != "nonfinite"}})

    def _nonfinite_step(self, metrics: MetricsLog, rec: dict, n_batches: int) -> None:
        """A step with a non-finite loss, gradient or update: record it; skip it (``on_nonfinite="skip"``,
        a finite model) or stop the run (NonFiniteError, after writing results.json; no checkpoint)."""
        info = rec["nonfinite"]
        self.skipped_in_a_row += 1
        values = {k: v for k, v in rec.items() if k != "nonfinite"}
        if nf.skips(self.cfg.on_nonfinite, info, self.skipped_in_a_row):
            self.skipped_steps += 1
            metrics.write({"kind": "step", "epoch": self.epoch, "step": self.global_step, **values,
                           "skipped": True, "nonfinite": info})
            return
        why, hint = nf.why_stopped(self.cfg.on_nonfinite, info, self.skipped_in_a_row)
        where = (f"step {self.global_step} (epoch {self.epoch + 1}/{self.cfg.epochs}, "
                 f"batch {self.step_in_epoch}/{n_batches})")
        message = (f"training stopped at {where}: {why}; {self.folder.kept_checkpoint()}; results in "
                   f"{self.folder.results} ({hint})")
        record = {"step": self.global_step, "epoch": self.epoch, "batch": self.step_in_epoch, **info,
                  "message": message}
        metrics.write({"kind": "nonfinite", **record, **values})
        val, test = self._best_scores()
        self.folder.write_json("results.json", {**self._results(val, test, stopped=False),
                                                "stopped_by_nonfinite": record})
        raise nf.NonFiniteError(message, record)

    def _best_scores(self) -> tuple[dict | None, dict | None]:
        """(val, test) of best.pt, None when no epoch wrote one; the model keeps its last weights."""
        last = {k: v.clone() for k, v in self.model.state_dict().items()}
        if not self.folder.load_best(self.model):
            return None, None
        test, val = self.evaluate("test"), self.evaluate("val")
        self.model.load_state_dict(last)
        return val, test

    def _results(self, val: dict | None, test: dict | None, stopped: bool) -> dict:
        return {
            "task": self.cfg.task, "config": self.cfg.to_dict(), "epochs_done": self.epoch,
            "global_steps": self.global_step, "best_epoch": self.best_epoch, "val": val, "test": test,
            "train_seconds": self.train_seconds, "stopped_by_time_limit": stopped, "stability": self.stability,
            "skipped_steps": self.skipped_steps, "loss_growth": self.watch.growth, "stopped_by_nonfinite": None,
        }

    def _eval_record(self, metrics: MetricsLog, train_seconds: float) -> None:
        """A mid-epoch validation point (the best checkpoint is still chosen at epoch ends)."""
        val = self.evaluate("val")
        score = SCORES[self.kind]
        metrics.write({"kind": "eval", "epoch": self.epoch, "step": self.global_step, "val_loss": val["loss"],
                       f"val_{score}": val[score], "val_rates": val["rates"], "train_seconds": train_seconds})
        self.log(f"step {self.global_step}: val loss {val['loss']:.4f}, val {score} {val[score]:.4g}")

    def _end_epoch(self, metrics: MetricsLog) -> None:
        """Validate, record the epoch, keep best.pt, checkpoint, then call ``on_epoch``."""
        val = self.evaluate("val")
        weight = float(self.sparsity.schedule(self.epoch + 1)) if self.sparsity else 0.0
        rec = epoch_record(self.totals, self.kind, val, epoch=self.epoch, step=self.global_step,
                           sparsity_weight=weight, train_seconds=self.train_seconds)
        metrics.write(rec)
        if val["loss"] < self.best_val:
            self.best_val, self.best_epoch = val["loss"], self.epoch
            self.folder.save_best(self.model)
        summary = (f"val perplexity {val['perplexity']:.2f}" if self.kind == "language"
                   else f"val acc {val['accuracy']:.4f}")
        train = "(no step applied)" if rec["train_loss"] is None else f"{rec['train_loss']:.4f}"
        skipped = f", {rec['skipped_steps']} steps skipped (non-finite)" if rec["skipped_steps"] else ""
        self.log(f"epoch {self.epoch + 1}/{self.cfg.epochs}: train loss {train}, val loss "
                 f"{val['loss']:.4f}, {summary}, rates {[round(r, 3) for r in val['rates']]}{skipped}")
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.totals = new_totals(len(self.cfg.layers))
        self.save_checkpoint(metrics)
        if self.on_epoch is not None:
            self.on_epoch(self, rec)

    def _finish(self, metrics: MetricsLog, stopped: bool = False, already: bool = False) -> dict:
        """Test the best-val weights (the last ones when no epoch had a finite validation loss); write
        results.json; keep the last weights in the model."""
        last = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.folder.load_best(self.model)
        test = self.evaluate("test")
        val = self.evaluate("val")
        self.model.load_state_dict(last)
        results = self._results(val, test, stopped)
        if not self.writes:
            return results
        if not already:
            metrics.write({"kind": "test", "step": self.global_step, **{f"test_{k}": v for k, v in test.items()}})
            self.save_checkpoint(metrics, finished=True)
        self.folder.write_json("results.json", results)
        return results
