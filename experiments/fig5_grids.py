"""Figure 5 of the paper at CPU scale: grids over the SG's dampening, sharpness and tail fatness, with
each condition's predicted value drawn on the same axes.

sl-MNIST (5,000 real digits), 2 x 64 recurrent LIF. Every run first applies condition D (the threshold
for an initial rate of 1/2; at spikestab's default threshold of 1 the network is nearly silent and no SG
setting trains), then trains with the swept SG parameter:

- dampening {0.03, 0.1, 0.3, 1, 1.5} (sharpness 1), fast-sigmoid and exponential SGs;
- sharpness {0.25, 0.5, 1, 2, 4} (dampening 0.3), fast-sigmoid and exponential SGs;
- tail q {1.05, 1.6, 2.4, 4, 17} of the q-PseudoSpike SG (dampening 0.3, sharpness 1).

Predictions (dashed lines; mean over the two layers, same network and first batch, after D): condition
III's dampening (paper and measured modes), condition G's dampening, condition IV's sharpness (measured
mode, per SG; paper mode for the exponential SG, the only shape the official code solves) and tail q.

    python experiments/fig5_grids.py --scale cpu --workers 2

Writes docs/results/fig5/<scale>/fig5.json, summary.md and fig5.png.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import common

from spikestab.stability import stabilize
from spikestab.train.config import TrainConfig
from spikestab.train.trainer import Trainer, load_config_task

SG = ["fast-sigmoid", "exponential"]
PANELS = {  # option -> (values at cpu scale, fixed options, SG shapes)
    "dampening": ([0.03, 0.1, 0.3, 1.0, 1.5], {"sharpness": 1.0}, SG),
    "sharpness": ([0.25, 0.5, 1.0, 2.0, 4.0], {"dampening": 0.3}, SG),
    "tail": ([1.05, 1.6, 2.4, 4.0, 17.0], {"dampening": 0.3, "sharpness": 1.0}, ["q-pseudospike"]),
}
SEEDS = {"smoke": [0], "cpu": [0, 1, 2]}


def _mean_chosen(report, condition: str) -> dict:
    """The chosen value averaged over layers, and whether every layer's condition was feasible."""
    results = [layer.condition(condition) for layer in report.layers]
    return {"value": sum(r.chosen_mean for r in results) / len(results), "feasible": all(r.feasible for r in results)}


def predictions(fixed: dict) -> dict[str, dict[str, dict]]:
    """The value each condition predicts for each panel, on the seed-0 network and its first batch
    (an infeasible condition's value is its fallback, e.g. the end of the searched bracket)."""
    out: dict[str, dict[str, dict]] = {"dampening": {}, "sharpness": {}, "tail": {}}
    task = load_config_task(TrainConfig(**{**fixed, "conditions": "none"}))  # the same data for every model
    with tempfile.TemporaryDirectory() as tmp:

        def model_and_batch(**kw):
            cfg = TrainConfig(**{**fixed, **kw, "conditions": "none", "out": tmp, "seed": 0})
            tr = Trainer(cfg, task, log=lambda s: None)
            tr.model.eval()
            batch = tr.first_batch()
            stabilize(tr.model, batch, ("D",))
            return tr.model, batch

        model, batch = model_and_batch(surrogate="fast-sigmoid", dampening=1.0, sharpness=1.0)
        out["dampening"]["III (paper)"] = _mean_chosen(
            stabilize(copy.deepcopy(model), batch, ("III",), mode="paper"), "III"
        )
        out["dampening"]["III (measured)"] = _mean_chosen(stabilize(copy.deepcopy(model), batch, ("III",)), "III")
        out["dampening"]["G"] = _mean_chosen(stabilize(copy.deepcopy(model), batch, ("G",)), "G")
        for sg in SG:
            model, batch = model_and_batch(surrogate=sg, dampening=0.3, sharpness=1.0)
            out["sharpness"][f"IV {sg}"] = _mean_chosen(stabilize(copy.deepcopy(model), batch, ("IV",)), "IV")
        model, batch = model_and_batch(surrogate="exponential", dampening=0.3, sharpness=1.0)
        out["sharpness"]["IV exponential (paper)"] = _mean_chosen(stabilize(model, batch, ("IV",), mode="paper"), "IV")
        model, batch = model_and_batch(surrogate="q-pseudospike", dampening=0.3, sharpness=1.0, tail=2.0)
        out["tail"]["IV tail"] = _mean_chosen(stabilize(model, batch, ("IV",), solve_for="tail"), "IV")
    return out


