"""The recipe's sparse target rate (0.03, 0.01, 0.003) decided on three new configurations by validation
accuracy and checked on four others by test accuracy, with the fixed near-silent setting as a reference; the
pre-registered protocol is docs/results/sparse_rate/protocol.md.

    python experiments/sparse_rate.py --scale cpu --shd-dir runs/shd_synth --workers 2

Writes docs/results/sparse_rate/<scale>/<config>.json, summary.json and summary.md, and at cpu scale the
generated block of docs/results/sparse_rate.md. Reruns continue the sweeps; ``--summarise`` only rewrites
the summary from the per-configuration JSON.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import common

from spikestab import stats


def _randman(classes: int, units: int, dim: int) -> dict:
    return {"n_classes": classes, "n_units": units, "dim": dim, "samples_per_class": 500}


# name -> (stage, task, options on top of common.task(task)); decision configurations first
CONFIGS = {
    "randman-lif-2x96-c8-u80-d3": ("decision", "randman", {"layers": "2x96", "task_options": _randman(8, 80, 3)}),
    "randman-alif-2x64-c10-u120-d2": (
        "decision",
        "randman",
        {"layers": "2x64", "net": "alif", "task_options": _randman(10, 120, 2)},
    ),
    "shd-lif-1x128": ("decision", "shd", {"layers": "1x128"}),
    "randman-lif-1x96-c6-u60-d4": ("check", "randman", {"layers": "1x96", "task_options": _randman(6, 60, 4)}),
    "randman-lif-3x64-c12-u100-d2": ("check", "randman", {"layers": "3x64", "task_options": _randman(12, 100, 2)}),
    "randman-alif-1x128-c5-u150-d3": (
        "check",
        "randman",
        {"layers": "1x128", "net": "alif", "task_options": _randman(5, 150, 3)},
    ),
    "shd-lif-2x128": ("check", "shd", {"layers": "2x128"}),
}
CANDIDATES = {"rate-0.03": 0.03, "rate-0.01": 0.01, "rate-0.003": 0.003}
DEFAULT = "rate-0.03"  # the recipe as it is (regime.SPARSE_RATE)
ARMS = {
    **{arm: {"conditions": "auto", "sparse_rate": rate} for arm, rate in CANDIDATES.items()},
    "fixed": {"conditions": "none", "threshold": 1.0, "dampening": 0.1, "sharpness": 1.0},
}
SEEDS = {"smoke": [3100, 3101], "cpu": [3100, 3101, 3102, 3103, 3104]}
DATA_SEED = 31


def run_config(name: str, scale: str, shd_dir: str | None, workers: int) -> dict:
    """Every arm of one configuration (resumed sweeps)."""
    stage, task, extra = CONFIGS[name]
    fixed = {**common.task(task, scale, shd_dir), **(extra if scale == "cpu" else {}), "data_seed": DATA_SEED}
    classes = fixed.get("task_options", {}).get("n_classes", 20 if task == "shd" else 10)
    base = common.RUNS / "sparse_rate" / scale / name
    runs = common.run_arms(base, fixed, ARMS, SEEDS[scale], workers, 1.0 / classes)
    return {"config": name, "stage": stage, "scale": scale, "fixed": fixed, "arms": runs}


def pairs(results: dict[str, dict], arm: str, against: str, key: str) -> list[tuple[float, float]]:
    """(arm, against) values of ``key`` per (configuration, seed) both finished, over ``results``."""
    out = []
    for res in results.values():
        a, b = common.by_seed(res["arms"][arm], key), common.by_seed(res["arms"][against], key)
        out += [(a[s], b[s]) for s in sorted(set(a) & set(b))]
    return out


def decide(results: dict[str, dict]) -> dict:
    """Step 1: the candidate with the highest mean validation accuracy over the decision configurations."""
    decision = {n: r for n, r in results.items() if r["stage"] == "decision"}
    means = {
        arm: statistics.fmean(v for r in decision.values() for v in r["arms"][arm]["val"])
        for arm in CANDIDATES
        if decision and all(r["arms"][arm]["val"] for r in decision.values())
    }
    chosen = max(means, key=lambda a: means[a]) if len(means) == len(CANDIDATES) else None
    return {"val_means": means, "configs": sorted(decision), "chosen": chosen}


def check(results: dict[str, dict], chosen: str | None) -> dict:
    """Step 2: chosen - default test accuracy per (configuration, seed) over the check configurations."""
    checked = {n: r for n, r in results.items() if r["stage"] == "check"}
    if chosen is None:
        return {"verdict": "inconclusive", "text": "the decision has not run"}
    if chosen == DEFAULT:
        return {"verdict": "no change", "text": f"the decision chose {DEFAULT}: nothing to check"}
    both = pairs(checked, chosen, DEFAULT, "test")
    if len(both) < 2:
        return {"verdict": "inconclusive", "text": f"{len(both)} pair(s): no test"}
    d = stats.paired([a for a, _ in both], [b for _, b in both])
    return {
        "verdict": stats.directional(d, "greater"),
        "n": d.n,
        "difference": d.estimate,
        "ci": list(d.ci),
        "p": d.p,
        "text": d.text(),
        "configs": sorted(checked),
    }


RULE_R = {True: "rate-0.003", False: DEFAULT}  # amendment 1: the arm rule R runs, by the probe's timing code


def rule_r(results: dict[str, dict]) -> dict:
    """Amendment 1: rule R (0.003 where the regime probe found a timing code, else 0.03) against rate-0.03 in
    test accuracy per (check configuration, seed), pooled; the probe's call must agree across the arms."""
    checked = {n: r for n, r in results.items() if r["stage"] == "check"}
    r_values, base, agree = [], [], True
    for res in checked.values():
        codes = {arm: common.by_seed(res["arms"][arm], "timing_codes") for arm in CANDIDATES}
        ref = common.by_seed(res["arms"][DEFAULT], "test")
        for seed, code in codes[DEFAULT].items():
            agree &= all(c.get(seed, code) == code for c in codes.values())
            chosen = common.by_seed(res["arms"][RULE_R[bool(code)]], "test")
            if seed in chosen and seed in ref:
                r_values.append(chosen[seed])
                base.append(ref[seed])
    out: dict = {"configs": sorted(checked), "probe_agrees_across_arms": agree, "n": len(base)}
    if len(base) < 2:
        return {**out, "verdict": "inconclusive", "text": f"{len(base)} pair(s): no test"}
    d = stats.paired(r_values, base)
    verdict = stats.directional(d, "greater")
    return {**out, "verdict": verdict, "difference": d.estimate, "ci": list(d.ci), "p": d.p, "text": d.text()}


