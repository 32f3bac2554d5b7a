"""A sweep worker: take a queued trial, train it in its own run directory (continuing any checkpoint
there), report the objective to Optuna after every epoch (the pruner may stop it), tell the result;
repeat until no trial is queued or running. ``--workers N`` starts N of these as
``python -m spikestab.sweep CONTEXT_JSON``, the storage URL (which may hold a password) passed in the
environment variable ``SPIKESTAB_SWEEP_STORAGE``, never on the command line where ``ps`` shows it.

A worker with nothing left to start keeps waiting while other trials run: one whose worker died
(no heartbeat for the grace period) is failed and queued again, and this worker resumes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ..files import read_jsonl
from ..train.device import worker_device
from ..train.progress import format_duration
from . import space as sp
from .storage import Heartbeat, fail_stale, open_storage, pop_trial, requeue
from .study import Plan, make_pruner, make_sampler

Log = Callable[[str], None]
STORAGE_ENV = "SPIKESTAB_SWEEP_STORAGE"  # how a worker process receives the storage URL


@dataclass
class WorkerContext:
    """Everything a worker process needs (JSON-able: it travels on the command line, all but the storage
    URL, which travels in the environment: :func:`worker_launch`)."""

    storage: str
    study: str
    out: str
    plan: dict  # dataclasses.asdict(Plan): this command's fixed config and swept values
    heartbeat: int = 30
    grace: int | None = None
    threads: int = 1
    sampler_seed: int | None = None
    index: int = 0  # worker number on this machine
    started: float = 0.0  # time.time() when the sweep command started (for the ETA)
    done_at_start: int = 0  # trials finished before it started
    poll: float = 1.0  # seconds between looks at the queue while other trials run


def suggest(trial: optuna.Trial, plan: Plan, queued: Mapping[str, Any] | None = None) -> dict:
    """The trial's values of the swept options (fixed for queued grid points and retries: ``queued``, the
    trial's queued values, whose names an old sweep wrote in its old spelling, ``space.queued_name``)."""
    params = {}
    for option, dist in plan.distributions().items():
        name = sp.queued_name(option, queued or {})
        if isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        else:
            dist = cast(FloatDistribution, dist)
            params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return params


class EpochReporter:
    """The Trainer's ``on_epoch`` hook: report the objective, raise TrialPruned when the pruner says so.
    On its first call it also reports the epochs a resumed run did before (read from metrics.jsonl)."""

    def __init__(self, trial: optuna.Trial, objective: str) -> None:
        self.trial, self.objective, self.first, self.seconds = trial, objective, True, 0.0

    def _report(self, value, epoch: int) -> None:
        if value is not None and math.isfinite(value):
            self.trial.report(float(value), epoch)

    def __call__(self, trainer, record: dict) -> None:
        t0 = time.perf_counter()
        try:
            if self.first:
                self.first = False
                for rec in read_jsonl(trainer.out / "metrics.jsonl"):
                    if rec.get("kind") == "epoch" and rec["epoch"] < record["epoch"]:
                        self._report(rec.get(self.objective), rec["epoch"])
            self._report(record.get(self.objective), record["epoch"])
            prune = self.trial.should_prune()
        except optuna.exceptions.UpdateFinishedTrialError:
            prune = False  # failed as stale meanwhile: finish the run; its retry (waiting on the run dir) takes it
        self.seconds += time.perf_counter() - t0
        if prune:
            raise optuna.TrialPruned(f"pruned after epoch {record['epoch'] + 1}")


@contextlib.contextmanager
def _dir_lock(run_dir: Path) -> Iterator[None]:
    """One process per run directory on this machine (a trial failed as stale whose worker still lives
    finishes first; its retry then finds the finished run)."""
    with open(run_dir / ".trial.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _checkpoint_step(run_dir: Path) -> int:
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return 0
    from ..train.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(path)["global_step"])
    except (ValueError, KeyError):
        return 0


