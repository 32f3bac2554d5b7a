"""The data side of a run: the task a TrainConfig names (kept for a sweep's next trial), the network
settings for it, its batches, the recipe's labelled probe set and the two task kinds' scores.

Classification and language tasks differ here and only here: the batches (a shuffled loader of spike
samples or stateful windows of one token stream), the probe (labelled samples, none for a language
model) and the score (accuracy of the time-averaged logits or perplexity)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .. import data
from ..models import SNNConfig
from ..stability.regime import MIN_PROBE_SAMPLES
from .config import TrainConfig
from .memory import check_fits, layers_text

__all__ = [
    "PROBE_SAMPLES",
    "SCORES",
    "load_config_task",
    "with_external_task",
    "network_config",
    "probe_set",
    "train_batches",
    "eval_batches",
    "sample_input",
    "train_score",
]

PROBE_SAMPLES = 512  # labelled samples the recipe measures its regime on (choose_regime; ~2 points of accuracy)
SCORES = {"classification": "accuracy", "language": "perplexity"}  # the score each task kind reports
MAX_LOG_PERPLEXITY = 700.0  # exp() of more overflows float64: the perplexity of a diverged model is capped

Batches = Iterable[tuple[Tensor, Tensor]]

_LAST_TASK: dict[str, Any] = {}  # the last task loaded, by its data settings (a sweep reuses it per trial)


def load_config_task(cfg: TrainConfig) -> Any:
    """The task named in the config, read from ``cfg.data_dir`` through ``spikestab.data.load_task``.
    The last task loaded in this process is kept and handed out again for the same data settings (task,
    data_dir, data_seed, time_repeat, input_dropout, task_options): the splits are never modified, and a
    sweep's trials then skip reading and binning the same files every time."""
    key = json.dumps(
        [cfg.task, cfg.data_dir, cfg.data_seed, cfg.time_repeat, cfg.input_dropout, cfg.task_options],
        sort_keys=True,
        default=str,
    )
    if cfg.external_task is not None:
        raise ValueError(external_refusal(cfg.external_task))
    if key in _LAST_TASK:
        return _LAST_TASK[key]
    try:
        task = data.load_task(
            cfg.task,
            cfg.data_dir,
            seed=cfg.data_seed,
            time_repeat=cfg.time_repeat,
            input_dropout=cfg.input_dropout,
            **cfg.task_options,
        )
    except FileNotFoundError as err:  # a missing data file is bad input: a clear message, no traceback
        raise ValueError(str(err)) from None
    _LAST_TASK.clear()
    _LAST_TASK[key] = task
    return task


def check_splits(task: Any) -> None:
    """ValueError, before any work, for a task a run cannot train and evaluate on: an empty split (a
    language split needs two tokens: an input and its next), or a classification training split with
    fewer than two classes."""
    for split in ("train", "val", "test"):
        data_ = getattr(task, split)
        size = data_.numel() if isinstance(data_, Tensor) else len(data_)
        if size < (2 if task.kind == "language" else 1):
            raise ValueError(f"the {split} split of task {task.name!r} is empty ({size} samples): check its data")
    labels = getattr(task.train, "labels", None)
    if task.kind == "classification" and labels is not None and len(set(labels.tolist())) < 2:
        raise ValueError(
            f"the train split of task {task.name!r} holds one class only ({len(labels)} samples of class "
            f"{labels[0]}): a classifier needs two or more"
        )


def external_refusal(dataset: dict) -> str:
    """Why a run of a dataset handed to Trainer from Python cannot be loaded from its config alone."""
    about = f" ({dataset['description']})" if dataset.get("description") else ""
    return (
        f"this run trained on the dataset {dataset['name']!r}{about} handed to Trainer from Python "
        "(data.task_from_datasets), which spikestab cannot rebuild from the run's config; continue it from "
        "Python with the same datasets: Trainer(TrainConfig.from_json(OUT / 'config.json'), "
        "task=task_from_datasets(...)).fit(resume=True)"
    )


def with_external_task(cfg: TrainConfig, task: Any) -> TrainConfig:
    """``cfg`` with the dataset of an external ``task`` (``data.task_from_datasets``) recorded as
    ``external_task``, so that config.json and results.json name it and a resume compares it; ``cfg`` itself
    for a built-in task. ValueError when ``cfg`` already records another dataset."""
    dataset = getattr(task, "info", {}).get("external")
    if dataset is None:
        return cfg
    if cfg.external_task is not None and cfg.external_task != dataset:
        raise ValueError(
            f"external_task: the config records the dataset {cfg.external_task!r}, but the task handed to "
            f"Trainer is {dataset!r}"
        )
    return dataclasses.replace(cfg, external_task=dataset)


