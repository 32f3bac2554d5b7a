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

import time
from collections.abc import Callable, Sized
from typing import Any

import torch
from torch import Tensor

from ..models import build_model, load_model_state
from ..regularizers import SparsityLoss, parse_sparsity
from ..stability.stabilize import to_device
from . import nonfinite as nf
from .config import TrainConfig
from .device import host, kernel_path, restore_rng, rng_state, run_device
from .evaluate import evaluate, sample_activity
from .loggers import check_installed
from .metrics import MetricsLog
from .progress import Progress
from .run_folder import RunFolder
from .start import initialise
from .state import RunState
from .step import Parallel, add_step, epoch_record, make_optimizer, train_step
from .task import SCORES, check_splits, load_config_task, network_config, probe_set, train_batches, with_external_task

# re-exported: the names callers have imported from this module
__all__ = ["EpochHook", "NonFiniteError", "StepHook", "Trainer", "load_config_task", "load_model_state"]

NonFiniteError = nf.NonFiniteError
StepHook = Callable[["Trainer", int], None]
EpochHook = Callable[["Trainer", dict], None]


class Trainer:
    """Train one configuration on one task, writing everything under ``cfg.out``.

    ``task`` defaults to ``load_config_task(cfg)``; a task of ``data.task_from_datasets`` is recorded in
    ``cfg.external_task`` (``task.with_external_task``); ``on_step(trainer, global_step)`` is called after
    every optimisation step (and after any checkpoint of that step), e.g. to interrupt a run in tests;
    ``on_epoch(trainer, record)`` after every epoch's checkpoint with that epoch's metrics record (a
    sweep reports the objective to its pruner there; an exception it raises stops the run, checkpoint kept).
    The run trains on ``cfg.device`` (``device.run_device``; ``device``: the one a data-parallel rank
    takes), where the model, batches, stabilisation, evaluation and metrics follow it.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        task: Any = None,
        on_step: StepHook | None = None,
        log: Callable[[str], None] = print,
        on_epoch: EpochHook | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.cfg = cfg = with_external_task(cfg, task)  # a dataset handed from Python: named in config.json
        self.on_step, self.on_epoch, self.log = on_step, on_epoch, log
        self.folder = RunFolder(cfg.out, log=log)  # checks --out before any data loads
        check_installed(cfg.log)  # --log tensorboard without its package: said before any work
        # a GPU torch does not see: said before any work; ``device``: a data-parallel rank's own GPU
        self.device = device if device is not None else run_device(cfg.device)
        # backend native on a GPU, or bf16 on the C loops: refused here
        self.kernel = kernel_path(cfg.net, self.device, cfg.backend, cfg.precision)
        self.out = self.folder.out
        if cfg.threads is not None:
            # tiny per-step ops: on a shared CPU one thread is often many times faster than two
            torch.set_num_threads(cfg.threads)
        self.task = task if task is not None else load_config_task(cfg)
        check_splits(self.task)  # an empty split or one class: said before any work
        self.kind: str = self.task.kind
        torch.manual_seed(cfg.seed)
        self.model = build_model(network_config(cfg, self.task), self.kind).to(self.device)  # same weights anywhere
        self.sparsity: SparsityLoss | None = (
            parse_sparsity(cfg.sparsity, len(cfg.layers), cfg.epochs) if cfg.sparsity else None
        )
        self.optimizer = make_optimizer(self.model, cfg)
        self.state = RunState(len(cfg.layers), nf.LossWatch(log))  # the counters a checkpoint holds
        self.parallel: Parallel | None = None  # set by train.distributed for data-parallel runs

    @property
    def global_step(self) -> int:
        """Optimisation steps taken so far (skipped ones included)."""
        return self.state.global_step

    @property
    def last_checkpoint(self) -> dict | None:
        """Which step and epoch the newest checkpoint holds (None: none written yet)."""
        return self.state.last_checkpoint

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
        return to_device(next(iter(train_batches(self.task, self.cfg, 0)))[0], self.device)

    def probe_set(self) -> tuple[Tensor, Tensor] | None:
        """The labelled samples the recipe chooses its regime on (``task.probe_set``)."""
        return to_device(probe_set(self.task, self.cfg.batch_size, self.cfg.seed), self.device)

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
        s, batch = self.state, to_device(batch, self.device)
        rec, s.states, correct = train_step(
            self.model, self.optimizer, self.cfg, self.sparsity, self.parallel, batch, s.states, epoch_float
        )
        if rec["nonfinite"] is not None:
            s.totals["skipped"] = s.totals.get("skipped", 0) + 1
        else:
            add_step(s.totals, rec, correct)
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

    def _scores_of_best(self) -> tuple[dict | None, dict | None]:
        """(val, test) of best.pt, (None, None) when no epoch wrote one; the model keeps its last weights."""
        last = {k: v.clone() for k, v in self.model.state_dict().items()}
        if not self.folder.load_best(self.model):
            return None, None
        test, val = self.evaluate("test"), self.evaluate("val")
        self.model.load_state_dict(last)
        return val, test

    def results(self, val: dict | None, test: dict | None, stopped: bool) -> dict:
        """results.json (``RunState.results``) with where the run trained: the device and the kernel its
        spiking layers took there (``device.kernel_path``)."""
        return {**self.state.results(self.cfg, val, test, stopped), "device": str(self.device), "kernel": self.kernel}

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, metrics: MetricsLog, finished: bool = False) -> None:
        """Write checkpoint.pt (rank 0 of a data-parallel run), its tensors on the CPU (it continues on any
        device); ``last_checkpoint`` says which step it holds."""
        ck = self.state.checkpoint(self.cfg, self.model, self.optimizer, metrics.lines, finished)
        self.folder.save_checkpoint(host({**ck, **rng_state(self.device)}))
        self.state.saved()

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
        if ck is None:
            self._prepare()  # before the folder's files: a start that fails leaves none
        metrics = self.folder.open(resume, self.cfg.log)
        try:
            return self._fit(ck, metrics)
        finally:
            metrics.close()

    def _fit(self, ck: dict | None, metrics: MetricsLog) -> dict:
        """``fit`` from checkpoint ``ck`` (None: a fresh start) with the run's metrics log open."""
        if ck is None:
            self._start(metrics)
        elif not self._continue(ck, metrics):
            return self._finish(metrics, already=True)
        self.folder.write_json("config.json", self.cfg.to_dict())
        if self.parallel is not None:
            self.parallel.start(self)
        n_batches, stopped, s = self.batches_per_epoch(), False, self.state
        self.model.train()
        while s.epoch < self.cfg.epochs and not stopped:
            stopped = self._train_epoch(metrics, n_batches)
            if stopped and s.step_in_epoch < n_batches:
                self.log(
                    f"time limit of {self.cfg.max_minutes} min reached in epoch {s.epoch + 1}/{self.cfg.epochs} "
                    f"after batch {s.step_in_epoch}"
                )
            self._end_epoch(metrics)
        return self._finish(metrics, stopped=stopped)

    def _prepare(self) -> None:
        """A fresh run's seed and (rank 0) stabilisation, done before any file of the run is written, so that
        a start that fails (input the conditions refuse, an empty data set) leaves no run behind."""
        torch.manual_seed(self.cfg.seed)  # training randomness never depends on what ran before fit()
        if self.writes:  # rank 0 stabilises; parallel.start gives the others its weights
            self.state.stability = self.stabilize()

    def _start(self, metrics: MetricsLog) -> None:
        """A fresh run's files: empty metrics and (rank 0) stability.json (``_prepare`` stabilised)."""
        metrics.truncate(0)
        if self.writes:
            self.folder.write_json("stability.json", self.state.stability)

    def _continue(self, ck: dict, metrics: MetricsLog) -> bool:
        """Restore a checkpoint; False when it finished at ``cfg.epochs`` already (nothing to train)."""
        s = self.state
        s.restore(ck, self.model, self.optimizer)  # the weights and the optimiser follow the model's device
        restore_rng(ck, self.device)
        s.states = to_device(s.states, self.device)
        metrics.truncate(ck["metrics_lines"])
        if ck["finished"] and s.epoch >= self.cfg.epochs:
            return False
        if ck["finished"]:
            metrics.truncate(metrics.lines - 1)  # the finished run's test record: testing comes at the end
            self.log(f"extending the finished run {self.out} from {s.epoch} to {self.cfg.epochs} epochs")
        elif s.epoch >= self.cfg.epochs:  # e.g. checkpoint.prev.pt of a finished run: its last epoch's end
            self.log(f"resuming {self.out}: all {self.cfg.epochs} epochs trained ({s.global_step} steps), testing")
        else:
            self.log(
                f"resuming {self.out} at epoch {s.epoch + 1}/{self.cfg.epochs}, batch {s.step_in_epoch} done "
                f"({s.global_step} steps in all)"
            )
        return True

    def _train_epoch(self, metrics: MetricsLog, n_batches: int) -> bool:
        """The rest of the current epoch's steps; True when the time limit stopped it."""
        cfg, s = self.cfg, self.state
        deadline = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
        bar = Progress(n_batches, f"epoch {s.epoch + 1}/{cfg.epochs}", enabled=cfg.progress, start=s.step_in_epoch)
        if s.step_in_epoch == 0:
            s.states = None  # a language model reads the text from its start each epoch
        stopped, t0 = False, time.monotonic()
        # sparse batches (the same ones, not built densely) unless a data-parallel run shards them
        for i, batch in enumerate(train_batches(self.task, cfg, s.epoch, sparse=self.parallel is None)):
            if i < s.step_in_epoch:
                continue  # batches done before the checkpoint being resumed
            rec = self.train_step(batch, s.epoch + i / n_batches)
            s.step_in_epoch, s.global_step = i + 1, s.global_step + 1
            self._record_step(metrics, rec, n_batches)
            bar.update(1, loss=rec["loss"])
            elapsed = s.train_seconds + time.monotonic() - t0
            if cfg.eval_every and s.global_step % cfg.eval_every == 0 and i + 1 < n_batches:
                self._eval_record(metrics, elapsed)
            stopped = deadline is not None and elapsed >= deadline
            if deadline is not None and self.parallel is not None:  # all ranks stop together
                stopped = self.parallel.any(stopped)
            if s.global_step % cfg.checkpoint_every == 0 or stopped:
                s.train_seconds, t0 = elapsed, time.monotonic()
                self.save_checkpoint(metrics)
            if self.on_step is not None:
                self.on_step(self, s.global_step)
            if stopped:
                break
        bar.close()
        s.train_seconds += time.monotonic() - t0
        return stopped

    def _record_step(self, metrics: MetricsLog, rec: dict, n_batches: int) -> None:
        """A step's metrics record; a non-finite step is counted as skipped or stops the run."""
        s = self.state
        values = {k: v for k, v in rec.items() if k != "nonfinite"}
        if rec["nonfinite"] is None:
            s.skipped_in_a_row = 0
            s.watch(rec["task_loss"], s.global_step, s.epoch)
            metrics.write(s.record("step", **values))
            return
        s.skipped_in_a_row += 1
        if nf.skips(self.cfg.on_nonfinite, rec["nonfinite"], s.skipped_in_a_row):
            s.skipped_steps += 1
            metrics.write(s.record("step", **values, skipped=True, nonfinite=rec["nonfinite"]))
            return
        self._stop_nonfinite(metrics, rec["nonfinite"], values, n_batches)

    def _stop_nonfinite(self, metrics: MetricsLog, info: dict, values: dict, n_batches: int) -> None:
        """Stop the run at a non-finite step: its metrics record, results.json (best.pt's scores, no new
        checkpoint), then NonFiniteError."""
        s, cfg = self.state, self.cfg
        why, hint = nf.why_stopped(cfg.on_nonfinite, info, s.skipped_in_a_row)
        where = f"step {s.global_step} (epoch {s.epoch + 1}/{cfg.epochs}, batch {s.step_in_epoch}/{n_batches})"
        message = (
            f"training stopped at {where}: {why}; {self.folder.kept_checkpoint()}; results in "
            f"{self.folder.results} ({hint})"
        )
        record = {"step": s.global_step, "epoch": s.epoch, "batch": s.step_in_epoch, **info, "message": message}
        metrics.write({"kind": "nonfinite", **record, **values})
        val, test = self._scores_of_best()
        self.folder.write_json(
            "results.json", {**self.results(val, test, stopped=False), "stopped_by_nonfinite": record}
        )
        raise nf.NonFiniteError(message, record)

    def _eval_record(self, metrics: MetricsLog, train_seconds: float) -> None:
        """A mid-epoch validation point (the best checkpoint is still chosen at epoch ends)."""
        val, score, s = self.evaluate("val"), SCORES[self.kind], self.state
        metrics.write(
            s.record(
                "eval",
                val_loss=val["loss"],
                **{f"val_{score}": val[score]},
                val_rates=val["rates"],
                train_seconds=train_seconds,
            )
        )
        self.log(f"step {s.global_step}: val loss {val['loss']:.4f}, val {score} {val[score]:.4g}")

    def _end_epoch(self, metrics: MetricsLog) -> None:
        """Validate, record the epoch, keep best.pt, checkpoint, then call ``on_epoch``."""
        val, s = self.evaluate("val"), self.state
        weight = float(self.sparsity.schedule(s.epoch + 1)) if self.sparsity else 0.0
        rec = epoch_record(
            s.totals,
            self.kind,
            val,
            epoch=s.epoch,
            step=s.global_step,
            sparsity_weight=weight,
            train_seconds=s.train_seconds,
        )
        metrics.write(rec)
        if val["loss"] < s.best_val:
            s.best_val, s.best_epoch = val["loss"], s.epoch
            self.folder.save_best(self.model)
        score = (
            f"val perplexity {val['perplexity']:.2f}" if self.kind == "language" else f"val acc {val['accuracy']:.4f}"
        )
        train = "(no step applied)" if rec["train_loss"] is None else f"{rec['train_loss']:.4f}"
        skipped = f", {rec['skipped_steps']} steps skipped (non-finite)" if rec["skipped_steps"] else ""
        self.log(
            f"epoch {s.epoch + 1}/{self.cfg.epochs}: train loss {train}, val loss {val['loss']:.4f}, {score}, "
            f"rates {[round(r, 3) for r in val['rates']]}{skipped}"
        )
        s.next_epoch()
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
        results = self.results(val, test, stopped)
        if not self.writes:
            return results
        if not already:
            metrics.write({"kind": "test", "step": self.global_step, **{f"test_{k}": v for k, v in test.items()}})
            self.save_checkpoint(metrics, finished=True)
        self.folder.write_json("results.json", results)
        return results
