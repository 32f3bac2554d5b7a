"""The pre-registered out-of-sample study of ``--stabilize auto`` against the grid (issue 22; protocol in
docs/results/holdout/protocol.md, committed before the first run).

On configurations never used for any decision, with a fresh data split and fresh seeds, per configuration:

  auto        ``--stabilize auto`` (the recipe with its measured regime), 5 evaluation seeds;
  grid        18 settings threshold {0.1, 0.3, 1} x dampening {0.1, 0.3, 1} x sharpness {1, 3}, no
              stabilisation, 2 grid seeds; its best setting by mean validation accuracy is
  grid-best   re-run on the 5 evaluation seeds;
  fixed       the best fixed setting (d) of the in-sample headline table, frozen (FIXED_D), 5 seeds;
  dense       the recipe forced dense (``--regime dense``), 5 seeds;
  sparse      the recipe forced sparse (``--regime sparse``), 5 seeds;
  long-auto, long-grid-best   on LONG's configurations, auto and the grid-best setting at LONG_FACTOR x
              the epochs, 3 seeds.

    python experiments/holdout_study.py --scale cpu --workers 1           # run (or continue) everything
    python experiments/holdout_study.py --scale cpu --summarise           # analyse what has finished

Every arm is a ``spikestab sweep`` (Optuna SQLite under runs/holdout/<scale>/<config>/<arm>/): a rerun
continues where it stopped. The summary (docs/results/holdout/<scale>/: summary.json, summary.md, figures)
works on partial data; at scale cpu it also copies the sweep databases to
docs/results/sweep_databases/holdout/cpu/. Statistics: ``spikestab.stats``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sqlite3
import statistics
from pathlib import Path
from typing import Any

import common
import holdout_resume

from spikestab import stats
from spikestab.sweep import report, run_sweep

DATA_SEED = 22  # a fresh data split / generated data set: every earlier experiment used data_seed 0
SEEDS = {
    "smoke": {"eval": [1000, 1001], "grid": [2000], "long": [1000, 1001]},
    "cpu": {"eval": [1000, 1001, 1002, 1003, 1004], "grid": [2000, 2001], "long": [1000, 1001, 1002]},
}
GRID = {
    "smoke": {"threshold": [0.1, 1.0], "dampening": [0.3], "sharpness": [1.0]},
    "cpu": {"threshold": [0.1, 0.3, 1.0], "dampening": [0.1, 0.3, 1.0], "sharpness": [1.0, 3.0]},
}
# (d): the headline's best fixed setting, frozen from docs/results/headline/cpu/summary.json ("fixed_setting")
FIXED_D = {"threshold": 1.0, "dampening": 0.1, "sharpness": 1.0}
MNIST = {"task_options": {"source": "mnist5k"}, "epochs": 3}
# name -> (task, options on top of common.task(task, "cpu")); none was used for any decision so far
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "mnist-lif-1x128": ("sl-mnist", {**MNIST, "layers": "1x128"}),
    "mnist-lif-3x64": ("sl-mnist", {**MNIST, "layers": "3x64"}),
    "mnist-lif-2x64-tau10": ("sl-mnist", {**MNIST, "tau": 10.0}),
    "mnist-alif-1x128": ("sl-mnist", {**MNIST, "layers": "1x128", "net": "alif"}),
    "digits-lif-2x128-tau10": (
        "sl-mnist",
        {"task_options": {"source": "digits"}, "epochs": 5, "layers": "2x128", "tau": 10.0},
    ),
    "randman-lif-2x64-u200": ("randman", {"task_options": {"n_units": 200, "dim": 2, "samples_per_class": 500}}),
    "randman-lif-2x128-5c-d4": (
        "randman",
        {"layers": "2x128", "task_options": {"n_classes": 5, "n_units": 100, "dim": 4, "samples_per_class": 500}},
    ),
    "randman-alif-1x128-u50": (
        "randman",
        {"layers": "1x128", "net": "alif", "task_options": {"n_units": 50, "dim": 1, "samples_per_class": 500}},
    ),
}
SMOKE = {"smoke-a": {}, "smoke-b": {"tau": 10.0}}  # scikit-learn's digits, 2 x 8, 1 epoch (common.task smoke)
LONG = {"cpu": ("mnist-lif-1x128", "randman-lif-2x64-u200"), "smoke": ("smoke-a",)}
LONG_FACTOR = {"cpu": 4, "smoke": 2}
MARGIN = 0.02  # the equivalence / non-inferiority margin: 2 points of test accuracy
ARMS = ("auto", "grid", "grid-best", "fixed", "dense", "sparse")
COMPARED = ("grid-best", "fixed", "dense", "sparse")  # auto minus each
THRESHOLDS = [round(0.30 + 0.02 * i, 2) for i in range(31)]  # the regime threshold sweep (exploratory)
DENSE_READABILITY = 0.62  # the frozen rule's threshold (spikestab.stability.regime at the frozen commit)
REGIME_KEYS = ("regime", "ratio", "timing_code", "dense_readability", "best_readability", "samples")


def configs(scale: str) -> dict[str, dict[str, Any]]:
    """name -> fixed training options (data_seed included) of every configuration at ``scale``."""
    if scale == "smoke":
        return {n: {**common.task("sl-mnist", "smoke"), **o, "data_seed": DATA_SEED} for n, o in SMOKE.items()}
    out = {}
    for name, (task, extra) in CONFIGS.items():
        base = common.task(task, "cpu")
        opts = {**base.get("task_options", {}), **extra.get("task_options", {})}
        out[name] = {**base, **extra, "task_options": opts, "data_seed": DATA_SEED}
    return out


def _records(folder: Path) -> list[dict]:
    """One record per finished trial of the sweep in ``folder`` (none if it has not started)."""
    if not (folder / "sweep.db").is_file():
        return []
    data = report(folder, write=False)
    recs = []
    for s in data["settings"]:
        for t in s["trials"]:
            d = common._diagnostics(Path(t["run_dir"]))
            regime = d["regime"] or {}
            recs.append(
                {
                    "params": {k: v for k, v in s["params"].items() if k != "seed"},
                    "seed": t["seed"],
                    "val": t["value"],
                    "test": t.get("test_accuracy"),
                    "seconds": d["seconds"],
                    "initial_rates": d["initial_rates"],
                    "regime": {k: regime.get(k) for k in REGIME_KEYS} if regime else None,
                }
            )
    return recs


def best_setting(grid: list[dict]) -> dict | None:
    """The grid setting with the best mean validation accuracy over its finished seeds (all grid seeds)."""
    by: dict[str, list[dict]] = {}
    for r in grid:
        by.setdefault(json.dumps(r["params"], sort_keys=True), []).append(r)
    full = {k: v for k, v in by.items() if len(v) == max(len(v) for v in by.values())}
    if not full:
        return None
    key = max(full, key=lambda k: statistics.fmean(r["val"] for r in full[k]))
    return json.loads(key)


def run_config(name: str, fixed: dict, scale: str, workers: int, execute: bool) -> dict:
    """Run (``execute``) or only read every arm of one configuration; returns its per-run records."""
    base = common.RUNS / "holdout" / scale / name
    seeds = SEEDS[scale]
    grid_n = len(seeds["grid"]) * len(list(_points(GRID[scale])))
    plan: list[tuple[str, dict, dict]] = [
        ("auto", {**fixed, "stabilize": "auto"}, {"seed": seeds["eval"]}),
        ("grid", {**fixed, "stabilize": "none"}, {**GRID[scale], "seed": seeds["grid"]}),
    ]
    out: dict[str, Any] = {"config": name, "scale": scale, "fixed": fixed, "seeds": seeds, "arms": {}}

    def do(arm: str, opts: dict, grid: dict) -> None:
        if execute:
            run_sweep(base / arm, opts, grid, workers=workers, retry_failed=True)
        out["arms"][arm] = _records(base / arm)

    for arm, opts, grid in plan:
        do(arm, opts, grid)
    best = best_setting(out["arms"]["grid"]) if len(out["arms"]["grid"]) == grid_n else None
    out["grid_best_params"] = best
    if best is not None:
        do("grid-best", {**fixed, "stabilize": "none", **best}, {"seed": seeds["eval"]})
    do("fixed", {**fixed, "stabilize": "none", **FIXED_D}, {"seed": seeds["eval"]})
    for regime in ("dense", "sparse"):
        do(regime, {**fixed, "stabilize": "auto", "regime": regime}, {"seed": seeds["eval"]})
    if name in LONG[scale]:
        longer = {**fixed, "epochs": fixed["epochs"] * LONG_FACTOR[scale]}
        do("long-auto", {**longer, "stabilize": "auto"}, {"seed": seeds["long"]})
        if best is not None:
            do("long-grid-best", {**longer, "stabilize": "none", **best}, {"seed": seeds["long"]})
    return out


def _points(grid: dict[str, list]) -> list[dict]:
    return [dict(zip(grid, v)) for v in itertools.product(*grid.values())]


def _by_seed(recs: list[dict]) -> dict[int, dict]:
    return {r["seed"]: r for r in recs}


def _paired(a: list[dict], b: list[dict]) -> tuple[list[float], list[float]]:
    """Test accuracies of the seeds both arms finished, in seed order."""
    sa, sb = _by_seed(a), _by_seed(b)
    common_seeds = sorted(set(sa) & set(sb))
    return [sa[s]["test"] for s in common_seeds], [sb[s]["test"] for s in common_seeds]


def _diff(a: list[float], b: list[float]) -> dict | None:
    if len(a) < 2:
        return None
    d = stats.paired(a, b)
    return {"n": d.n, "mean": d.estimate, "ci": list(d.ci), "p": d.p, "text": d.text()}


def best_of_k_curve(grid: list[dict]) -> list[float]:
    """E[test accuracy of the best-validation run among k grid runs drawn at random], k = 1..n."""
    tests, vals = [r["test"] for r in grid], [r["val"] for r in grid]
    return [stats.best_of_k(tests, k, scores=vals) for k in range(1, len(grid) + 1)]


def _pooled(diffs: list[float], label: str) -> dict | None:
    """Mean difference with its 95 % CI, TOST (margin MARGIN) and the non-inferiority bound."""
    if len(diffs) < 2:
        return None
    d = stats.one_sample(diffs)
    e = stats.equivalence(diffs, None, MARGIN)
    return {
        "unit": label,
        "n": d.n,
        "mean": d.estimate,
        "ci95": list(d.ci),
        "p": d.p,
        "text": d.text(),
        "tost_p": e.p,
        "ci90": list(e.ci),
        "equivalent": e.equivalent,
        "tost_text": e.text(),
        "non_inferior": e.ci[0] > -MARGIN,
        "superior": d.p < stats.ALPHA and d.estimate > 0,
        "inferior": d.p < stats.ALPHA and d.estimate < 0,
    }


def regime_record(res: dict) -> list[dict]:
    """Per evaluation seed: auto's regime and ratio, forced dense and sparse test accuracy, which was better."""
    auto, dense, sparse = (_by_seed(res["arms"].get(a, [])) for a in ("auto", "dense", "sparse"))
    out = []
    for seed in sorted(set(auto) & set(dense) & set(sparse)):
        reg = auto[seed]["regime"] or {}
        dt, st = dense[seed]["test"], sparse[seed]["test"]
        better = "tie" if dt == st else ("dense" if dt > st else "sparse")
        out.append(
            {
                "seed": seed,
                "chosen": reg.get("regime"),
                "ratio": reg.get("ratio"),
                "ratio_se": ratio_se(reg),
                "timing_code": reg.get("timing_code"),
                "dense": dt,
                "sparse": st,
                "better": better,
                "right": better in ("tie", reg.get("regime")),
            }
        )
    return out


