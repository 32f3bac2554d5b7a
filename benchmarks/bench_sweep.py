"""Per-trial overhead of ``spikestab sweep``: the time a trial costs beyond its training run.

    .venv/bin/python benchmarks/bench_sweep.py --out benchmarks/results/bench_sweep.json

A 20-point grid (``seed=0..19``) of tiny randman runs (1 epoch, one thread), one worker in this
process, on a fresh SQLite storage (or ``--storage URL``). For every trial, from the study itself:

    in-trial = (datetime_complete - datetime_start) - (fit - hook)
    gap      = datetime_start - previous trial's datetime_complete   (the worker's loop: stale check, pop)
    overhead = in-trial + gap

``fit`` (user attribute ``seconds``) is ``Trainer(cfg)`` + ``fit()`` (what ``spikestab train`` does), ``hook`` the part
of it spent in the sweep's epoch hook (reporting to Optuna, asking the pruner), which counts as overhead.
``datetime_start`` is set when the trial is popped, ``datetime_complete`` by ``tell``. The table gives
the median and max over trials and, once per sweep, the setup (checking the plan, loading the task once,
creating the study and queueing the grid) up to the first trial's start. Goal (issue 10): median < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from spikestab.sweep import run_sweep
from spikestab.sweep.storage import default_url, open_storage

TINY = {
    "task": "randman",
    "task_options": {"n_classes": 3, "n_units": 20, "n_steps": 30, "samples_per_class": 60},
    "layers": [32],
    "epochs": 1,
    "batch_size": 16,
    "lr": 1e-2,
    "dropout": 0.0,
    "threads": 1,
    "conditions": "",
}


def measure(folder: Path, trials: int, storage: str | None) -> dict:
    t0 = time.time()
    run_sweep(folder, TINY, {"seed": list(range(trials))}, storage=storage, log=lambda line: None)
    wall = time.time() - t0
    study = optuna.load_study(study_name=folder.name, storage=open_storage(storage or default_url(folder)))
    done = sorted(study.get_trials(), key=lambda t: t.datetime_start)
    rows, previous = [], None
    for t in done:
        span = (t.datetime_complete - t.datetime_start).total_seconds()
        fit, hook = t.user_attrs["seconds"]["fit"], t.user_attrs["seconds"]["hook"]
        gap = (t.datetime_start - previous).total_seconds() if previous is not None else 0.0
        rows.append(
            {
                "trial": t.number,
                "fit_s": fit,
                "hook_s": hook,
                "in_trial_s": span - fit + hook,
                "gap_s": gap,
                "overhead_s": span - fit + hook + gap,
            }
        )
        previous = t.datetime_complete
    setup = done[0].datetime_start.timestamp() - t0
    return {"trials": rows, "wall_s": wall, "setup_s": setup}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--storage", default=None, help="Optuna RDB URL (default: a SQLite file in a temp folder)")
    ap.add_argument("--out", default="benchmarks/results/bench_sweep.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = measure(Path(tmp) / "bench", args.trials, args.storage)
    rows = res["trials"]

    def stat(key: str) -> tuple[float, float]:
        values = [r[key] for r in rows]
        return statistics.median(values), max(values)

    print(f"{len(rows)} trials, storage {'sqlite (temp file)' if args.storage is None else args.storage}")
    print(f"{'':24s} {'median s':>9s} {'max s':>9s}")
    for key, label in [
        ("fit_s", "training run (fit)"),
        ("hook_s", "  of which epoch hook"),
        ("in_trial_s", "in-trial overhead"),
        ("gap_s", "between trials"),
        ("overhead_s", "overhead per trial"),
    ]:
        med, top = stat(key)
        print(f"{label:24s} {med:9.3f} {top:9.3f}")
    print(f"setup once (plan, task check, study, queue): {res['setup_s']:.2f} s; whole sweep {res['wall_s']:.2f} s")
    summary = {
        "median_overhead_s": stat("overhead_s")[0],
        "max_overhead_s": stat("overhead_s")[1],
        "median_fit_s": stat("fit_s")[0],
        "setup_s": res["setup_s"],
        "wall_s": res["wall_s"],
        "trials": rows,
        "storage": args.storage or "sqlite",
        "optuna": optuna.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
