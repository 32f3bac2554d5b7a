"""The training loop: AdamW, clipping, per-step cross-entropy, sparsity loss, val/best/test, checkpoints.

Nothing a run did is lost: ``checkpoint.pt`` (model, optimiser, RNG, epoch, position inside the epoch,
language-model state, epoch accumulators, metrics line count) is written atomically every
``checkpoint_every`` steps and at the end of every epoch, and ``Trainer.fit(resume=True)`` continues
from it to the same final weights as an uninterrupted run with the same seed.

Non-finite training: a step whose loss or gradient is NaN/inf is never applied. With
``on_nonfinite="stop"`` (the default) the run stops there: ``NonFiniteError`` names the step and the
first layer whose values went non-finite, ``checkpoint.pt`` / ``best.pt`` stay the last good ones and
``results.json`` records why (``stopped_by_nonfinite``). With ``"skip"`` the step is skipped and counted
(``skipped`` in its metrics record, ``skipped_steps`` per epoch and in the results); after
``MAX_SKIPPED_IN_A_ROW`` skipped steps in a row the run stops all the same. An update that makes a
parameter non-finite cannot be taken back, so it stops the run in both modes (before any checkpoint of
those weights). A task loss that climbs past ``LOSS_GROWTH_FACTOR`` times the first step's warns once
(console, and ``loss_growth`` in the results).

Epochs are numbered from 0 in metrics.jsonl and results.json (``best_epoch``, -1 when no epoch had a
finite validation loss) and from 1 on the console ("epoch 1/10").
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import SNNClassifier, SNNConfig, SNNLanguageModel
from ..neurons import NeuronState
from ..regularizers import SparsityLoss, parse_sparsity
from .checkpoint import (
    atomic_torch_save,
    atomic_write_json,
    load_checkpoint,
    load_latest_checkpoint,
    previous_path,
    remove_stale_temporaries,
)
from .config import TrainConfig, with_defaults
from .metrics import MetricsLog
from .progress import Progress

if TYPE_CHECKING:
    from .distributed import Parallel

# every result field's default: a saved config that lacks a field (one added since) ran with its default

StepHook = Callable[["Trainer", int], None]
EpochHook = Callable[["Trainer", dict], None]

LOSS_GROWTH_FACTOR = 10.0  # warn once when a step's task loss exceeds this many times the first step's
MAX_SKIPPED_IN_A_ROW = 25  # on_nonfinite="skip": this many non-finite steps in a row stop the run
PROBE_SAMPLES = 512  # labelled samples the recipe measures its regime on (choose_regime; ~2 points of accuracy)


class NonFiniteError(ValueError):
    """Training met a non-finite loss, gradient or parameter and stopped; ``record`` says where
    (step, epoch, batch, layer, tensor, cause). The ``spikestab`` command reports it as an error (exit 2)."""

    def __init__(self, message: str, record: dict | None = None) -> None:
        super().__init__(message)
        self.record = record or {}


def _first_nonfinite(named: list[tuple[str, Tensor]]) -> str | None:
    """The name of the first tensor (in the given order) with a NaN or inf value, or None."""
    if not named:
        return None
    ok = torch.stack([torch.isfinite(p.detach()).all() for _, p in named])
    if bool(ok.all()):
        return None
    return named[int((~ok).nonzero()[0])][0]


def _layer_of(name: str) -> str:
    """The module path of a parameter name: ``stack.layers.1.weight_hh`` -> ``stack.layers.1``."""
    return name.rpartition(".")[0] or name


def _detach_states(states: list[NeuronState] | None) -> list[NeuronState] | None:
    if states is None:
        return None
    return [type(st)(*(t.detach() if t is not None else None for t in st)) for st in states]


def check_out_path(out: str | Path) -> None:
    """ValueError unless ``out`` is (or can be created as) a folder: neither it nor a parent a file."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == out else f"cannot be created: {str(p)!r} is a file"
                raise ValueError(f"out {str(out)!r} {where}, not a folder; choose a folder for the run (--out)")
            return


_LAST_TASK: dict[str, object] = {}  # the last task loaded, by its data settings (a sweep reuses it per trial)


def load_config_task(cfg: TrainConfig):
    """The task named in the config, read from ``cfg.data_dir`` through ``spikestab.data.load_task``.
    The last task loaded in this process is kept and handed out again for the same data settings (task,
    data_dir, data_seed, time_repeat, input_dropout, task_options): the splits are never modified, and a
    sweep's trials then skip reading and binning the same files every time."""
    from .. import data

    key = json.dumps([cfg.task, cfg.data_dir, cfg.data_seed, cfg.time_repeat, cfg.input_dropout, cfg.task_options],
                     sort_keys=True, default=str)
    if key in _LAST_TASK:
        return _LAST_TASK[key]
    try:
        task = data.load_task(cfg.task, cfg.data_dir, seed=cfg.data_seed, time_repeat=cfg.time_repeat,
                              input_dropout=cfg.input_dropout, **cfg.task_options)
    except FileNotFoundError as err:  # a missing data file is bad input: a clear message, no traceback
        raise ValueError(str(err)) from None
    _LAST_TASK.clear()
    _LAST_TASK[key] = task
    return task


