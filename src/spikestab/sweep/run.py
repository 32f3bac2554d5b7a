"""``run_sweep``: check a sweep, create or join its study, run the workers, sum up."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from ..train.device import run_device
from .report import collect, verdict
from .storage import check_heartbeat, default_url, masked, open_storage
from .study import Plan, check_sweep_json, make_plan, prepare_study, write_sweep_json
from .worker import WorkerContext, run_worker, worker_launch


def run_sweep(
    out: str | Path,
    fixed: Mapping[str, Any],
    grid: Mapping[str, list] | None = None,
    space: Mapping[str, Any] | None = None,
    *,
    sampler: str | None = None,
    trials: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    prune: str | None = None,
    study_name: str | None = None,
    heartbeat: int = 30,
    grace: int | None = None,
    sampler_seed: int | None = None,
    retry_failed: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or continue) a sweep of ``spikestab train`` runs; every trial is a run directory under
    ``out/trials/<setting>``.

    ``fixed``: TrainConfig fields held fixed (as ``spikestab train`` flags would set them).
    ``grid``: {option: [values]}, every combination run once; or ``space``: {option: (low, high[, "log"])
    or [choices]} searched with ``sampler`` ("tpe" or "random") for ``trials`` trials.
    ``workers``: local worker processes (1: this process); ``storage``: an Optuna RDB URL (default the
    SQLite file ``out/sweep.db``; a PostgreSQL URL lets several machines share the sweep);
    ``study_name`` defaults to the name of ``out``; ``prune``: ``"median[:STARTUP[:WARMUP]]"``.
    A dead worker's trial is noticed after ``grace`` seconds without a ``heartbeat`` and run again.
    Returns the summary of :func:`spikestab.sweep.collect` (settings, best, counts). Bad input is a
    ValueError before any trial runs; a rerun with another fixed config or grid is refused.
    """
    started = time.time()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {workers!r}")
    check_heartbeat(heartbeat, grace)
    plan = make_plan(fixed, grid, space, sampler, trials, prune)
    run_device(plan.fixed.get("device", "cpu"))  # a GPU torch does not see: refused before any trial
    out = Path(out)
    check_sweep_json(out, plan)
    url = storage or default_url(out)
    name = study_name or out.resolve().name
    if storage is None:
        out.mkdir(parents=True, exist_ok=True)  # the SQLite file lives there
    st = open_storage(url, heartbeat, grace)
    out.mkdir(parents=True, exist_ok=True)
    study = prepare_study(st, url, name, plan, retry_failed=retry_failed, log=log)
    write_sweep_json(out, plan, name, url)

    done = _announce(study, plan, name, url, workers, log)
    threads = plan.fixed.get("threads") or 1
    ctx = WorkerContext(
        storage=url,
        study=name,
        out=str(out.resolve()),
        plan=asdict(plan),
        heartbeat=heartbeat,
        grace=grace,
        threads=threads,
        sampler_seed=sampler_seed,
        started=started,
        done_at_start=done,
        poll=min(1.0, heartbeat / 2),
    )
    _run_workers(ctx, workers, log)
    summary = collect(study)
    c, said = summary["counts"], verdict(summary, plan.objective)
    log(
        f"sweep {name!r}: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed, "
        f"{c['running'] + c['waiting']} not finished" + (f"; {said[0].lower()}{said[1:]}" if summary["best"] else "")
    )
    return summary


def _announce(study: Any, plan: Plan, name: str, url: str, workers: int, log: Callable[[str], None]) -> int:
    """Say what the sweep runs and how far it is; returns the number of trials done already."""
    pending = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))
    done = max(plan.trials - pending, 0)
    threads = plan.fixed.get("threads") or 1
    shape = (
        " x ".join(f"{n} ({len(v)})" for n, v in plan.grid.items())
        if plan.grid
        else f"{plan.sampler} search over {', '.join(plan.space or {})}"
    )
    log(
        f"sweep {name!r}: {plan.trials} trials, {shape}; {done} done, {pending} to run; "
        f"{workers} worker(s) x {threads} thread(s); storage {masked(url)}"
    )
    return done


def _run_workers(ctx: WorkerContext, workers: int, log: Callable[[str], None]) -> None:
    """One worker in this process, or ``workers`` worker processes (each re-queues its trial on Ctrl-C)."""
    if workers == 1:
        run_worker(ctx, log)
        return
    procs = []
    for i in range(workers):
        command, secret = worker_launch(replace(ctx, index=i))
        procs.append(subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": str(ctx.threads), **secret}))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the terminal sent SIGINT to the workers too: let them re-queue
        for p in procs:
            p.wait()
        raise
    if any(codes):
        log(f"sweep: worker exit codes {codes}")
