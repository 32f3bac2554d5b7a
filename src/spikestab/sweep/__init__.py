"""Sweeps of training runs on Optuna: an exhaustive ``--grid`` or a TPE / random ``--space`` search,
every trial a normal ``spikestab train`` run directory under ``OUT/trials/``, the trials handed out by
an Optuna RDB storage (SQLite file ``OUT/sweep.db`` by default; PostgreSQL for many machines),
resumable after a crash, with a report of every setting (mean ± std over seeds) and figures.

Example (see docs/sweeps.md)::

    from spikestab.sweep import run_sweep, report
    run_sweep("runs/damp", fixed={"task": "randman", "epochs": 3},
              grid={"dampening": [0.3, 1.0, 3.0], "seed": [0, 1, 2]}, workers=2)
    report("runs/damp", refs=["dampening=0.3:predicted"])["best"]
"""

from .report import collect, report
from .run import run_sweep
from .space import parse_grid, parse_space, setting_slug
from .study import Plan, make_plan

__all__ = ["run_sweep", "report", "collect", "make_plan", "Plan", "parse_grid", "parse_space", "setting_slug"]