def build_model(cfg: TrainConfig, task) -> nn.Module:
    """SNNClassifier for classification tasks; SNNLanguageModel (embedding = last width) for language."""
    common = dict(
        hidden_sizes=cfg.layers, net=cfg.net, dropout=cfg.dropout, recurrent=cfg.recurrent, tau=cfg.tau,
        threshold=cfg.threshold, reset=cfg.reset, surrogate=cfg.sg, dampening=cfg.dampening,
        sharpness=cfg.sharpness, tail=cfg.tail, backend=cfg.backend, checkpoint=cfg.time_checkpoint or False,
    )
    if task.kind == "language":
        return SNNLanguageModel(SNNConfig(input_size=cfg.layers[-1], output_size=task.output_size, **common))
    return SNNClassifier(SNNConfig(input_size=task.input_size, output_size=task.output_size, **common))


def load_model_state(model: nn.Module, state: dict) -> None:
    """load_state_dict that first reshapes buffers whose shape the stability conditions changed
    (e.g. a scalar SG dampening that condition III made per-neuron)."""
    own = dict(model.named_buffers())
    for name, value in state.items():
        if name in own and own[name] is not None and own[name].shape != value.shape:
            owner, _, attr = name.rpartition(".")
            model.get_submodule(owner).register_buffer(attr, value.clone())
    model.load_state_dict(state)


