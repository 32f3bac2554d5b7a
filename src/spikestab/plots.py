"""Figures (matplotlib, Agg backend, PNG): learning curves, firing rate per layer with the sparsity
weight, a spike raster, and the surrogate-gradient shapes of the paper's Figure 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .surrogate import SurrogateGradient

FIG1_SHAPES = [
    ("rectangular", "rectangular"),
    ("triangular", "triangular"),
    ("exponential", "exponential"),
    ("gaussian", "gaussian"),
    ("sigmoid", r"$\partial$ sigmoid"),
    ("fast-sigmoid", r"$\partial$ fast sigmoid"),
]


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use: plots are optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write the figure atomically (tmp + rename) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)
    pyplot().close(fig)
    return path


def _epoch_axis(steps: list[dict]) -> np.ndarray:
    """Fractional epoch of every step record (step index / steps in the first epoch)."""
    per_epoch = max(sum(1 for r in steps if r["epoch"] == steps[0]["epoch"]), 1)
    return np.array([r["step"] for r in steps], dtype=float) / per_epoch


def learning_curves(records: Sequence[dict], path: str | Path) -> Path:
    """Train/val loss and accuracy (or perplexity) per epoch from metrics.jsonl records."""
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not epochs:
        raise ValueError("records hold no epoch record: nothing to plot")
    plt = pyplot()
    x = [r["epoch"] + 1 for r in epochs]
    metric = "accuracy" if "val_accuracy" in epochs[0] else "perplexity"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(x, [r["train_loss"] for r in epochs], "o-", label="train (total)")
    ax1.plot(x, [r["train_task_loss"] for r in epochs], "s--", label="train (task)")
    ax1.plot(x, [r["val_loss"] for r in epochs], "^-", label="val")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax1.legend()
    ax2.plot(x, [r[f"train_{metric}"] for r in epochs], "o-", label="train")
    ax2.plot(x, [r[f"val_{metric}"] for r in epochs], "^-", label="val")
    if metric == "perplexity":
        ax2.set_yscale("log")
    ax2.set(xlabel="epoch", ylabel=metric, title=metric)
    ax2.legend()
    return save_figure(fig, path)


def firing_rates(records: Sequence[dict], path: str | Path) -> Path:
    """Per-layer firing rate over training (per step) with the sparsity weight s on a second axis."""
    steps = [r for r in records if r.get("kind") == "step"]
    if not steps:
        raise ValueError("records hold no step record: nothing to plot")
    plt = pyplot()
    x = _epoch_axis(steps)
    rates = np.array([r["rates"] for r in steps])
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i in range(rates.shape[1]):
        ax.plot(x, rates[:, i], lw=1, label=f"layer {i + 1}")
    ax.set(xlabel="epoch", ylabel="firing rate (spikes / neuron / step)")
    ax2 = ax.twinx()
    ax2.plot(x, [r["sparsity_weight"] for r in steps], "k--", lw=1.2, label="sparsity weight s")
    ax2.set_ylabel("sparsity weight s")
    ax2.set_ylim(-0.05, 1.05)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    return save_figure(fig, path)


def compare_runs(records_by_run: Mapping[str, Sequence[dict]], path: str | Path) -> Path:
    """Validation accuracy (or perplexity) per epoch of several runs on one axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    metric = "accuracy"
    for name, records in records_by_run.items():
        epochs = [r for r in records if r.get("kind") == "epoch"]
        if not epochs:
            raise ValueError(f"run {name!r} has no epoch record: nothing to plot")
        metric = "accuracy" if "val_accuracy" in epochs[0] else "perplexity"
        ax.plot([r["epoch"] + 1 for r in epochs], [r[f"val_{metric}"] for r in epochs], "o-", label=name)
    ax.set(xlabel="epoch", ylabel=f"validation {metric}")
    ax.legend()
    return save_figure(fig, path)


def spike_raster(inputs: Tensor | None, spikes: Sequence[Tensor], path: str | Path, title: str = "") -> Path:
    """Raster of one sample: the input (if given) and every layer's spikes, each [T, N]."""
    panels = ([("input", inputs)] if inputs is not None else []) + [(f"layer {i + 1}", z) for i, z in enumerate(spikes)]
    if not panels or any(t.dim() != 2 for _, t in panels):
        raise ValueError("inputs and spikes must be [T, N] tensors of one sample")
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.8 * len(panels)), sharex=True, squeeze=False)
    for ax, (name, z) in zip(axes[:, 0], panels):
        t, n = torch.nonzero(z.detach().cpu() > 0, as_tuple=True)
        ax.scatter(t.numpy(), n.numpy(), s=1.5, c="k", marker="|")
        ax.set(ylabel=f"{name}\nneuron", ylim=(-0.5, z.shape[1] - 0.5), xlim=(-0.5, z.shape[0] - 0.5))
    axes[-1, 0].set_xlabel("time step")
    if title:
        axes[0, 0].set_title(title)
    return save_figure(fig, path)


def sg_shapes(path: str | Path) -> Path:
    """The SG shapes (docs/theory.md, "Surrogate gradients"). Left: the six shapes with dampening =
    sharpness = 1 on v in [0, 1.5];
    right: q-PseudoSpike for q = 10^linspace(-2, 1.2, 7) + 1."""
    plt = pyplot()
    v = torch.linspace(0.0, 1.5, 301)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = plt.get_cmap("tab20b")(np.linspace(0, 1, len(FIG1_SHAPES)))
    for (shape, label), c in zip(FIG1_SHAPES, colors):
        ax1.plot(v, SurrogateGradient(shape).derivative(v), color=c, label=label)
    ax1.set(xlabel="v", ylabel="surrogate gradient", title="SG shapes (dampening = sharpness = 1)")
    ax1.legend(fontsize=8)
    qs = 10.0 ** np.linspace(-2, 1.2, 7) + 1.0
    colors = plt.get_cmap("Oranges")(np.linspace(0.3, 1, len(qs)))
    for q, c in zip(qs, colors):
        ax2.plot(v, SurrogateGradient("q-pseudospike", tail=float(q)).derivative(v), color=c, label=f"q = {q:.4g}")
    ax2.set(xlabel="v", title="q-PseudoSpike (smaller q = fatter tail)")
    ax2.legend(fontsize=8)
    return save_figure(fig, path)


def run_figures(run_dir: str | Path) -> list[Path]:
    """Learning curves and firing rates of a run folder, from its metrics.jsonl, into run_dir/figures."""
    from .files import read_jsonl

    run = Path(run_dir)
    records = read_jsonl(run / "metrics.jsonl")
    if not records:
        raise ValueError(f"{str(run / 'metrics.jsonl')!r} is missing or empty: train a run there first")
    return [
        learning_curves(records, run / "figures" / "learning_curves.png"),
        firing_rates(records, run / "figures" / "firing_rates.png"),
    ]
