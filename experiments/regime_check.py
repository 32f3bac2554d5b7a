"""The recipe's regime choice checked: per configuration, test accuracy (mean +- std over seeds) of
``--conditions auto`` with its measured regime, and of the recipe forced dense (``--regime dense``, the
earlier recipe) and forced sparse (``--regime sparse``), with the regime ``auto`` chose per seed. The
configurations include tasks the choice was not decided on (scikit-learn's 8x8 digits as a latency code,
Randman with spikestab's default 20 units on a 1-d manifold), so the table says whether the measurement
picks the better start where nobody looked (docs/results/stability_choice.md, section 5).

    python experiments/regime_check.py --scale cpu --shd-dir runs/shd_synth --workers 1
    python experiments/regime_check.py --scale cpu --configs digits-lif-64,randman20-lif-64

Writes docs/results/regime/<scale>/<config>.json, summary.json, summary.md and regime.png. Reruns continue
the sweeps; ``--summarise`` only rewrites the summary from the per-configuration JSON.
"""

from __future__ import annotations

import json

import common

# name -> (fixed training options on top of common.task(task)); the task is the first part of the name
CONFIGS = {
    "digits-lif-64": ("sl-mnist", {"task_options": {"source": "digits"}, "epochs": 5}),
    "randman20-lif-64": ("randman", {"task_options": {}, "epochs": 5}),
    "mnist-lif-64": ("sl-mnist", {}),
    "randman-lif-64": ("randman", {}),
    "shd-lif-64": ("shd", {}),
    "randman-alif-64": ("randman", {"net": "alif"}),
    "shd-alif-64": ("shd", {"net": "alif"}),
    # added after the timing-code clause of the regime choice, to check it and the ratio on tasks not looked at
    "randman50-3d-lif-64": (
        "randman",
        {"task_options": {"n_classes": 5, "n_units": 50, "dim": 3, "samples_per_class": 500}},
    ),
    "digits-alif-64": ("sl-mnist", {"task_options": {"source": "digits"}, "epochs": 5, "net": "alif"}),
    "shd125-lif-64": ("shd", {"task_options": {"dt": 0.008, "n_steps": 125}}),
}
REGIMES = ("auto", "dense", "sparse")
SEEDS = {"smoke": [0], "cpu": [0, 1, 2]}


def run_config(name: str, scale: str, shd_dir: str | None, workers: int) -> dict:
    task, extra = CONFIGS[name]
    fixed = {**common.task(task, scale, shd_dir), **(extra if scale == "cpu" else {}), "conditions": "auto"}
    base = common.RUNS / "regime" / scale / name
    out = {"config": name, "scale": scale, "fixed": fixed}
    for regime in REGIMES:
        row = common.sweep(base / regime, {**fixed, "regime": regime}, {"seed": SEEDS[scale]}, workers)[0]
        row["regimes"] = [(t.get("regime") or {}).get("regime") for t in row["trials"]]
        out[regime] = row
    return out


def markdown(results: dict[str, dict], scale: str) -> str:
    def cell(r):
        return "-" if r["test_mean"] is None else f"{100 * r['test_mean']:.1f} +- {100 * (r['test_std'] or 0):.1f}"

    lines = [
        f"Scale `{scale}`; test accuracy % (mean +- sample std over seeds). Right per seed: auto's regime "
        "is the one whose forced run has the higher test accuracy on that seed.",
        "",
        "| config | auto | regime auto chose (per seed) | forced dense | forced sparse | "
        "auto picked the better mean | right per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        dense, sparse = res["dense"]["test_mean"], res["sparse"]["test_mean"]
        better = "dense" if dense >= sparse else "sparse"
        chosen = res["auto"]["regimes"]
        right = per_seed_right(res)
        lines.append(
            f"| {name} | {cell(res['auto'])} | {', '.join(map(str, chosen))} | {cell(res['dense'])} | "
            f"{cell(res['sparse'])} | {sum(c == better for c in chosen)} of {len(chosen)} | "
            f"{sum(right)} of {len(right)} |"
        )
    return "\n".join(lines) + "\n"


def per_seed_right(res: dict) -> list[bool]:
    """Per seed that all three arms finished: whether auto's regime was the better forced regime on that seed
    (a tie counts as right)."""

    def by_seed(arm: str) -> dict[int, dict]:
        return {
            t["seed"]: {"test": x, "regime": (t.get("regime") or {}).get("regime")}
            for t, x in zip(res[arm]["trials"], res[arm]["test"])
        }

    auto, dense, sparse = by_seed("auto"), by_seed("dense"), by_seed("sparse")
    out = []
    for seed in sorted(set(auto) & set(dense) & set(sparse)):
        d, s = dense[seed]["test"], sparse[seed]["test"]
        out.append(d == s or auto[seed]["regime"] == ("dense" if d > s else "sparse"))
    return out


def figure(results: dict[str, dict], path):
    fig, ax = common.figure(figsize=(1.6 + 1.4 * len(results), 3.2))
    for k, regime in enumerate(REGIMES):
        xs = [i + (k - 1) * 0.25 for i in range(len(results))]
        vals = [100 * (r[regime]["test_mean"] or 0) for r in results.values()]
        errs = [100 * (r[regime]["test_std"] or 0) for r in results.values()]
        ax.bar(xs, vals, 0.25, yerr=errs, capsize=2, label=f"{regime}" if regime == "auto" else f"forced {regime}")
    ax.set_xticks(range(len(results)), list(results), fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7)
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, list(CONFIGS), "digits-lif-64", argv, summarise=True)
    folder = common.RESULTS / "regime" / args.scale
    for name in [] if args.summarise else args.names:
        common.write_json(folder / f"{name}.json", run_config(name, args.scale, args.shd_dir, args.workers))
    results = {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json")) if f.stem in CONFIGS}
    keys = ("test_mean", "test_std", "test", "regimes")
    common.write_json(
        folder / "summary.json",
        {
            name: {**{r: {k: res[r][k] for k in keys} for r in REGIMES}, "right_per_seed": per_seed_right(res)}
            for name, res in results.items()
        },
    )
    (folder / "summary.md").write_text(markdown(results, args.scale))
    figure(results, folder / "regime.png")
    print(markdown(results, args.scale))


if __name__ == "__main__":
    main()