def _set_attr(trial: optuna.Trial, key: str, value) -> None:
    try:
        trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # the trial was failed as stale meanwhile; its retry records its own


def _file_log(path: Path) -> Log:
    def log(line: str) -> None:
        with open(path, "a") as fh:
            fh.write(line + "\n")

    return log


def _progress(study: optuna.Study, plan: Plan, ctx: WorkerContext) -> str:
    """``7/20 done, eta 01:12`` over every worker of the sweep (rate since this command started)."""
    pending = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))
    done = max(plan.trials - pending, 0)
    rate = (done - ctx.done_at_start) / max(time.time() - ctx.started, 1e-9)
    eta = format_duration(pending / rate) if rate > 0 and pending else ("00:00" if not pending else "?")
    return f"{done}/{plan.trials} done, eta {eta}"


def run_trial(
    study: optuna.Study, trial: optuna.Trial, trial_id: int, storage, plan: Plan, ctx: WorkerContext, log: Log = print
) -> TrialState:
    """Train one popped trial in OUT/trials/<setting> and tell Optuna how it ended."""
    from ..train.config import TrainConfig

    t_start = time.perf_counter()
    with Heartbeat(storage, trial_id):
        try:
            params = suggest(trial, plan, storage.get_trial(trial_id).system_attrs.get("fixed_params"))
            slug = sp.setting_slug(params)
            run_dir = Path(ctx.out) / "trials" / slug
            trial.set_user_attr("setting", slug)
            trial.set_user_attr("run_dir", str(run_dir.resolve()))
            trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "index": ctx.index})
        except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale before it started: leave it to its retry
            log(
                f"[sweep] skip   trial {trial.number}: its heartbeat went stale before it started | "
                f"{_progress(study, plan, ctx)}"
            )
            return storage.get_trial(trial_id).state
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = TrainConfig.from_dict(
            {
                **sp.apply(plan.fixed, params),
                "out": str(run_dir),
                "progress": False,
                "threads": ctx.threads,
                "device": worker_device(plan.fixed.get("device", "cpu"), ctx.index),  # several GPUs: in turn
            }
        )
        what = sp.describe(params)
        with _dir_lock(run_dir):
            step = _checkpoint_step(run_dir)
            if step:
                trial.set_user_attr("resumed_from_step", step)
            log(
                f"[sweep] start  {what} (trial {trial.number}, worker {ctx.index}"
                f"{f', resuming at step {step}' if step else ''})"
            )
            state, value, note, fit = _fit(study, trial, trial_id, storage, plan, cfg, what, t_start, log)
    stale = storage.get_trial(trial_id).state != TrialState.RUNNING
    frozen = study.tell(
        trial,
        value if state == TrialState.COMPLETE else None,
        state=None if state == TrialState.COMPLETE else state,
        skip_if_finished=True,
    )
    _log_end(frozen, stale, what, note, fit, run_dir, _progress(study, plan, ctx), plan, log)
    return frozen.state


