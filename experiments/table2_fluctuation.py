"""Table 2 of the paper at CPU scale: fluctuation-driven initialisation with the mean membrane at threshold.

Recurrent current-based LIF networks (``net cuba``: tau_mem 20 ms, tau_syn 10 ms (in steps of the scale's
bins), threshold 1, stork's
reset, the paper's SG 1/(10|x| + 1)^2 = fast sigmoid with sharpness 5), shallow and deep, initialised by
``spikestab.init.fluctuation`` in three ways, as the paper's three rows:

- ``default``: the centred initialisation, mu_U = 0, sigma_U = 1 (firing probability ~0.16);
- ``mu_U = theta``: mu_U = threshold, xi = 1 (condition I: firing probability ~1/2; the paper's
  ``muchange``);
- ``mu_U = theta, nu = eps = 1``: the same with the input rate and both PSP integrals set to 1.

nu is the mean input rate of the first training batch (spikes per step), used for every layer as stork
does. Expected signature (claim 9): mu_U = theta matches or beats the default on some depth.

Scales: ``smoke`` (generated Randman, 1 and 3 layers of 8, one epoch: CI), ``cpu`` (the synthetic SHD set of
``spikestab make-shd``, 100 bins of 7 ms over 0.7 s, the paper's SHD duration, 2 x 64 and 4 x 64, 4 epochs of
batches of 64, seeds 0-2), ``paper`` (real SHD in --shd-dir, 2 ms bins, 3 x 128 and 7 x 128, 300 epochs, seeds 0-3; the
paper's SHD networks are 1-D convolutions, not dense layers).

    python experiments/table2_fluctuation.py --scale cpu --shd-dir runs/shd_synth

Training runs through ``spikestab.train.Trainer`` (AdamW, per-step cross-entropy on the time-averaged
readout; the paper used SMORMS3 and a max-over-time loss), not through ``spikestab sweep``: the sweep builds
models from a TrainConfig, which has no fluctuation-driven initialisation. Each (depth, setting, seed) is
one Trainer run folder under runs/table2/<scale>/, continued on a rerun (``fit(resume=True)``) and reused
when finished. Writes docs/results/table2/<scale>/table2.json, summary.md and table2.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import common
import torch

from spikestab import stats
from spikestab.init.fluctuation import fluctuation_init, measure_membrane
from spikestab.train import TrainConfig, Trainer

SETTINGS = {
    "default": {"mu_u": 0.0, "sigma_u": 1.0},
    "mu_U = theta": {"mu_u": "threshold", "xi": 1.0},
    "mu_U = theta, nu = eps = 1": {"mu_u": "threshold", "xi": 1.0, "nu": 1.0, "epsilon": 1.0},
}
NEURON = {
    "net": "cuba",
    "recurrent": True,
    "tau": 4.0,
    "threshold": 1.0,
    "reset": "multiplicative_all",
    "surrogate": "fast-sigmoid",
    "dampening": 1.0,
    "sharpness": 5.0,
    "conditions": "none",
    "dropout": 0.0,
    "lr": 2e-3,
    "batch_size": 32,
    "threads": 1,
    "progress": False,
    "checkpoint_every": 1000,
}
SCALES = {
    "smoke": {
        "task": "randman",
        "task_options": {"n_units": 20, "samples_per_class": 20, "n_steps": 50},
        "depths": {"shallow": "1x8", "deep": "3x8"},
        "epochs": 1,
        "seeds": [0],
    },
    "cpu": {
        "task": "shd",
        "task_options": {"dt": 0.007, "n_steps": 100},
        "depths": {"shallow": "2x64", "deep": "4x64"},
        "epochs": 4,
        "seeds": [0, 1, 2],
        "tau": 20 / 7,
        "batch_size": 64,
    },
    "paper": {
        "task": "shd",
        "task_options": {"dt": 0.002, "n_steps": 350},
        "depths": {"shallow": "3x128", "deep": "7x128"},
        "epochs": 300,
        "seeds": [0, 1, 2, 3],
        "tau": 10.0,
    },
}


def config(scale: str, depth: str, seed: int, out: Path, shd_dir: str | None) -> TrainConfig:
    s = SCALES[scale]
    fixed = {**NEURON, **{k: s[k] for k in ("tau", "batch_size") if k in s}}
    data_dir = None
    if s["task"] == "shd":
        folder = Path(shd_dir or common.RUNS / "shd_synth")
        if not (folder / "SHD" / "shd_train.h5").is_file() and not (folder / "shd_train.h5").is_file():
            raise SystemExit(
                f"SHD files not found in {folder}: make the synthetic set with `spikestab make-shd --out "
                f"{folder} --per-class 100`, or pass --shd-dir"
            )
        data_dir = str(folder)
    return TrainConfig(
        task=s["task"],
        data_dir=data_dir,
        task_options=s["task_options"],
        layers=s["depths"][depth],
        epochs=s["epochs"],
        seed=seed,
        out=str(out),
        **fixed,
    )


def run_trial(cfg: TrainConfig, setting: str) -> dict:
    """One Trainer run with the setting's initialisation (continued or reused); results + init report."""
    out = Path(cfg.out)
    if (out / "results.json").is_file() and (out / "fluctuation.json").is_file():
        return {
            "results": json.loads((out / "results.json").read_text()),
            "init": json.loads((out / "fluctuation.json").read_text()),
        }
    trainer = Trainer(cfg, log=lambda s: None)
    batch = trainer.first_batch()
    kw = dict(SETTINGS[setting])
    nu_data = float(batch.float().mean())
    kw.setdefault("nu", nu_data)
    report = fluctuation_init(trainer.model, generator=torch.Generator().manual_seed(cfg.seed), **kw)
    report = measure_membrane(trainer.model, batch, report)
    init = {**report.to_dict(), "nu_data": nu_data, "text": str(report)}
    results = trainer.fit(resume=True)
    common.write_json(out / "fluctuation.json", init)
    print(
        f"[table2] {out.parent.parent.name} {setting} seed {cfg.seed}: test {results['test']['accuracy']:.3f}",
        flush=True,
    )
    return {"results": results, "init": init}