def run(scale: str, workers: int) -> dict:
    fixed = {**common.task("sl-mnist", scale), "conditions": "D"}
    base = common.RUNS / "fig5" / scale
    panels = {}
    for option, (values, extra, shapes) in PANELS.items():
        vals = values if scale == "cpu" else values[1:3]
        grid = {option: vals, "surrogate": shapes, "seed": SEEDS[scale]}
        panels[option] = common.sweep(base / option, {**fixed, **extra}, grid, workers)
    return {"scale": scale, "fixed": fixed, "panels": panels, "predictions": predictions(fixed)}


def markdown(res: dict) -> str:
    out = [
        f"Scale `{res['scale']}`: sl-MNIST 5k, 2 x 64 LIF after condition D; test accuracy % mean +- std "
        f"over seeds {SEEDS[res['scale']]}.",
        "",
    ]
    for option, rows in res["panels"].items():
        out += [
            f"### {option}",
            "",
            "| SG | " + " | ".join(str(v) for v in sorted({r['params'][option] for r in rows})) + " |",
        ]
        values = sorted({r["params"][option] for r in rows})
        out.append("|---|" + "---|" * len(values))
        for sg in sorted({r["params"]["surrogate"] for r in rows}):
            cells = []
            for v in values:
                r = next(r for r in rows if r["params"]["surrogate"] == sg and r["params"][option] == v)
                cells.append(f"{100 * r['test_mean']:.1f} +- {100 * r['test_std']:.1f}")
            out.append(f"| {sg} | " + " | ".join(cells) + " |")
        preds = ", ".join(
            f"{k} {v['value']:.3g}" + ("" if v["feasible"] else " (infeasible: fallback)")
            for k, v in res["predictions"][option].items()
        )
        out += ["", f"Predicted: {preds}.", ""]
    return "\n".join(out)


def figure(res: dict, path: Path) -> Path:
    fig, axes = common.figure(1, 3, figsize=(11, 3.4))
    for ax, (option, rows) in zip(axes, res["panels"].items()):
        for sg in sorted({r["params"]["surrogate"] for r in rows}):
            mine = sorted((r for r in rows if r["params"]["surrogate"] == sg), key=lambda r: r["params"][option])
            ax.errorbar(
                [r["params"][option] for r in mine],
                [100 * r["test_mean"] for r in mine],
                yerr=[100 * r["test_std"] for r in mine],
                marker="o",
                capsize=2,
                label=sg,
            )
        for k, (name, pred) in enumerate(res["predictions"][option].items()):
            note = "" if pred["feasible"] else " (infeasible)"
            ax.axvline(
                pred["value"],
                ls="--" if pred["feasible"] else ":",
                color=f"C{k + 3}",
                lw=1,
                label=f"{name}: {pred['value']:.3g}{note}",
            )
        ax.set_xscale("log")
        ax.set_xlabel(option)
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=6)
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, None, None, argv)
    res = run(args.scale, args.workers)
    folder = common.RESULTS / "fig5" / args.scale
    common.write_json(folder / "fig5.json", res)
    (folder / "summary.md").write_text(markdown(res))
    figure(res, folder / "fig5.png")
    print(markdown(res))


if __name__ == "__main__":
    main()