class Trainer:
    """Train one configuration on one task, writing everything under ``cfg.out``.

    ``task`` defaults to ``load_config_task(cfg)``; ``on_step(trainer, global_step)`` is called after
    every optimisation step (and after any checkpoint of that step), e.g. to interrupt a run in tests;
    ``on_epoch(trainer, record)`` after every epoch's checkpoint with that epoch's metrics record (a
    sweep reports the objective to its pruner there; an exception it raises stops the run, checkpoint kept).
    """

    def __init__(self, cfg: TrainConfig, task=None, on_step: StepHook | None = None,
                 log: Callable[[str], None] = print, on_epoch: EpochHook | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.log = log
        check_out_path(self.out)  # before any data loads
        if cfg.threads is not None:
            # tiny per-step ops: on a shared CPU one thread is often many times faster than two
            torch.set_num_threads(cfg.threads)
        self.task = task if task is not None else load_config_task(cfg)
        self.language = self.task.kind == "language"
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.task)
        self.sparsity: SparsityLoss | None = (
            parse_sparsity(cfg.sparsity, len(cfg.layers), cfg.epochs) if cfg.sparsity else None
        )
        self.optimizer = self._make_optimizer()
        self.states: list[NeuronState] | None = None
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_val = math.inf
        self.best_epoch = -1
        self.train_seconds = 0.0
        self.stability: dict | None = None
        self.skipped_steps = 0  # optimiser steps skipped for a non-finite loss or gradient
        self.skipped_in_a_row = 0
        self.loss_start: float | None = None  # the first step's task loss (the growth warning's reference)
        self.loss_growth: dict | None = None  # where the task loss first passed LOSS_GROWTH_FACTOR x its start
        self.last_checkpoint: dict | None = None  # where the newest checkpoint is and which step it holds
        self._acc = self._new_accumulator()
        # [distributed hook] set by train.distributed for data-parallel runs; None: one process
        self.parallel: Parallel | None = None

    @property
    def writes(self) -> bool:
        """[distributed hook] Whether this process writes the run's files (one process, or rank 0)."""
        return self.parallel is None or self.parallel.rank == 0

    # ---------------------------------------------------------------- setup
    def _decay_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Weight decay on everything but embeddings (docs/theory.md, "Training")."""
        emb = {id(m.weight) for m in self.model.modules() if isinstance(m, nn.Embedding)}
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [p for p in params if id(p) not in emb], [p for p in params if id(p) in emb]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = self._decay_groups()
        # paper_weight_decay: decay applied by hand, not multiplied by lr, so AdamW's own decay is off
        wd = 0.0 if self.cfg.paper_weight_decay else self.cfg.weight_decay
        groups = [{"params": decay, "weight_decay": wd}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=self.cfg.lr)

    def _train_loader(self, epoch: int):
        """Epoch ``epoch``'s batches: the order and input-dropout masks depend only on (seed, epoch)."""
        from .. import data

        if self.language:
            return data.lm_batches(self.task.train, self.cfg.batch_size, self.cfg.seq_len,
                                   time_repeat=self.cfg.time_repeat)
        loader = data.make_loader(self.task.train, self.cfg.batch_size, shuffle=True, seed=self.cfg.seed)
        loader.set_epoch(epoch)
        return loader

    def batches_per_epoch(self) -> int:
        if self.language:
            return sum(1 for _ in self._train_loader(0))
        return len(self._train_loader(0))

    def first_batch(self) -> Tensor:
        """The model input of the first training batch (x [T, B, N] or tokens [T, B])."""
        return next(iter(self._train_loader(0)))[0]

    def probe_set(self) -> tuple[Tensor, Tensor] | None:
        """The first ``PROBE_SAMPLES`` labelled training samples of epoch 0 (inputs [T, B, N], labels [B]),
        on which the recipe chooses its regime; None for a language model or too small a training set."""
        from ..stability.regime import MIN_PROBE_SAMPLES

        if self.language:
            return None
        xs, ys, n = [], [], 0
        for x, y in self._train_loader(0):
            xs.append(x)
            ys.append(y)
            n += y.shape[0]
            if n >= PROBE_SAMPLES:
                break
        if n < MIN_PROBE_SAMPLES:
            return None
        return torch.cat(xs, 1), torch.cat(ys)

    def stabilize(self) -> dict:
        """Calibrate the initial firing rate, then apply the stability conditions at that operating point
        (both on the first batch); measure every layer's initial rate and warn (console and result) when
        a layer is nearly silent or saturated."""
        from ..stability.report import rate_warning

        cfg = self.cfg
        batch = self.first_batch()
        result: dict = {}
        self.model.eval()
        if cfg.init_rate is not None:
            from ..init import calibrate_firing_rate

            calib = calibrate_firing_rate(self.model, batch, rate=cfg.init_rate)
            result["init_rate"] = calib.to_dict() if hasattr(calib, "to_dict") else calib
        if cfg.stabilize:
            from ..stability import RECIPE, resolve_conditions, stabilize

            recipe = {}
            if resolve_conditions(cfg.stabilize) == RECIPE:
                recipe = {"regime": cfg.regime, "probe": self.probe_set() if cfg.regime == "auto" else None}
            report = stabilize(self.model, batch, conditions=cfg.stabilize, mode=cfg.stability_mode, **recipe)
            self.log(str(report))
            result["report"] = report.to_dict()
            result["report_text"] = str(report)
        with torch.no_grad():
            result["initial_rates"] = [z.mean().item() for z in self._forward(batch)[1]]
        warnings = [w for i, r in enumerate(result["initial_rates"]) if (w := rate_warning(i, r))]
        if warnings:
            result["warnings"] = warnings
            for w in warnings:
                self.log(f"warning: {w}")
        self.model.train()
        self.optimizer = self._make_optimizer()  # stabilisation may replace parameters
        return result

    # ---------------------------------------------------------------- one step
    def _forward(self, inputs: Tensor, states=None):
        run = self.model.run if self.parallel is None else self.parallel.run  # [distributed hook] DDP
        if self.language:
            logits, spikes, _, new_states = run(inputs, states)
            return logits, spikes, new_states
        logits, spikes, _ = run(inputs)
        return logits, spikes, None

    @staticmethod
    def _task_loss(logits: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy at every time step, averaged over time and batch (classification targets
        [B] are repeated over time)."""
        T, B, C = logits.shape
        if targets.dim() == 1:
            targets = targets.repeat(T)
        return F.cross_entropy(logits.reshape(T * B, C), targets.reshape(-1))

    def _new_accumulator(self) -> dict:
        return {"loss": 0.0, "task_loss": 0.0, "sparsity_loss": 0.0, "correct": 0, "examples": 0, "steps": 0,
                "rates": [0.0] * len(self.cfg.layers), "grad_norm": 0.0, "skipped": 0}

    def train_step(self, batch: tuple[Tensor, Tensor], epoch_float: float) -> dict:
        """One optimisation step. A step with a non-finite loss or gradient is not applied (its gradients
        are cleared); an update found to have made a parameter non-finite has been applied already. Either
        way the record's ``nonfinite`` describes it (``None`` for a good step) and the epoch accumulators
        leave the step out."""
        inputs, targets = batch
        weight = 1.0  # [distributed hook] this rank's slice of the global batch, and its share of the loss
        if self.parallel is not None:
            inputs, targets, weight = self.parallel.shard(inputs, targets)
        rng = torch.get_rng_state()  # to replay this forward pass if it has to be diagnosed
        states_in = self.states
        logits, spikes, new_states = self._forward(inputs, self.states)
        self.states = _detach_states(new_states)
        task_loss = self._task_loss(logits, targets)
        loss = task_loss
        sp_val, s = 0.0, 0.0
        if self.sparsity is not None:
            sp, s = self.sparsity(spikes, epoch_float)
            loss = loss + sp
            sp_val = float(sp.detach())
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        loss_val, task_val = float(loss.detach()), float(task_loss.detach())
        rates = [z.detach().mean().item() for z in spikes]
        if self.parallel is not None:  # [distributed hook] the global batch's means: every rank decides alike
            loss_val, task_val, sp_val, *rates = self.parallel.mean([loss_val, task_val, sp_val, *rates], weight)
        named = [(n, p) for n, p in self.model.named_parameters() if p.grad is not None]
        params = [p for _, p in named]
        norms = torch.stack([p.grad.norm() for p in params])  # per tensor, before clipping
        index = {id(p): i for i, p in enumerate(params)}
        layer_norms = [
            torch.linalg.vector_norm(norms[[index[id(p)] for p in layer.parameters() if id(p) in index]]).item()
            for layer in self.model.stack.layers
        ]
        grads_finite = bool(torch.isfinite(norms).all() and torch.isfinite(torch.linalg.vector_norm(norms)))
        nonfinite = None
        if not (math.isfinite(loss_val) and grads_finite):
            grad_norm = float(torch.linalg.vector_norm(norms))
            nonfinite = self._diagnose(loss_val, named, norms, inputs, states_in, rng)
            self.optimizer.zero_grad(set_to_none=True)  # the step is not applied
        else:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_norm))
            if self.cfg.paper_weight_decay and self.cfg.weight_decay > 0:
                with torch.no_grad():
                    for p in self._decay_groups()[0]:
                        p.mul_(1.0 - self.cfg.weight_decay)
            self.optimizer.step()
            bad = _first_nonfinite(named)
            if bad is not None:
                nonfinite = {"cause": "update", "tensor": bad, "layer": _layer_of(bad),
                             "what": f"the update made parameter {bad} non-finite"}
        rec = {"loss": loss_val, "task_loss": task_val, "sparsity_loss": sp_val,
               "sparsity_weight": s, "grad_norm": grad_norm, "layer_grad_norms": layer_norms, "rates": rates,
               "nonfinite": nonfinite}
        if nonfinite is not None:
            self._acc["skipped"] = self._acc.get("skipped", 0) + 1
            return rec
        a = self._acc
        a["loss"] += rec["loss"]
        a["task_loss"] += rec["task_loss"]
        a["sparsity_loss"] += sp_val
        a["grad_norm"] += grad_norm
        a["steps"] += 1
        a["rates"] = [r0 + r for r0, r in zip(a["rates"], rates)]
        if not self.language:
            counts = [int((self.model.predict(logits.detach()) == targets).sum()), int(targets.numel())]
            if self.parallel is not None:  # [distributed hook] summed over ranks
                counts = self.parallel.count(counts, weight)
            a["correct"] += counts[0]
            a["examples"] += counts[1]
        return rec

    def _diagnose(self, loss_val: float, named: list[tuple[str, nn.Parameter]], norms: Tensor,
                  inputs: Tensor, states_in, rng: Tensor) -> dict:
        """Where a step with a non-finite loss or gradient went wrong: a non-finite parameter (first in
        forward order); else, for a non-finite loss, the first layer whose forward values (membrane
        voltage, then the logits) are non-finite, replaying the step's forward pass with its dropout
        masks; else the non-finite gradient nearest the output (the first one backward reached)."""
        bad = _first_nonfinite(named)
        if bad is not None:
            return {"cause": "parameter", "tensor": bad, "layer": _layer_of(bad),
                    "what": f"parameter {bad} is non-finite"}
        if not math.isfinite(loss_val):
            after = torch.get_rng_state()
            torch.set_rng_state(rng)
            try:
                with torch.no_grad():
                    out = (self.model.run(inputs, states_in, record_voltage=True) if self.language
                           else self.model.run(inputs, record_voltage=True))
            finally:
                torch.set_rng_state(after)
            logits, volts = out[0], out[2]
            where = "the loss"
            for i, v in enumerate(volts):
                if not torch.isfinite(v).all():
                    layer = f"stack.layers.{i}"
                    where = f"the membrane voltage of {layer} ({type(self.model.stack.layers[i]).__name__})"
                    break
            else:
                layer = None
                if not torch.isfinite(logits).all():
                    layer = "embedding" if self.language else "readout"  # the LM's output projection is tied
                    where = f"the logits ({layer} output)"
            big_name, big = max(((n, p.detach().abs().max().item()) for n, p in named), key=lambda t: t[1])
            return {"cause": "loss", "tensor": None, "layer": layer,
                    "what": f"the training loss is {loss_val} with every parameter finite; the first non-finite "
                            f"values are {where} (largest |parameter| {big:.3g}, in {big_name})"}
        finite = torch.isfinite(norms).tolist()
        bad_grads = [n for (n, _), ok in zip(named, finite) if not ok]
        if not bad_grads:  # every tensor's norm is finite, their total overflows
            return {"cause": "gradient", "tensor": None, "layer": None,
                    "what": "the total gradient norm overflows float32 although every gradient is finite"}
        first = bad_grads[-1]  # backward runs from the output, so the last in forward order came first
        more = f" ({len(bad_grads) - 1} more gradient tensors non-finite)" if len(bad_grads) > 1 else ""
        return {"cause": "gradient", "tensor": first, "layer": _layer_of(first),
                "what": f"the gradient of {first} is non-finite with a finite loss (the first non-finite gradient "
                        f"in backward order){more}"}

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Mean per-step cross-entropy, accuracy (time-averaged logits) or perplexity, layer rates."""
        from .. import data

        if self.parallel is not None and not self.writes:  # [distributed hook] rank 0 evaluates and reports
            return self.parallel.not_evaluated(len(self.cfg.layers))

        ids = getattr(self.task, split)
        was_training = self.model.training
        self.model.eval()
        total, count, correct, examples = 0.0, 0, 0, 0
        rate_sum = [0.0] * len(self.cfg.layers)
        states = None
        if self.language:
            batches = data.lm_batches(ids, self.cfg.eval_batch_size, self.cfg.seq_len,
                                      time_repeat=self.cfg.time_repeat)
        else:
            batches = data.make_loader(ids, self.cfg.eval_batch_size, shuffle=False)
        for inputs, targets in batches:
            logits, spikes, states = self._forward(inputs, states)
            n = targets.numel()
            total += self._task_loss(logits, targets).item() * n
            count += n
            rate_sum = [r0 + z.mean().item() * n for r0, z in zip(rate_sum, spikes)]
            if not self.language:
                correct += int((self.model.predict(logits) == targets).sum())
                examples += n
        self.model.train(was_training)
        if count == 0:
            raise ValueError(f"the {split} split of task {self.task.name!r} is empty")
        loss = total / count
        out = {"loss": loss, "rates": [r / count for r in rate_sum]}
        if self.language:
            out["perplexity"] = math.exp(min(loss, 700.0))
        else:
            out["accuracy"] = correct / examples
        return out

    @torch.no_grad()
    def sample_activity(self, split: str = "test", index: int = 0) -> tuple[Tensor | None, list[Tensor]]:
        """One sample's input [T, N] (None for token input) and every layer's spikes [T, H], eval mode."""
        from .. import data

        was_training = self.model.training
        self.model.eval()
        ds = getattr(self.task, split)
        if self.language:
            inputs = next(data.lm_batches(ds, 1, self.cfg.seq_len, time_repeat=self.cfg.time_repeat))[0]
        else:
            inputs = ds.densify([index])
        spikes = self._forward(inputs)[1]
        self.model.train(was_training)
        return (None if self.language else inputs[:, 0]), [z[:, 0] for z in spikes]

    # ---------------------------------------------------------------- checkpoints
    def _state(self, metrics: MetricsLog, finished: bool = False) -> dict:
        return {
            "config": self.cfg.result_fields(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(), "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch, "global_step": self.global_step, "states": self.states,
            "best_val": self.best_val, "best_epoch": self.best_epoch, "acc": self._acc,
            "train_seconds": self.train_seconds, "metrics_lines": metrics.lines, "stability": self.stability,
            "finished": finished, "skipped_steps": self.skipped_steps, "skipped_in_a_row": self.skipped_in_a_row,
            "loss_start": self.loss_start, "loss_growth": self.loss_growth,
        }

    def save_checkpoint(self, metrics: MetricsLog, finished: bool = False) -> None:
        """Write checkpoint.pt atomically, keeping the one it replaces as checkpoint.prev.pt (resume falls
        back to it when the newest cannot be read); ``last_checkpoint`` says which step it holds."""
        if self.writes:  # [distributed hook] only rank 0 writes
            atomic_torch_save(self._state(metrics, finished), self.out / "checkpoint.pt", keep_previous=True)
        self.last_checkpoint = {"global_step": self.global_step, "epoch": self.epoch}

    def _restore(self, ck: dict, metrics: MetricsLog) -> None:
        load_model_state(self.model, ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"])
        for key in ("epoch", "step_in_epoch", "global_step", "states", "best_val", "best_epoch",
                    "train_seconds", "stability"):
            setattr(self, key, ck[key])
        for key in ("skipped_steps", "skipped_in_a_row", "loss_start", "loss_growth"):  # absent before issue 15
            setattr(self, key, ck.get(key, getattr(self, key)))
        self._acc = {**self._new_accumulator(), **ck["acc"]}
        metrics.truncate(ck["metrics_lines"])

    def check_out_dir(self, resume: bool) -> dict | None:
        """Refuse to overwrite a run; on resume, refuse a run written by a different configuration (epochs
        may differ: a run continues, or a finished one is extended, to ``cfg.epochs``). Returns the newest
        readable checkpoint (``checkpoint.pt``, else ``checkpoint.prev.pt`` with a message), None for a
        fresh start (said on resume). Writes nothing."""
        ck_path, cfg_path = self.out / "checkpoint.pt", self.out / "config.json"
        if not resume:
            if any(p.exists() for p in (ck_path, previous_path(ck_path), cfg_path)):
                raise ValueError(f"out {str(self.out)!r} already holds a run; pass --resume to continue it "
                                 f"or choose another --out")
            return None
        found = load_latest_checkpoint(ck_path, self.log)
        if found is None:
            if cfg_path.exists():
                self._compare(TrainConfig.from_json(cfg_path).result_fields(), cfg_path)
            self.log(f"resume: no checkpoint in {self.out} yet, starting a fresh run")
            return None
        ck, where = found
        self._compare(ck["config"], where)
        if ck["epoch"] > self.cfg.epochs:
            raise ValueError(f"cannot resume {str(where)!r} with epochs={self.cfg.epochs}: it has trained "
                             f"{ck['epoch']} epochs already (pass --epochs {ck['epoch']} or more)")
        return ck

    def _compare(self, saved: dict, where: Path) -> None:
        mine = self.cfg.result_fields()
        saved = with_defaults(saved)  # a field added since the run was written: it behaved as the default
        diff = sorted(k for k in set(saved) | set(mine) if k != "epochs" and saved.get(k) != mine.get(k))
        if diff:
            detail = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {mine.get(k)!r}" for k in diff)
            raise ValueError(f"cannot resume {str(where)!r}: it was written by a different config ({detail})")

    # ---------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> dict:
        """Train (or continue) to the configured number of epochs, then test the best-val checkpoint."""
        cfg = self.cfg
        ck = self.check_out_dir(resume) if self.writes else None
        if self.parallel is not None:  # [distributed hook] every rank continues rank 0's checkpoint
            ck = self.parallel.broadcast(ck)
        if self.writes:
            self.out.mkdir(parents=True, exist_ok=True)
            if resume:  # of writes a killed run left unfinished, also one killed before its first checkpoint
                remove_stale_temporaries(self.out)
        metrics = MetricsLog(self.out / "metrics.jsonl", enabled=self.writes)
        if ck is not None:
            self._restore(ck, metrics)
            self.last_checkpoint = {"global_step": self.global_step, "epoch": self.epoch}
            if ck["finished"] and self.epoch >= cfg.epochs:
                return self._finish(metrics, already=True)
            if ck["finished"]:
                metrics.truncate(metrics.lines - 1)  # the finished run's test record: testing comes at the end
                self.log(f"extending the finished run {self.out} from {self.epoch} to {cfg.epochs} epochs")
            else:
                self.log(f"resuming {self.out} at epoch {self.epoch + 1}/{cfg.epochs}, batch {self.step_in_epoch} "
                         f"done ({self.global_step} steps in all)")
        else:
            metrics.truncate(0)
            torch.manual_seed(cfg.seed)  # training randomness never depends on what ran before fit()
            if self.writes:  # [distributed hook] rank 0 stabilises; parallel.start gives the others its weights
                self.stability = self.stabilize()
                atomic_write_json(self.stability, self.out / "stability.json")
        if self.writes:
            atomic_write_json(cfg.to_dict(), self.out / "config.json")
        if self.parallel is not None:  # [distributed hook]
            self.parallel.start(self)
        n_batches = self.batches_per_epoch()
        deadline = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
        stopped = False
        self.model.train()
        while self.epoch < cfg.epochs and not stopped:
            bar = Progress(n_batches, f"epoch {self.epoch + 1}/{cfg.epochs}", enabled=cfg.progress,
                           start=self.step_in_epoch)
            if self.step_in_epoch == 0:
                self.states = None  # a language model reads the text from its start each epoch
            t0 = time.monotonic()
            for i, batch in enumerate(self._train_loader(self.epoch)):
                if i < self.step_in_epoch:
                    continue  # batches done before the checkpoint being resumed
                rec = self.train_step(batch, self.epoch + i / n_batches)
                self.step_in_epoch, self.global_step = i + 1, self.global_step + 1
                if rec["nonfinite"] is not None:
                    self._nonfinite_step(metrics, rec, n_batches)  # stops the run, or counts a skipped step
                else:
                    self.skipped_in_a_row = 0
                    self._watch_loss(rec["task_loss"])
                    metrics.write({"kind": "step", "epoch": self.epoch, "step": self.global_step,
                                   **{k: v for k, v in rec.items() if k != "nonfinite"}})
                bar.update(1, loss=rec["loss"])
                elapsed = self.train_seconds + time.monotonic() - t0
                if cfg.eval_every and self.global_step % cfg.eval_every == 0 and i + 1 < n_batches:
                    self._eval_record(metrics, elapsed)
                stopped = deadline is not None and elapsed >= deadline
                if deadline is not None and self.parallel is not None:  # [distributed hook] all stop together
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
            if stopped and self.step_in_epoch < n_batches:
                self.log(f"time limit of {cfg.max_minutes} min reached in epoch {self.epoch + 1}/{cfg.epochs} "
                         f"after batch {self.step_in_epoch}")
            self._end_epoch(metrics)
        return self._finish(metrics, stopped=stopped)

    def _watch_loss(self, task_loss: float) -> None:
        """Remember the first step's task loss; warn once when a later one passes LOSS_GROWTH_FACTOR x it."""
        if self.loss_start is None:
            self.loss_start = task_loss
            return
        if self.loss_growth is None and self.loss_start > 0 and task_loss > LOSS_GROWTH_FACTOR * self.loss_start:
            factor = task_loss / self.loss_start
            self.loss_growth = {"step": self.global_step, "epoch": self.epoch, "loss": task_loss,
                                "start": self.loss_start, "factor": factor, "threshold": LOSS_GROWTH_FACTOR}
            self.log(f"warning: training loss {task_loss:.4g} at step {self.global_step} is {factor:.3g} times its "
                     f"start ({self.loss_start:.4g} at step 1): the run may be diverging (a lower --lr or "
                     f"--clip-norm may help)")

    def _nonfinite_step(self, metrics: MetricsLog, rec: dict, n_batches: int) -> None:
        """A step with a non-finite loss, gradient or update: record it; skip it (``on_nonfinite="skip"``,
        a finite model) or stop the run (NonFiniteError, after writing results.json; no checkpoint)."""
        info = rec["nonfinite"]
        where = (f"step {self.global_step} (epoch {self.epoch + 1}/{self.cfg.epochs}, "
                 f"batch {self.step_in_epoch}/{n_batches})")
        self.skipped_in_a_row += 1
        values = {k: v for k, v in rec.items() if k != "nonfinite"}
        if (
            self.cfg.on_nonfinite == "skip"
            and info["cause"] != "update"
            and self.skipped_in_a_row < MAX_SKIPPED_IN_A_ROW
        ):
            self.skipped_steps += 1
            metrics.write({"kind": "step", "epoch": self.epoch, "step": self.global_step, **values,
                           "skipped": True, "nonfinite": info})
            return
        if info["cause"] == "update":
            why = (f"{info['what']}; an applied update cannot be taken back, so the run stops even with "
                   f"--on-nonfinite skip")
            hint = "a lower --lr or --clip-norm may help"
        elif self.cfg.on_nonfinite == "skip":
            why = f"{self.skipped_in_a_row} steps in a row were non-finite and skipped, the last because {info['what']}"
            hint = "the run is not recovering: a lower --lr or --clip-norm may help"
        else:
            why = info["what"]
            hint = "a lower --lr or --clip-norm may help, or --on-nonfinite skip to skip such steps"
        ck = self.out / "checkpoint.pt"
        if ck.exists():
            kept = f"the last good checkpoint (step {load_checkpoint(ck)['global_step']}) is kept in {ck}"
        else:
            kept = "no checkpoint had been written yet"
        message = f"training stopped at {where}: {why}; {kept}; results in {self.out / 'results.json'} ({hint})"
        record = {"step": self.global_step, "epoch": self.epoch, "batch": self.step_in_epoch, **info,
                  "message": message}
        metrics.write({"kind": "nonfinite", **record, **values})
        self._write_stopped_results(record)
        raise NonFiniteError(message, record)

    def _write_stopped_results(self, record: dict) -> None:
        """results.json of a run stopped by a non-finite step: val/test of best.pt when an epoch produced
        one (its weights are finite), else null; the model keeps its last weights."""
        best_path = self.out / "best.pt"
        val = test = None
        if best_path.exists():
            last = {k: v.clone() for k, v in self.model.state_dict().items()}
            load_model_state(self.model, load_checkpoint(best_path))
            test, val = self.evaluate("test"), self.evaluate("val")
            self.model.load_state_dict(last)
        results = self._results(val, test, stopped=False)
        results["stopped_by_nonfinite"] = record
        if self.writes:
            atomic_write_json(results, self.out / "results.json")

    def _results(self, val: dict | None, test: dict | None, stopped: bool) -> dict:
        return {
            "task": self.cfg.task, "config": self.cfg.to_dict(), "epochs_done": self.epoch,
            "global_steps": self.global_step, "best_epoch": self.best_epoch, "val": val, "test": test,
            "train_seconds": self.train_seconds, "stopped_by_time_limit": stopped, "stability": self.stability,
            "skipped_steps": self.skipped_steps, "loss_growth": self.loss_growth, "stopped_by_nonfinite": None,
        }

    def _eval_record(self, metrics: MetricsLog, train_seconds: float) -> None:
        """A mid-epoch validation point (the best checkpoint is still chosen at epoch ends)."""
        val = self.evaluate("val")
        metric = "perplexity" if self.language else "accuracy"
        metrics.write({"kind": "eval", "epoch": self.epoch, "step": self.global_step, "val_loss": val["loss"],
                       f"val_{metric}": val[metric], "val_rates": val["rates"], "train_seconds": train_seconds})
        self.log(f"step {self.global_step}: val loss {val['loss']:.4f}, val {metric} {val[metric]:.4g}")

    def _end_epoch(self, metrics: MetricsLog) -> None:
        a = self._acc
        steps = a["steps"]  # the applied steps (skipped ones are left out); none: no train averages

        def mean(total: float) -> float | None:
            return total / steps if steps else None

        val = self.evaluate("val")
        rec = {
            "kind": "epoch", "epoch": self.epoch, "step": self.global_step, "train_loss": mean(a["loss"]),
            "train_task_loss": mean(a["task_loss"]), "train_sparsity_loss": mean(a["sparsity_loss"]),
            "train_rates": [mean(r) for r in a["rates"]], "grad_norm": mean(a["grad_norm"]),
            "sparsity_weight": float(self.sparsity.schedule(self.epoch + 1)) if self.sparsity else 0.0,
            "val_loss": val["loss"], "val_rates": val["rates"], "train_seconds": self.train_seconds,
            "skipped_steps": a.get("skipped", 0),
        }
        if self.language:
            rec["train_perplexity"] = math.exp(min(rec["train_task_loss"], 700.0)) if steps else None
            rec["val_perplexity"] = val["perplexity"]
        else:
            rec["train_accuracy"] = a["correct"] / a["examples"] if a["examples"] else None
            rec["val_accuracy"] = val["accuracy"]
        metrics.write(rec)
        if val["loss"] < self.best_val:
            self.best_val, self.best_epoch = val["loss"], self.epoch
            if self.writes:
                atomic_torch_save(self.model.state_dict(), self.out / "best.pt")
        summary = f"val perplexity {val['perplexity']:.2f}" if self.language else f"val acc {val['accuracy']:.4f}"
        train = "(no step applied)" if rec["train_loss"] is None else f"{rec['train_loss']:.4f}"
        skipped = f", {rec['skipped_steps']} steps skipped (non-finite)" if rec["skipped_steps"] else ""
        self.log(f"epoch {self.epoch + 1}/{self.cfg.epochs}: train loss {train}, val loss "
                 f"{val['loss']:.4f}, {summary}, rates {[round(r, 3) for r in val['rates']]}{skipped}")
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self._acc = self._new_accumulator()
        self.save_checkpoint(metrics)
        if self.on_epoch is not None:
            self.on_epoch(self, rec)

    def _finish(self, metrics: MetricsLog, stopped: bool = False, already: bool = False) -> dict:
        """Test the best-val weights; write results.json; keep the last weights in the model."""
        last = {k: v.clone() for k, v in self.model.state_dict().items()}
        best_path = self.out / "best.pt"
        if best_path.exists():
            load_model_state(self.model, load_checkpoint(best_path))
        test = self.evaluate("test")
        val = self.evaluate("val")
        self.model.load_state_dict(last)
        results = self._results(val, test, stopped)
        if not self.writes:  # [distributed hook]
            return results
        if not already:
            metrics.write({"kind": "test", "step": self.global_step, **{f"test_{k}": v for k, v in test.items()}})
            self.save_checkpoint(metrics, finished=True)
        atomic_write_json(results, self.out / "results.json")
        return results