def per_config(res: dict, arm: str, against: str) -> str:
    """``arm`` - ``against`` test accuracy on one configuration, paired per seed, as text."""
    both = pairs({"one": res}, arm, against, "test")
    if len(both) < 2:
        return "-"
    d = stats.paired([a for a, _ in both], [b for _, b in both])
    lo, hi = (100 * c for c in d.ci)
    return f"{100 * d.estimate:+.1f} ({lo:+.1f} to {hi:+.1f})"


def markdown(results: dict[str, dict], decision: dict, checked: dict, followup: dict, scale: str) -> str:
    def cell(values: list[float]) -> str:
        return stats.describe(values).text() if values else "-"

    lines = [
        f"Scale `{scale}`; accuracy % (mean +- sample std over seeds {', '.join(map(str, SEEDS[scale]))}); "
        "difference = arm - rate-0.03 in test accuracy points, paired per seed (95 % CI); a diverged run counts "
        "at chance.",
        "",
        "| stage | config | arm | val acc % | test acc % | diverged | regimes (sparse, timing code of seeds) | "
        "layer-1 initial rate | test vs rate-0.03 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for arm, r in res["arms"].items():
            rates = [x[0] for x in r["initial_rates"] if x]
            rate = f"{statistics.fmean(rates):.4f}" if rates else "-"
            codes = r.get("timing_codes", [])
            regimes = (
                f"{r['regimes'].count('sparse')}, {sum(map(bool, codes))} of {len(r['regimes'])}"
                if arm in CANDIDATES
                else "-"
            )
            vs = "(reference)" if arm == DEFAULT else per_config(res, arm, DEFAULT)
            lines.append(
                f"| {res['stage']} | {name} | {arm} | {cell(r['val'])} | {cell(r['test'])} | "
                f"{len(r['diverged'])} | {regimes} | {rate} | {vs} |"
            )
    means = ", ".join(f"{arm} {100 * v:.1f}" for arm, v in decision["val_means"].items())
    lines += [
        "",
        f"Decision (validation accuracy % over the decision configurations): {means or '-'}; chosen: "
        f"{decision['chosen'] or '-'}.",
        "",
        f"Check (test accuracy, chosen - rate-0.03, pooled over the check configurations): {checked['text']}; "
        f"verdict: **{checked['verdict']}**.",
        "",
        "Amendment 1, rule R (0.003 where the regime probe finds a timing code, else 0.03) - rate-0.03, test "
        f"accuracy pooled over the check configurations: {followup['text']}; verdict: **{followup['verdict']}**"
        f"{'' if followup['probe_agrees_across_arms'] else ' (the probe did not decide alike in every arm)'}.",
    ]
    return "\n".join(lines) + "\n"


def summarise(folder: Path, scale: str) -> tuple[dict, str]:
    """The summary (JSON) and its table from the per-configuration JSON in ``folder``."""
    results = common.load_results(folder, list(CONFIGS))
    decision = decide(results)
    checked = check(results, decision["chosen"])
    followup = rule_r(results)
    summary = {"decision": decision, "check": checked, "rule_r": followup}
    return summary, markdown(results, decision, checked, followup, scale)


def main(argv: list[str] | None = None) -> None:
    args, text = common.study_main(
        __doc__, "sparse_rate", CONFIGS, "randman-lif-2x96-c8-u80-d3", run_config, summarise, argv
    )
    if args.scale == "cpu":
        common.replace_block(common.RESULTS / "sparse_rate.md", "sparse_rate.py", text)


if __name__ == "__main__":
    main()