def rule_u_choice(r: dict) -> str:
    """Rule U (registered in the protocol's amendment 1 before any forced-regime run): sparse for a timing
    code; otherwise dense or sparse only where the ratio is more than 2 standard errors from the threshold,
    and the dense default (the paper's regime, whose constants were not fitted) where it is not."""
    if r["timing_code"]:
        return "sparse"
    return "sparse" if r["ratio"] + 2 * r["ratio_se"] < DENSE_READABILITY else "dense"


def ratio_se(reg: dict) -> float | None:
    """Standard error of the probe's ratio dense / best readability (delta method; each readability a
    proportion over the probe's samples, their covariance ignored, which overstates the error)."""
    d, b, n = reg.get("dense_readability"), reg.get("best_readability"), reg.get("samples")
    if not d or not b or not n:
        return None
    return (d / b) * ((1 - d) / (d * n) + (1 - b) / (b * n)) ** 0.5


def summarise(results: dict[str, dict], scale: str) -> dict:
    """The pre-registered analysis on whatever has finished (protocol.md, section Analysis)."""
    rows, diffs = [], {arm: {"config": [], "seed": []} for arm in COMPARED}
    regime_rows, curves = [], {}
    for name, res in results.items():
        arms = res["arms"]
        row: dict[str, Any] = {"config": name, "grid_best_params": res.get("grid_best_params"), "arms": {}, "minus": {}}
        for arm in (*ARMS, "long-auto", "long-grid-best"):
            recs = arms.get(arm) or []
            if recs:
                s = stats.describe([r["test"] for r in recs])
                row["arms"][arm] = {
                    "n": s.n,
                    "mean": s.mean,
                    "std": s.std,
                    "text": s.text(),
                    "seconds": sum(r["seconds"] for r in recs),
                }
        for arm in COMPARED:
            a, b = _paired(arms.get("auto", []), arms.get(arm, []))
            row["minus"][arm] = _diff(a, b)
            if len(a) == len(SEEDS[scale]["eval"]):  # pooled only over complete pairs of arms
                per_seed = [x - y for x, y in zip(a, b)]
                diffs[arm]["seed"] += per_seed
                diffs[arm]["config"].append(statistics.fmean(per_seed))
        if "long-auto" in arms and "long-grid-best" in arms:
            a, b = _paired(arms["long-auto"], arms["long-grid-best"])
            row["long_minus_grid_best"] = _diff(a, b)
        grid = arms.get("grid") or []
        if grid and res.get("grid_best_params") is not None and "auto" in row["arms"]:
            curve = best_of_k_curve(grid)
            curves[name] = curve
            auto_mean = row["arms"]["auto"]["mean"]
            # the smallest k whose expected best-of-k reaches auto's mean; len + 1: no k does
            row["grid_runs_auto_is_worth"] = next((k for k, v in enumerate(curve, 1) if v >= auto_mean), len(curve) + 1)
            row["compute"] = {
                "auto_runs": 1,
                "grid_runs": len(grid),
                "auto_seconds_per_run": row["arms"]["auto"]["seconds"] / row["arms"]["auto"]["n"],
                "grid_seconds": row["arms"]["grid"]["seconds"],
            }
            row["compute"]["fraction_seconds"] = row["compute"]["auto_seconds_per_run"] / row["compute"]["grid_seconds"]
        rec = regime_record(res)
        for r in rec:
            r["config"] = name
        regime_rows += rec
        rows.append(row)
    pooled = {
        arm: {
            "by_configuration": _pooled(d["config"], "configuration means"),
            "by_seed": _pooled(d["seed"], "per-seed differences"),
        }
        for arm, d in diffs.items()
    }
    decided = [r for r in regime_rows if r["better"] != "tie"]
    right = sum(r["right"] for r in decided)
    const = {c: sum(r["better"] == c for r in decided) for c in ("dense", "sparse")}
    sweep = []
    for t in THRESHOLDS:
        for clause in (True, False):

            def choice(r: dict) -> str:
                if clause and r["timing_code"]:
                    return "sparse"
                return "dense" if (r["ratio"] or 0.0) >= t else "sparse"

            sweep.append(
                {
                    "threshold": t,
                    "timing_clause": clause,
                    "right": sum(choice(r) == r["better"] for r in decided),
                    "of": len(decided),
                }
            )
    # exploratory, not pre-registered: are the ratio-decided choices near the threshold (within 2 standard
    # errors of the ratio) right less often than the clear ones?
    by_ratio = [r for r in decided if not r["timing_code"] and r["ratio_se"]]
    near = [r for r in by_ratio if abs(r["ratio"] - DENSE_READABILITY) < 2 * r["ratio_se"]]
    clear = [r for r in by_ratio if r not in near]
    rule_u = [r for r in decided if r["ratio_se"] or r["timing_code"]]
    regime_u = {
        "decided": len(rule_u),
        "right": sum(rule_u_choice(r) == r["better"] for r in rule_u),
        "current_right": sum(r["right"] for r in rule_u),
        "differ": sum(rule_u_choice(r) != r["chosen"] for r in rule_u),
    }
    regime = {
        "per_seed": regime_rows,
        "decided": len(decided),
        "right": right,
        "constant_rules": const,
        "rule_u": regime_u,
        "binomial_p": stats.sign_test(right, len(decided)) if decided else 1.0,
        "threshold_sweep": sweep,
        "uncertainty": {
            "near_threshold": len(near),
            "near_right": sum(r["right"] for r in near),
            "clear": len(clear),
            "clear_right": sum(r["right"] for r in clear),
            "timing_code": sum(1 for r in decided if r["timing_code"]),
            "timing_code_right": sum(r["right"] for r in decided if r["timing_code"]),
        },
    }
    criteria = criteria_outcome(pooled, rows, regime, len(results), scale)
    return {
        "scale": scale,
        "margin": MARGIN,
        "rows": rows,
        "pooled": pooled,
        "regime": regime,
        "best_of_k": curves,
        "criteria": criteria,
    }


