"""Compact surrogate gradients under the recipe (issue 27 item 4): test accuracy of the triangular SG at
sharpness 1 and 4 against the default fast sigmoid, every arm stabilised by ``--conditions auto``, on
sl-MNIST (2x128 LIF) and synthetic SHD (2x256 LIF); the pre-registered protocol is
docs/results/compact_sg/protocol.md.

    python experiments/compact_sg.py --scale cpu --shd-dir runs/shd_synth --workers 2

Writes docs/results/compact_sg/<scale>/<config>.json, summary.json and summary.md, and the generated block
of docs/results/kernels.md (cpu scale). Reruns continue the sweeps; ``--summarise`` only rewrites the
summary from the per-configuration JSON.
"""

from __future__ import annotations

from pathlib import Path

import common

from spikestab import stats

# name -> (task, fixed options on top of common.task(task)); bench_train's sl-MNIST and SHD-shaped LIF widths
CONFIGS = {
    "mnist-lif-2x128": ("sl-mnist", {"layers": "2x128"}),
    "shd-lif-2x256": ("shd", {"layers": "2x256"}),
}
# arm -> (surrogate, sharpness); the first is the reference every other arm is compared with
ARMS = {"fast-sigmoid": ("fast-sigmoid", 1.0), "triangular-1": ("triangular", 1.0), "triangular-4": ("triangular", 4.0)}
REFERENCE = "fast-sigmoid"
SEEDS = {"smoke": [2700, 2701], "cpu": [2700, 2701, 2702, 2703, 2704]}
DATA_SEED = 27
MARGIN = 0.02  # non-inferiority margin: 2 points of test accuracy
CHANCE = {"sl-mnist": 0.1, "shd": 0.05}  # a diverged run's accuracy in the analysis (protocol)


def run_config(name: str, scale: str, shd_dir: str | None, workers: int) -> dict:
    """Every arm of one configuration (resumed sweeps): per arm the seeds' test accuracies and seconds."""
    task, extra = CONFIGS[name]
    fixed = {**common.task(task, scale, shd_dir), **(extra if scale == "cpu" else {})}
    fixed.update(conditions="auto", data_seed=DATA_SEED)
    arms = {arm: {"surrogate": surrogate, "sharpness": sharpness} for arm, (surrogate, sharpness) in ARMS.items()}
    base = common.RUNS / "compact_sg" / scale / name
    runs = common.run_arms(base, fixed, arms, SEEDS[scale], workers, CHANCE[task])
    return {"config": name, "scale": scale, "fixed": fixed, "arms": runs}


def compare(res: dict, arm: str) -> dict:
    """``arm`` against the reference on the seeds both finished: paired difference of test accuracy, the
    non-inferiority verdict (margin ``MARGIN``), and the paired ratio of seconds (descriptive)."""
    ref, other = res["arms"][REFERENCE], res["arms"][arm]
    acc_ref, acc = common.by_seed(ref, "test"), common.by_seed(other, "test")
    seeds = sorted(set(acc_ref) & set(acc))
    a, b = [acc[s] for s in seeds], [acc_ref[s] for s in seeds]
    out: dict = {"arm": arm, "seeds": seeds, "n": len(seeds)}
    if len(seeds) < 2:
        return {**out, "verdict": "inconclusive", "text": f"{len(seeds)} paired seed(s): no test"}
    diff = stats.paired(a, b)
    equiv = stats.equivalence(a, b, MARGIN)
    sec_ref, sec = common.by_seed(ref, "seconds"), common.by_seed(other, "seconds")
    ratios = [sec_ref[s] / sec[s] for s in seeds if s in sec_ref and s in sec]
    return {
        **out,
        "difference": diff.estimate,
        "ci": list(diff.ci),
        "p": diff.p,
        "tost_ci": list(equiv.ci),
        "verdict": stats.non_inferior(equiv),
        "text": f"{diff.text()}; non-inferiority {equiv.text()}",
        "speed_ratio": stats.describe(ratios).mean if ratios else None,
    }


def decision(summary: dict) -> str:
    """The protocol's decision rules applied to the verdicts (the speed condition of "default" is read from
    bench_sparse_backward, so this names the candidates only)."""
    compact = [a for a in ARMS if a != REFERENCE]
    held = [a for a in compact if all(summary[c]["comparisons"][a]["verdict"] == "held" for c in summary)]
    if len(summary) < len(CONFIGS):
        return "incomplete: not every configuration has run"
    if not held:
        return "no compact arm is non-inferior on both configurations: the fast sigmoid stays the default"
    return f"non-inferior on both configurations: {', '.join(held)} (a recipe option)"


def markdown(results: dict[str, dict], summary: dict, scale: str) -> str:
    lines = [
        f"Scale `{scale}`; test accuracy % (mean +- sample std over seeds {', '.join(map(str, SEEDS[scale]))}), "
        "every arm `--conditions auto`; a diverged run (stopped on a non-finite gradient) counts at chance; "
        "difference = arm - fast sigmoid, paired per seed (95 % CI); "
        f"non-inferiority margin {100 * MARGIN:.0f} points (90 % interval, one-sided 0.05). Seconds: "
        "training plus stabilisation per run, a shared machine (descriptive).",
        "",
        "| config | arm | test acc % | diverged | difference, points (95 % CI) | non-inferior | seconds | "
        "fast sigmoid / arm time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for arm, r in res["arms"].items():
            acc = stats.describe(r["test"]).text() if r["test"] else "-"
            sec = f"{stats.describe(r['seconds']).mean:.1f}" if r["seconds"] else "-"
            head = f"| {name} | {arm} | {acc} | {len(r['diverged'])} of {len(r['seeds'])} |"
            if arm == REFERENCE:
                lines.append(f"{head} (reference) | | {sec} | |")
                continue
            c = summary[name]["comparisons"][arm]
            if "difference" not in c:
                lines.append(f"{head} {c['text']} | {c['verdict']} | {sec} | |")
                continue
            lo, hi = (100 * x for x in c["ci"])
            ratio = "-" if c["speed_ratio"] is None else f"{c['speed_ratio']:.2f}"
            lines.append(
                f"{head} {100 * c['difference']:+.1f} ({lo:+.1f} to {hi:+.1f}) | {c['verdict']} | {sec} | {ratio} |"
            )
    lines += ["", f"Decision (protocol): {decision(summary)}."]
    return "\n".join(lines) + "\n"


def summarise(folder: Path, scale: str) -> tuple[dict, str]:
    """The summary (JSON) and its table from the per-configuration JSON in ``folder``."""
    results = common.load_results(folder, list(CONFIGS))
    configs = {
        name: {"comparisons": {arm: compare(res, arm) for arm in ARMS if arm != REFERENCE}}
        for name, res in results.items()
    }
    return {"configs": configs, "decision": decision(configs)}, markdown(results, configs, scale)


def main(argv: list[str] | None = None) -> None:
    args, text = common.study_main(__doc__, "compact_sg", CONFIGS, "mnist-lif-2x128", run_config, summarise, argv)
    if args.scale == "cpu":
        common.replace_block(common.RESULTS / "kernels.md", "compact_sg.py", text)


if __name__ == "__main__":
    main()
