"""Continue the hold-out study on a machine that has only the committed files (protocol amendment 2).

The study's trials live in Optuna databases and run folders under runs/ (never committed); what is committed
is a consistent copy of every database (docs/results/sweep_databases/holdout/<scale>/) and one record per
finished trial (docs/results/holdout/<scale>/<config>.json). On a fresh machine ``resume``:

- copies each committed database back to runs/holdout/<scale>/<config>/<arm>/sweep.db where none is there,
  so the sweeps skip what has finished instead of training it again;
- makes the study's per-trial diagnostics (``common._diagnostics``, which reads a run folder) answer from the
  committed record for a trial whose run folder is gone, after checking that record's validation accuracy is
  the database's.

It changes neither the arms, the seeds, the configurations nor the analysis: only where finished trials are
read from. Used by holdout_study.py (the analysis) and holdout_frozen.py (the frozen code's training).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

DIAGNOSED = ("regime", "seconds", "initial_rates")  # what the study reads from a run folder's diagnostics


def resume(common: ModuleType, report: Callable[..., dict], scale: str) -> int:
    """Restore the databases, install the committed diagnostics into ``common``; the number of trials whose
    diagnostics come from the committed records."""
    runs = common.RUNS / "holdout" / scale
    committed = common.RESULTS / "sweep_databases" / "holdout" / scale
    for db in sorted(committed.glob("*/*.db")):
        target = runs / db.parent.name / db.stem / "sweep.db"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(db, target)
    table = _committed_diagnostics(common.RESULTS / "holdout" / scale, runs, report)
    measured = common._diagnostics

    def diagnostics(run_dir: Path) -> dict[str, Any]:
        if (run_dir / "results.json").is_file() or str(run_dir) not in table:
            return measured(run_dir)
        return table[str(run_dir)]

    common._diagnostics = diagnostics
    return len(table)


def _committed_diagnostics(records: Path, runs: Path, report: Callable[..., dict]) -> dict[str, dict]:
    """run folder -> the committed record's diagnostics, for every finished trial whose folder is missing."""
    table: dict[str, dict] = {}
    for db in sorted(runs.glob("*/*/sweep.db")):
        config, arm = db.parent.parent.name, db.parent.name
        path = records / f"{config}.json"
        if not path.is_file():
            continue
        recorded = {_key(r["params"], r["seed"]): r for r in json.loads(path.read_text())["arms"].get(arm, [])}
        for setting in report(db.parent, write=False)["settings"]:
            params = {k: v for k, v in setting["params"].items() if k != "seed"}
            for trial in setting["trials"]:
                if Path(trial["run_dir"], "results.json").is_file():
                    continue
                rec = recorded.get(_key(params, trial["seed"]))
                if rec is None or rec["val"] != trial["value"]:
                    raise RuntimeError(
                        f"{db}: trial {trial['trial']} (seed {trial['seed']}, {params}) has no run folder and "
                        f"no matching record in {path}; rerun that arm or restore its run folders"
                    )
                table[str(trial["run_dir"])] = {k: rec[k] for k in DIAGNOSED}
    return table


def _key(params: dict, seed: int | None) -> tuple[str, int | None]:
    return json.dumps(params, sort_keys=True), seed