def criteria_outcome(pooled: dict, rows: list[dict], regime: dict, n_configs: int, scale: str) -> dict:
    """The pass criteria of the protocol, judged on the data (partial data: "incomplete")."""
    total = len(configs(scale))
    complete = pooled["grid-best"]["by_configuration"]
    n_eval = len(SEEDS[scale]["eval"])
    n_done = sum(
        1
        for r in rows
        if all(r["arms"].get(a, {}).get("n") == n_eval for a in ("auto", "grid-best", "fixed", "dense", "sparse"))
    )
    c1 = None
    if complete:  # pass: the 90 % CI's lower end above -MARGIN; fail: its upper end below -MARGIN
        c1 = "pass" if complete["non_inferior"] else "fail" if complete["ci90"][1] < -MARGIN else "inconclusive"
    fractions = [r["compute"]["fraction_seconds"] for r in rows if r.get("compute")]
    c2 = None if not fractions else ("pass" if max(fractions) <= 1 / 20 else "fail")
    better_const = max(regime["constant_rules"].values()) if regime["decided"] else 0
    c3 = (
        None
        if not regime["decided"]
        else ("pass" if regime["binomial_p"] < stats.ALPHA and regime["right"] > better_const else "fail")
    )

    def judged(v: str | None) -> str | None:  # on part of the data a criterion is only provisional
        return v if v is None or n_done == total else f"provisional: {v}"

    return {
        "configurations_complete": n_done,
        "configurations_planned": total,
        "complete": n_done == total,
        "C1_non_inferior_to_rerun_best_grid": judged(c1),
        "C2_compute_at_most_1_20": judged(c2),
        "C3_regime_beats_chance_and_constant_rules": judged(c3),
    }