def network_config(cfg: TrainConfig, task: Any) -> SNNConfig:
    """The SNNConfig of the run's network (``models.build_model(network_config(cfg, task), task.kind)``);
    ValueError when it would need more memory than is available (``memory.check_fits``)."""
    steps = cfg.seq_len if task.kind == "language" else task.n_steps
    check_fits(
        task.input_size, cfg.layers, task.output_size, steps, cfg.batch_size, f"layers {layers_text(cfg.layers)}"
    )
    return SNNConfig(
        input_size=task.input_size,
        output_size=task.output_size,
        hidden_sizes=cfg.layers,
        net=cfg.net,
        dropout=cfg.dropout,
        recurrent=cfg.recurrent,
        tau=cfg.tau,
        threshold=cfg.threshold,
        reset=cfg.reset,
        surrogate=cfg.surrogate,
        dampening=cfg.dampening,
        sharpness=cfg.sharpness,
        tail=cfg.tail,
        backend=cfg.backend,
        checkpoint=cfg.time_checkpoint or False,
    )


def train_batches(task: Any, cfg: TrainConfig, epoch: int, sparse: bool = False) -> Batches:
    """Epoch ``epoch``'s training batches: the order and input-dropout masks depend only on (seed, epoch);
    ``sparse``: a classification task's inputs as sparse COO tensors where they pay
    (``data.sparse_batches_pay``: the same batches for the model without building them densely)."""
    if task.kind == "language":
        return data.lm_batches(task.train, cfg.batch_size, cfg.seq_len, time_repeat=cfg.time_repeat)
    sparse = sparse and data.sparse_batches_pay(task.train)
    loader = data.make_loader(task.train, cfg.batch_size, shuffle=True, seed=cfg.seed, sparse=sparse)
    loader.set_epoch(epoch)
    return loader


def eval_batches(task: Any, cfg: TrainConfig, split: str) -> Batches:
    """The batches of split ``split`` in order (a language model's windows carry its state)."""
    ids = getattr(task, split)
    if task.kind == "language":
        return data.lm_batches(ids, cfg.eval_batch_size, cfg.seq_len, time_repeat=cfg.time_repeat)
    return data.make_loader(ids, cfg.eval_batch_size, shuffle=False)


def sample_input(task: Any, cfg: TrainConfig, split: str, index: int) -> Tensor:
    """One sample's model input [T, 1, ...] (a language task: its first window of one token row)."""
    ds = getattr(task, split)
    if task.kind == "language":
        return next(data.lm_batches(ds, 1, cfg.seq_len, time_repeat=cfg.time_repeat))[0]
    return ds.densify([index])


def probe_set(task: Any, batch_size: int, seed: int, samples: int = PROBE_SAMPLES) -> tuple[Tensor, Tensor] | None:
    """The first ``samples`` (or more: whole batches of ``batch_size``) labelled training samples in the
    shuffled order of epoch 0 of seed ``seed`` (inputs [T, B, N], labels [B]), on which the recipe chooses
    its regime; None for a language task or fewer than ``MIN_PROBE_SAMPLES`` training samples.
    ``spikestab train`` takes its own batches; ``spikestab stabilize`` one batch of ``samples``."""
    if task.kind == "language":
        return None
    xs, ys, n = [], [], 0
    for x, y in data.make_loader(task.train, batch_size, shuffle=True, seed=seed):
        xs.append(x)
        ys.append(y)
        n += y.shape[0]
        if n >= samples:
            break
    if n < MIN_PROBE_SAMPLES:
        return None
    return torch.cat(xs, 1), torch.cat(ys)


def train_score(kind: str, totals: dict) -> float | None:
    """An epoch's training score from its accumulated totals (None when no step was applied)."""
    if kind == "language":
        steps = totals["steps"]
        return math.exp(min(totals["task_loss"] / steps, MAX_LOG_PERPLEXITY)) if steps else None
    return totals["correct"] / totals["examples"] if totals["examples"] else None


def eval_score(kind: str, loss: float, correct: int, examples: int) -> float:
    """The score of an evaluation pass: perplexity of its mean loss, or its accuracy."""
    if kind == "language":
        return math.exp(min(loss, MAX_LOG_PERPLEXITY))
    return correct / examples