def _fit(
    study: optuna.Study,
    trial: optuna.Trial,
    trial_id: int,
    storage,
    plan: Plan,
    cfg: Any,
    what: str,
    t_start: float,
    log: Log,
) -> tuple[TrialState, float | None, str, float]:
    """Train the trial's run (continuing its checkpoint): (its state, objective value, note, seconds).
    A failed run is recorded (error.txt, the trial's ``error``) and does not end the sweep; Ctrl-C queues
    the trial again and ends it."""
    from ..train.trainer import Trainer

    run_dir = Path(cfg.out)
    reporter = EpochReporter(trial, plan.objective)
    t_fit = time.perf_counter()
    state, value, note = TrialState.COMPLETE, None, ""
    try:
        results = Trainer(cfg, log=_file_log(run_dir / "train.log"), on_epoch=reporter).fit(resume=True)
        metric = plan.objective.removeprefix("val_")
        value = float(results["val"][metric])
        if not math.isfinite(value):
            note = f"the objective is {value}"
        _set_attr(
            trial,
            "result",
            {
                f"test_{metric}": results["test"][metric],
                "best_epoch": results["best_epoch"],
                "epochs_done": results["epochs_done"],
                "global_steps": results["global_steps"],
            },
        )
    except optuna.TrialPruned as err:
        state, note = TrialState.PRUNED, str(err)
    except KeyboardInterrupt:
        if storage.get_trial(trial_id).state == TrialState.RUNNING:  # else a stale retry exists already
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            requeue(study, storage.get_trial(trial_id))
        log(f"[sweep] interrupted {what}: queued again; rerun the sweep to continue from its checkpoint")
        raise
    except Exception as err:  # a failed run must not end the sweep: record it, go on
        state, note = TrialState.FAIL, f"{type(err).__name__}: {err}"
        (run_dir / "error.txt").write_text(traceback.format_exc())
        _set_attr(trial, "error", note[:1000])
    fit = time.perf_counter() - t_fit
    _set_attr(trial, "seconds", {"fit": fit, "hook": reporter.seconds, "trial": time.perf_counter() - t_start})
    return state, value, note, fit


def _log_end(
    frozen: Any, stale: bool, what: str, note: str, fit: float, run_dir: Path, counts: str, plan: Plan, log: Log
) -> None:
    """The trial's last line: done, pruned, failed, or late (finished after its heartbeat went stale)."""
    if stale:
        log(
            f"[sweep] late   {what}: finished after its heartbeat had gone stale; its retry reads the finished "
            f"run | {counts}"
        )
    elif frozen.state == TrialState.COMPLETE:
        log(f"[sweep] done   {what}: {plan.objective} {frozen.value:.4f} in {fit:.1f} s | {counts}")
    elif frozen.state == TrialState.PRUNED:
        log(f"[sweep] pruned {what}: {note} | {counts}")
    else:
        log(f"[sweep] FAILED {what}: {note or frozen.state.name} (see {run_dir}) | {counts}")


def _interrupt(signum, frame):  # SIGTERM (a scheduler stopping the job) ends a trial like Ctrl-C
    raise KeyboardInterrupt


def run_worker(ctx: WorkerContext, log: Log = print) -> int:
    """Run queued trials until none is queued or running; returns how many this worker ran."""
    plan = Plan(**ctx.plan)
    storage = open_storage(ctx.storage, ctx.heartbeat, ctx.grace)
    seed = None if ctx.sampler_seed is None else ctx.sampler_seed + ctx.index
    study = optuna.load_study(
        study_name=ctx.study, storage=storage, sampler=make_sampler(plan.sampler, seed), pruner=make_pruner(plan.prune)
    )
    old = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    ran = 0
    try:
        while True:
            fail_stale(study)
            popped = pop_trial(study, storage, ctx.storage)
            if popped is None:
                if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    return ran
                time.sleep(ctx.poll)
                continue
            run_trial(study, popped[0], popped[1], storage, plan, ctx, log)
            ran += 1
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def worker_launch(ctx: WorkerContext) -> tuple[list[str], dict[str, str]]:
    """A worker process's command line (the context without the storage URL) and the environment
    variables that carry the URL."""
    public = {k: v for k, v in asdict(ctx).items() if k != "storage"}
    return [sys.executable, "-m", "spikestab.sweep", json.dumps(public)], {STORAGE_ENV: ctx.storage}


def main(argv: list[str] | None = None) -> int:
    url = os.environ.pop(STORAGE_ENV, None)  # not inherited further (data loader processes, ...)
    if not url:
        print(f"spikestab.sweep worker: {STORAGE_ENV} (the storage URL) is not set", file=sys.stderr)
        return 2
    ctx = WorkerContext(storage=url, **json.loads((argv or sys.argv[1:])[0]))
    try:
        run_worker(ctx, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        return 130
    return 0