def _worth(row: dict) -> str:
    k = row.get("grid_runs_auto_is_worth")
    if k is None:
        return "-"
    return f"> {k - 1} (all)" if k > row["compute"]["grid_runs"] else str(k)


def markdown(summary: dict) -> str:
    crit = summary["criteria"]
    lines = [
        f"# Hold-out study, scale `{summary['scale']}`",
        "",
        f"Configurations complete (every arm of the normal budget): {crit['configurations_complete']} of "
        f"{crit['configurations_planned']}" + ("" if crit["complete"] else " (partial: verdicts provisional)"),
        "",
        "Test accuracy % (mean +- sample std over seeds); auto minus each arm: paired per-seed difference "
        "with its 95 % t CI.",
        "",
        "| config | auto | grid runs done | grid-best (setting) | fixed (d) | forced dense | forced sparse | "
        "auto - grid-best | auto - fixed | grid runs auto is worth | auto compute / grid |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['config']} | {_arm(r, 'auto')} | {r['arms']['grid']['n'] if 'grid' in r['arms'] else 0} | "
            f"{_arm(r, 'grid-best')}{_setting(r)} | {_arm(r, 'fixed')} | {_arm(r, 'dense')} | "
            f"{_arm(r, 'sparse')} | {_minus(r, 'grid-best')} | {_minus(r, 'fixed')} | {_worth(r)} | {_compute(r)} |"
        )
    lines += [
        "",
        "## Pooled over configurations (auto minus each arm)",
        "",
        "| arm | unit | n | mean difference (95 % CI, p) | TOST +-2 points (90 % CI, p) | "
        "non-inferior (90 % CI above -2) |",
        "|---|---|---|---|---|---|",
    ]
    for arm, both in summary["pooled"].items():
        for p in both.values():
            if p:
                lines.append(
                    f"| {arm} | {p['unit']} | {p['n']} | {p['text']} | {p['tost_text']} | "
                    f"{'yes' if p['non_inferior'] else 'no'} |"
                )
    lines += [
        "",
        f"## Longer training ({' and '.join(LONG[summary['scale']])}, x{LONG_FACTOR[summary['scale']]} "
        "epochs; descriptive)",
        "",
        "| config | auto | grid-best setting | auto - grid-best (longer) | auto - grid-best (normal budget) |",
        "|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        if "long-auto" in r["arms"]:
            long, normal = r.get("long_minus_grid_best"), r["minus"].get("grid-best")
            lines.append(
                f"| {r['config']} | {r['arms']['long-auto']['text']} | "
                f"{r['arms']['long-grid-best']['text'] if 'long-grid-best' in r['arms'] else '-'} | "
                f"{long['text'] if long else '-'} | {normal['text'] if normal else '-'} |"
            )
    reg = summary["regime"]
    lines += [
        "",
        "## Regime decisions per seed",
        "",
        f"auto's regime was the better of forced dense / forced sparse (same seed, test accuracy) on "
        f"{reg['right']} of {reg['decided']} seeds (ties left out; one-sided binomial "
        f"{stats.format_p(reg['binomial_p'])}); always dense: {reg['constant_rules'].get('dense', 0)}, "
        f"always sparse: {reg['constant_rules'].get('sparse', 0)}.",
        "",
    ]
    best = max(reg["threshold_sweep"], key=lambda s: s["right"], default=None)
    if best:
        at_062 = next(s["right"] for s in reg["threshold_sweep"] if s["threshold"] == 0.62 and s["timing_clause"])
        lines.append(
            f"Threshold sweep (exploratory, in-sample to this study): the most right decisions, "
            f"{best['right']} of {best['of']}, at threshold {best['threshold']} "
            f"({'with' if best['timing_clause'] else 'without'} the timing-code clause); at 0.62 with the "
            f"clause: {at_062}."
        )
    u = reg["uncertainty"]
    lines += [
        "",
        f"Exploratory (not pre-registered): decided by the timing-code clause {u['timing_code_right']} "
        f"right of {u['timing_code']}; by the ratio, within 2 standard errors of {DENSE_READABILITY} "
        f"{u['near_right']} right of {u['near_threshold']}, beyond {u['clear_right']} right of {u['clear']}.",
    ]
    ru = reg["rule_u"]
    lines += [
        "",
        f"Rule U (protocol amendment 1: decide only beyond 2 standard errors of the ratio, else dense): "
        f"right on {ru['right']} of {ru['decided']} seeds against {ru['current_right']} for the current rule; "
        f"the two differ on {ru['differ']}.",
    ]
    lines += ["", "## Pass criteria (stated in protocol.md before the runs)", "", *_criteria(crit)]
    return "\n".join(lines) + "\n"


def readme_markdown(summary: dict) -> str:
    """The README's out-of-sample table: per configuration auto against the re-run best grid setting and the
    frozen fixed setting, the pooled difference with its equivalence test, the pass criteria."""
    crit = summary["criteria"]
    lines = [
        f"Scale `{summary['scale']}`: {crit['configurations_complete']} of {crit['configurations_planned']} "
        "configurations complete"
        + ("" if crit["complete"] else " (study running: every verdict provisional)")
        + ". Test accuracy %, mean +- sample std over the fresh evaluation seeds; differences paired per seed, "
        "95 % t CI.",
        "",
        "| configuration | auto | grid-best re-run (setting) | fixed (d) | auto - grid-best | auto - fixed | "
        "auto compute / grid |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['config']} | {_arm(r, 'auto')} | {_arm(r, 'grid-best')}{_setting(r)} | {_arm(r, 'fixed')} | "
            f"{_minus(r, 'grid-best')} | {_minus(r, 'fixed')} | {_compute(r)} |"
        )
    pooled = summary["pooled"]["grid-best"]["by_configuration"]
    if pooled:
        lines += [
            "",
            f"Pooled over configurations, auto - grid-best: {pooled['text']}; {pooled['tost_text']}: "
            f"non-inferior at 2 points: {'yes' if pooled['non_inferior'] else 'no'}.",
        ]
    return "\n".join([*lines, "", "Pass criteria (stated before the runs):", "", *_criteria(crit)]) + "\n"


def _criteria(crit: dict) -> list[str]:
    return [f"- {k}: {'not judged yet (no complete data)' if v is None else v}" for k, v in crit.items()]


def _arm(row: dict, arm: str) -> str:
    a = row["arms"].get(arm)
    return f"{a['text']} (n {a['n']})" if a else "-"


def _setting(row: dict) -> str:
    p = row["grid_best_params"]
    return "" if not p else " (" + ", ".join(f"{k[:4]} {v:g}" for k, v in sorted(p.items())) + ")"


def _minus(row: dict, arm: str) -> str:
    m = row["minus"].get(arm)
    return m["text"] if m else "-"


def _compute(row: dict) -> str:
    comp = row.get("compute")
    return f"1/{1 / comp['fraction_seconds']:.0f} ({comp['grid_runs']} runs)" if comp else "-"


def _interval(ax: Any, x: float, mean: float, ci: list[float], fmt: str, color: str) -> None:
    """A point at ``mean`` with its interval, in points."""
    ax.errorbar(
        [x], [100 * mean], yerr=[[100 * (mean - ci[0])], [100 * (ci[1] - mean)]], fmt=fmt, color=color, capsize=3
    )


def figures(summary: dict, folder: Path) -> None:
    rows = summary["rows"]
    fig, ax = common.figure(figsize=(2 + 1.3 * max(len(rows), 1), 3.4))
    arms = ("auto", "grid-best", "fixed", "dense", "sparse")
    for k, arm in enumerate(arms):
        xs = [i + (k - 2) * 0.16 for i in range(len(rows))]
        vals = [100 * r["arms"][arm]["mean"] if arm in r["arms"] else 0 for r in rows]
        errs = [100 * r["arms"][arm]["std"] if arm in r["arms"] else 0 for r in rows]
        ax.bar(xs, vals, 0.16, yerr=errs, capsize=2, label=arm)
    ax.set_xticks(range(len(rows)), [r["config"] for r in rows], fontsize=6, rotation=20)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=6)
    common.save_figure(fig, folder / "arms.png")

    fig, ax = common.figure(figsize=(5.5, 3.4))
    for i, r in enumerate(rows):
        d = r["minus"].get("grid-best")
        if d:
            _interval(ax, i, d["mean"], d["ci"], "o", "C0")
    p = summary["pooled"]["grid-best"]["by_configuration"]
    if p:
        _interval(ax, len(rows), p["mean"], p["ci95"], "s", "k")
    for y in (-100 * MARGIN, 0.0, 100 * MARGIN):
        ax.axhline(y, color="grey", lw=0.8, ls="-" if y == 0 else "--")
    ax.set_xticks(range(len(rows) + 1), [r["config"] for r in rows] + ["pooled"], fontsize=6, rotation=20)
    ax.set_ylabel("auto - re-run best grid (points, 95 % CI)")
    common.save_figure(fig, folder / "differences.png")

    fig, ax = common.figure(figsize=(5, 3.4))
    for i, (name, curve) in enumerate(summary["best_of_k"].items()):
        auto = next(r["arms"]["auto"]["mean"] for r in rows if r["config"] == name)
        ax.plot(range(1, len(curve) + 1), [100 * (v - auto) for v in curve], label=name, color=f"C{i % 10}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("grid runs k (best of k by validation)")
    ax.set_ylabel("expected test acc. - auto mean (points)")
    ax.legend(fontsize=5)
    common.save_figure(fig, folder / "best_of_k.png")

    fig, ax = common.figure(figsize=(5, 3.2))
    sweep = summary["regime"]["threshold_sweep"]
    for clause in (True, False):
        pts = [s for s in sweep if s["timing_clause"] == clause]
        ax.plot(
            [s["threshold"] for s in pts],
            [s["right"] for s in pts],
            marker=".",
            label="with timing-code clause" if clause else "ratio only",
        )
    ax.axvline(0.62, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("dense when ratio >= threshold")
    ax.set_ylabel(f"right per seed (of {summary['regime']['decided']})")
    ax.legend(fontsize=7)
    common.save_figure(fig, folder / "regime_threshold.png")


def copy_databases(scale: str) -> None:
    """Consistent copies (SQLite backup) of every arm's sweep.db under docs/results/sweep_databases."""
    for db in sorted((common.RUNS / "holdout" / scale).glob("*/*/sweep.db")):
        dest = common.RESULTS / "sweep_databases" / "holdout" / scale / db.parent.parent.name / f"{db.parent.name}.db"
        dest.parent.mkdir(parents=True, exist_ok=True)
        src, dst = sqlite3.connect(db), sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=common.SCALES, default="smoke")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--configs", default=None, help="comma list (default: all of the scale)")
    p.add_argument("--summarise", action="store_true", help="only analyse the finished runs (no training)")
    args = p.parse_args(argv)
    every = configs(args.scale)
    names = args.configs.split(",") if args.configs else list(every)
    unknown = [n for n in names if n not in every]
    if unknown:
        p.error(f"--configs: unknown {unknown}; known: {', '.join(every)}")
    folder = common.RESULTS / "holdout" / args.scale
    holdout_resume.resume(common, report, args.scale)
    results = {}
    for name in every:  # every configuration is read, only the chosen ones run
        run = not args.summarise and name in names
        results[name] = run_config(name, every[name], args.scale, args.workers, execute=run)
        if run:
            common.write_json(folder / f"{name}.json", results[name])
            write_summary(results, args.scale, folder)
    write_summary(results, args.scale, folder)
    print((folder / "summary.md").read_text())


def write_summary(results: dict[str, dict], scale: str, folder: Path) -> None:
    """summary.json, summary.md and figures from the configurations with any finished run."""
    started = {n: r for n, r in results.items() if any(r["arms"].values())}
    for name, res in started.items():
        common.write_json(folder / f"{name}.json", res)
    summary = summarise(started, scale)
    common.write_json(folder / "summary.json", summary)
    (folder / "summary.md").write_text(markdown(summary))
    figures(summary, folder)
    if scale == "cpu":
        copy_databases(scale)
        common.replace_block(common.OUT / "README.md", "holdout_study.py", readme_markdown(summary))


if __name__ == "__main__":
    main()