def summarise(trials: list[dict]) -> dict:
    test = [t["results"]["test"]["accuracy"] for t in trials]
    layers = [t["init"]["layers"] for t in trials]

    def mean_of(key: str) -> list[float]:
        return [statistics.fmean(trial[i]["measured"][key] for trial in layers) for i in range(len(layers[0]))]

    return {
        "n": len(trials),
        "test": test,
        "test_mean": statistics.fmean(test),
        "test_std": stats.describe(test).std,
        "val_mean": statistics.fmean(t["results"]["val"]["accuracy"] for t in trials),
        "target_mu_u": [p["target_mu_u"] for p in layers[0]],
        "target_sigma_u": [p["target_sigma_u"] for p in layers[0]],
        "measured_mu_u": mean_of("mu_u"),
        "measured_sigma_u": mean_of("sigma_u"),
        "initial_rate": mean_of("rate"),
        "final_rates": [statistics.fmean(r) for r in zip(*(t["results"]["test"]["rates"] for t in trials))],
        "nu": trials[0]["init"]["nu"],
        "seconds": sum(t["results"]["train_seconds"] for t in trials),
    }


def markdown(table: dict, scale: str, seeds: list[int]) -> str:
    def f(v: list[float]) -> str:
        return ", ".join(f"{x:.2g}" for x in v)

    out = [
        (
            f"Scale `{scale}`; recurrent CUBA LIF; test accuracy % of the best-validation epoch, mean +- std over "
            f"seeds {seeds}. mu_U, sigma_U: target / measured free membrane per layer on the first training batch "
            f"(initial weights); rates per layer."
        ),
        "",
    ]
    for depth, rows in table.items():
        out += [
            f"### {depth}",
            "",
            (
                "| setting | test acc | nu | target mu_U | measured mu_U | target sigma_U | "
                "measured sigma_U | initial rate | final rate |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in rows.items():
            out.append(
                f"| {name} | {100 * r['test_mean']:.1f} +- {100 * r['test_std']:.1f} | {r['nu']:.3g} | "
                f"{f(r['target_mu_u'])} | {f(r['measured_mu_u'])} | {f(r['target_sigma_u'])} | "
                f"{f(r['measured_sigma_u'])} | {f(r['initial_rate'])} | {f(r['final_rates'])} |"
            )
        out.append("")
    return "\n".join(out)


def figure(table: dict, path: Path) -> Path:
    fig, axes = common.figure(1, len(table), figsize=(4.2 * len(table), 3.4), squeeze=False)
    for ax, (depth, rows) in zip(axes[0], table.items()):
        names = list(rows)
        ax.bar(
            range(len(names)),
            [100 * rows[n]["test_mean"] for n in names],
            yerr=[100 * rows[n]["test_std"] for n in names],
            color=["grey", "tab:red", "tab:orange"],
            capsize=3,
        )
        ax.set_xticks(range(len(names)), [n.replace(", ", ",\n") for n in names], fontsize=7)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(depth)
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=list(SCALES), default="smoke")
    p.add_argument("--shd-dir", default=None, help="SHD folder (cpu: the synthetic set; paper: the real one)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    s = SCALES[args.scale]
    base = common.RUNS / "table2" / args.scale
    table: dict[str, dict] = {}
    trials: dict[str, dict] = {}
    for depth in s["depths"]:
        table[depth], trials[depth] = {}, {}
        for name in SETTINGS:
            slug = name.replace(" ", "").replace(",", "_").replace("=", "")
            runs = [
                run_trial(config(args.scale, depth, seed, base / depth / slug / f"seed{seed}", args.shd_dir), name)
                for seed in s["seeds"]
            ]
            table[depth][name] = summarise(runs)
            trials[depth][name] = [
                {
                    "seed": r["results"]["config"]["seed"],
                    "init": r["init"],
                    "test": r["results"]["test"],
                    "val": r["results"]["val"],
                }
                for r in runs
            ]
    folder = common.RESULTS / "table2" / args.scale
    cmd = f"python experiments/table2_fluctuation.py --scale {args.scale}"
    if s["task"] == "shd":
        cmd += " --shd-dir DIR"
    common.write_json(
        folder / "table2.json",
        {
            "scale": args.scale,
            "command": cmd,
            "neuron": NEURON,
            "scale_config": s,
            "settings": SETTINGS,
            "table": table,
            "trials": trials,
        },
    )
    (folder / "summary.md").write_text(markdown(table, args.scale, s["seeds"]))
    figure(table, folder / "table2.png")
    print(markdown(table, args.scale, s["seeds"]))


if __name__ == "__main__":
    main()
