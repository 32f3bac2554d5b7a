"""Any labelled spike dataset as a spikestab ``Task``, so that ``Trainer(cfg, task=task)`` trains on it.

A split is any sequence of ``(x, label)`` samples (a torch ``Dataset``, a tonic dataset, a list) whose ``x``
is a spike raster ``[T, N]`` (a tensor or array; ``[T, ...]`` is flattened to ``[T, prod(...)]``, so a
tonic ``ToFrame`` output ``[T, polarity, H, W]`` becomes ``[T, 2 H W]``) and whose label is a class id. Each
sample is read once and kept as sparse events (``SpikeDataset``); spike counts above 1 are kept as counts.
Samples shorter than the longest one (or than ``n_steps``) end in silent steps.

The ``Trainer`` loads nothing itself when a task is given, and records the dataset (``name``,
``description``, sizes and sample counts: ``task.info["external"]``) as the run's ``external_task`` in
config.json and results.json; ``cfg.task`` is then unused. Such a run resumes from Python with the same
datasets (``Trainer(cfg, task=...).fit(resume=True)``); ``spikestab train --resume`` refuses it, since it
cannot rebuild them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .loader import SpikeDataset
from .tasks import Task


def _raster(x: Any, where: str) -> np.ndarray:
    """A sample's input as a float ``[T, N]`` array, or ValueError naming the sample."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim < 2 or a.shape[0] < 1 or a[0].size < 1:
        raise ValueError(f"{where}: the input must be a spike raster [T, N] (or [T, ...]), got shape {a.shape}")
    a = a.reshape(a.shape[0], -1).astype(np.float32)
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{where}: spike values must be finite counts >= 0")
    return a


def _label(y: Any, where: str) -> int:
    value = y.item() if isinstance(y, torch.Tensor | np.ndarray) else y
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{where}: the label must be a class id >= 0, got {y!r}")
    return int(value)


def _read(samples: Sequence, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Every sample of a split as (rasters, labels)."""
    if len(samples) == 0:
        raise ValueError(f"{split}: the split holds no sample")
    rasters, labels = [], []
    for i in range(len(samples)):
        x, y = samples[i]
        rasters.append(_raster(x, f"{split} sample {i}"))
        labels.append(_label(y, f"{split} sample {i}"))
    return rasters, np.asarray(labels, dtype=np.int64)


def _events(rasters: list[np.ndarray], labels: np.ndarray, n_steps: int, **kwargs: Any) -> SpikeDataset:
    events = []
    for r in rasters:
        step, chan = np.nonzero(r)
        events.append((step, chan, r[step, chan]))
    counts = any(np.any(e[2] != 1) for e in events)
    return SpikeDataset.from_events(events, labels, n_steps, rasters[0].shape[1], counts=counts, **kwargs)


def task_from_datasets(
    train: Sequence,
    test: Sequence,
    val: Sequence | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    n_steps: int | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "external",
    description: str = "",
    time_repeat: int = 1,
    input_dropout: float = 0.0,
) -> Task:
    """A classification ``Task`` from train/test (and optionally val) splits of ``(raster, label)`` samples.

    Without ``val``, a seeded ``val_fraction`` of ``train`` becomes the validation split. ``n_steps``
    (default: the longest sample) is the number of time steps of every sample; ``class_names`` default to
    the class ids; ``name`` and ``description`` say what the data are in the run's files. ``time_repeat``
    and ``input_dropout`` act as in ``load_task``. Bad input raises
    ValueError naming the split, the sample and the argument."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    splits = {"train": _read(train, "train"), "test": _read(test, "test")}
    if val is not None:
        splits["val"] = _read(val, "val")
    widths = {s: {r.shape[1] for r in rasters} for s, (rasters, _) in splits.items()}
    if len(set().union(*widths.values())) != 1:
        raise ValueError(f"every sample must have the same number of channels N, got {widths}")
    longest = max(r.shape[0] for rasters, _ in splits.values() for r in rasters)
    if n_steps is None:
        n_steps = longest
    elif int(n_steps) != n_steps or n_steps < longest:
        raise ValueError(f"n_steps must be an integer >= the longest sample's {longest} steps, got {n_steps}")
    n_classes = max(int(labels.max()) for _, labels in splits.values()) + 1
    if class_names is not None and len(class_names) < n_classes:
        raise ValueError(f"class_names has {len(class_names)} names for labels up to {n_classes - 1}")
    data = {
        s: _events(
            rasters, labels, int(n_steps), time_repeat=time_repeat, input_dropout=input_dropout if s == "train" else 0.0
        )
        for s, (rasters, labels) in splits.items()
    }
    full = data.pop("train")
    if "val" in data:
        train_part, val_part = full, data["val"]
    else:
        order = np.random.default_rng(seed).permutation(len(full))
        n_val = int(round(val_fraction * len(full)))
        if not 0 < n_val < len(full):
            raise ValueError(f"val_fraction {val_fraction} of {len(full)} training samples leaves an empty split")
        train_part = full.subset(order[n_val:])
        val_part = full.subset(order[:n_val], input_dropout=0.0)
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    samples = {"train": len(train_part), "val": len(val_part), "test": len(data["test"])}
    external = dict(
        name=name,
        description=description,
        input_size=full.n_channels,
        classes=len(names),
        n_steps=int(n_steps) * int(time_repeat),
        samples=samples,
    )
    return Task(
        name=name,
        kind="classification",
        input_size=full.n_channels,
        output_size=len(names),
        class_names=names,
        train=train_part,
        val=val_part,
        test=data["test"],
        n_steps=int(n_steps) * int(time_repeat),
        time_repeat=int(time_repeat),
        info=dict(source=name, samples=samples, external=external),
    )
