"""Figure 4 of the paper at CPU scale: the stability conditions ablated, judged by training.

Every setting trains the same network (spikestab defaults: tau 20, threshold 1, fast-sigmoid SG with
dampening 1, Glorot weights) after applying its conditions. On sl-MNIST LIF (where the recipe was
decided): none; I, II, III, IV, I+II, I+II+III, I-IV (measured mode); I+II+III and I-IV (paper mode); D
alone; G alone; ``auto`` (the recommended recipe D,G); D+III, D+IV; rate 1/2 by bias calibration alone,
with III and with G. On the other configurations (the check, and the CPU budget): none, III, I+II+III,
I-IV (measured and paper), D, G, auto; ALIF on SHD and Randman: none, III, I-IV (measured and
paper), G, auto. For
each setting: test accuracy (mean +- std over seeds), initial and final firing rates, gradient norm per
layer over the first 100 steps, the measured BPTT growth per step, and the values chosen.

    python experiments/fig4_conditions.py --scale cpu --shd-dir runs/shd_synth --workers 2

Writes docs/results/fig4/<scale>/<config>.json, summary.md and fig4.png. Sweeps run through
``spikestab.sweep`` under runs/fig4 and continue where they stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import common

CONFIGS = {
    "mnist-lif": ("sl-mnist", "lif"),
    "shd-lif": ("shd", "lif"),
    "randman-lif": ("randman", "lif"),
    "mnist-alif": ("sl-mnist", "alif"),
    "shd-alif": ("shd", "alif"),
    "randman-alif": ("randman", "alif"),
}
MEASURED = ["none", "I", "II", "III", "IV", "I,II", "I,II,III", "I,II,III,IV", "D", "G", "auto"]
CHECK = ["none", "III", "I,II,III", "I,II,III,IV", "D", "G", "auto"]  # the other configurations (CPU budget)
ALIF_CHECK = ["none", "III", "I,II,III,IV", "G", "auto"]  # ALIF on SHD and Randman (added last, smaller)
PAPER = ["I,II,III", "I,II,III,IV"]
# diagnosis on the configuration the recipe was decided on (mnist-lif): D with each dampening rule, and
# rate 1/2 reached through a constant bias current (calibration, the earlier demo recipe) instead of D
DIAGNOSIS = {"measured": ["D,III", "D,IV"], "bias": ["none", "III", "G"]}
SEEDS = {"smoke": [0], "cpu": [0, 1, 2]}


def label(row: dict, mode: str) -> str:
    cond = row["params"]["conditions"] or "none"  # the sweep stores "none" as null
    if mode == "bias":
        return "bias rate 1/2" + ("" if cond == "none" else f" + {cond}")
    return cond.replace(",", "+") + (" (paper)" if mode == "paper" else "")


def run_config(name: str, scale: str, shd_dir: str | None, workers: int) -> dict:
    task, net = CONFIGS[name]
    fixed = {**common.task(task, scale, shd_dir), "net": net}
    base = common.RUNS / "fig4" / scale / name
    check = ALIF_CHECK if name in ("shd-alif", "randman-alif") else CHECK
    measured = (MEASURED if name == "mnist-lif" else check) if scale == "cpu" else ["none", "III", "auto"]
    paper = (PAPER if name == "mnist-lif" else ["I,II,III,IV"]) if scale == "cpu" else ["I,II,III,IV"]
    sweeps = [("measured", measured), ("paper", paper)]
    if scale == "cpu" and name == "mnist-lif":
        sweeps += [("diagnosis", DIAGNOSIS["measured"]), ("bias", DIAGNOSIS["bias"])]
    rows = []
    for mode, settings in sweeps:
        fix = {**fixed, "stability_mode": "paper" if mode == "paper" else "measured"}
        if mode == "bias":
            fix["init_rate"] = 0.5
        for row in common.sweep(base / mode, fix, {"conditions": settings, "seed": SEEDS[scale]}, workers):
            rows.append({**row, "setting": label(row, mode)})
    return {"config": name, "scale": scale, "fixed": fixed, "seeds": SEEDS[scale], "settings": rows}


def markdown(results: dict[str, dict], scale: str) -> str:
    def fmt(v, k=3):
        return "-" if v is None else ", ".join(f"{x:.{k}g}" for x in v)

    out = [f"Scale `{scale}`; test accuracy % mean +- std over seeds {next(iter(results.values()))['seeds']}.", ""]
    for name, res in results.items():
        out += [
            f"### {name}",
            "",
            "| setting | test acc | initial rates | final rates | grad norm (first 100 steps) | "
            "growth/step | chosen (layer 0) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(res["settings"], key=lambda r: -(r["test_mean"] if r["n"] else -1.0)):
            chosen = r["trials"][0]["chosen"] if r["trials"] else None
            ch = "-" if not chosen else ", ".join(f"{c} {v:.3g}" for c, v in chosen[0].items() if v is not None)
            acc = f"{100 * r['test_mean']:.1f} +- {100 * r['test_std']:.1f}" if r["n"] else "-"
            if r.get("failed"):  # trials that stopped on a non-finite loss or gradient (the trainer's default)
                acc += f" ({r['failed']} of {r['n'] + r['failed']} diverged)"
            out.append(
                f"| {r['setting']} | {acc} | "
                f"{fmt(r['initial_rates'])} | {fmt(r['final_rates'])} | {fmt(r['grad_norm_first100'])} | "
                f"{fmt(r['growth_per_step'])} | {ch} |"
            )
        out.append("")
    return "\n".join(out)


def figure(results: dict[str, dict], path: Path) -> Path:
    fig, axes = common.figure(1, len(results), figsize=(3.6 * len(results), 3.8), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        rows = sorted((r for r in res["settings"] if r["n"]), key=lambda r: r["test_mean"])  # diverged: no bar
        colors = [
            "tab:red" if r["setting"] == "auto" else "grey" if r["setting"] == "none" else "tab:blue" for r in rows
        ]
        ax.barh(
            range(len(rows)),
            [100 * r["test_mean"] for r in rows],
            xerr=[100 * r["test_std"] for r in rows],
            color=colors,
            capsize=2,
        )
        ax.set_yticks(range(len(rows)), [r["setting"] for r in rows], fontsize=7)
        ax.set_xlabel("test accuracy (%)")
        ax.set_title(name, fontsize=9)
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, list(CONFIGS), "mnist-lif", argv)
    names = args.names
    folder = common.RESULTS / "fig4" / args.scale
    for name in names:
        common.write_json(folder / f"{name}.json", run_config(name, args.scale, args.shd_dir, args.workers))
    results = {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json")) if f.stem in CONFIGS}
    (folder / "summary.md").write_text(markdown(results, args.scale))
    figure(results, folder / "fig4.png")
    print(markdown(results, args.scale))


if __name__ == "__main__":
    main()
