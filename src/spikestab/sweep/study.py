"""A sweep's definition and its Optuna study.

:func:`make_plan` checks everything before anything is written: option names, every grid point (or
every end of a search range) as a TrainConfig, that the task loads, the pruner. :func:`prepare_study`
creates the study (the one process whose ``create_study`` succeeds queues every grid point, or one
empty slot per search trial, exactly once) or joins it after checking that the stored definition
matches, naming the fields that differ.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, cast

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ..files import atomic_write_json
from ..train.config import NON_RESULT_FIELDS, TrainConfig, migrate, with_defaults
from ..train.task import load_config_task, network_config
from . import space as sp
from .storage import SWEEP_JSON, masked, queue_lock

SPEC_ATTR = "spikestab_sweep"  # study user attribute: the definition a rerun must match
QUEUED_ATTR = "spikestab_queued"  # study user attribute: set once every point is queued
SAMPLERS = ("tpe", "random")


@dataclass
class Plan:
    """A checked sweep: the fixed config (every TrainConfig field but the swept ones), the grid or the
    search space, and what is optimised."""

    fixed: dict
    grid: dict | None
    space: dict | None
    sampler: str  # "grid", "tpe" or "random"
    trials: int  # trials in all (a grid: its number of points)
    objective: str  # "val_accuracy" (maximised) or "val_perplexity" (minimised)
    direction: str
    prune: str | None

    @property
    def names(self) -> list[str]:
        return list(self.grid or self.space or {})

    def points(self) -> list[dict]:
        return sp.grid_points(self.grid) if self.grid else []

    def distributions(self) -> dict[str, BaseDistribution]:
        if self.grid:
            return {n: CategoricalDistribution(v) for n, v in self.grid.items()}
        out: dict[str, BaseDistribution] = {}
        for n, d in (self.space or {}).items():
            if "choices" in d:
                out[n] = CategoricalDistribution(d["choices"])
            elif isinstance(d["low"], int) and isinstance(d["high"], int):
                out[n] = IntDistribution(d["low"], d["high"], log=d["log"])
            else:
                out[n] = FloatDistribution(float(d["low"]), float(d["high"]), log=d["log"])
        return out

    def spec(self) -> dict:
        """What a rerun must match (fields that do not change results left out), as JSON stores it."""
        fixed = {k: v for k, v in self.fixed.items() if k not in NON_RESULT_FIELDS}
        return json.loads(
            json.dumps(
                {
                    "fixed": fixed,
                    "grid": self.grid,
                    "space": self.space,
                    "sampler": self.sampler,
                    "trials": self.trials,
                    "objective": self.objective,
                    "direction": self.direction,
                    "prune": self.prune,
                }
            )
        )


def make_pruner(prune: str | None) -> optuna.pruners.BasePruner:
    """``median[:STARTUP[:WARMUP]]`` -> MedianPruner(n_startup_trials, n_warmup_steps); None -> none."""
    if prune in (None, "", "none"):
        return optuna.pruners.NopPruner()
    name, *nums = str(prune).split(":")
    try:
        values = [int(n) for n in nums]
    except ValueError:
        values = [-1]
    if name != "median" or len(values) > 2 or any(v < 0 for v in values):
        raise ValueError(f"--prune takes median[:STARTUP_TRIALS[:WARMUP_EPOCHS]] or none, got {prune!r}")
    return optuna.pruners.MedianPruner(*values)


def make_sampler(name: str, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler; grid points are queued with fixed values, so any sampler serves them."""
    return optuna.samplers.TPESampler(seed=seed) if name == "tpe" else optuna.samplers.RandomSampler(seed=seed)


def _objective(cfgs: list[TrainConfig], points: list[dict], flag: str) -> tuple[str, str]:
    """Load every distinct data set of the points once and check each point's network against the memory
    available (a missing file, a bad task option or layers too large are bad input now, not failed trials
    later); the objective follows the task kind."""
    # per data setting only what network_config reads (not the splits: a grid over data settings would hold
    # every data set at once)
    shapes: dict[str, SimpleNamespace] = {}
    for cfg, point in zip(cfgs, points):
        key = json.dumps(
            [cfg.task, cfg.data_dir, cfg.task_options, cfg.data_seed, cfg.time_repeat, cfg.input_dropout],
            sort_keys=True,
            default=str,
        )
        try:
            if key not in shapes:
                task = load_config_task(cfg)
                shapes[key] = SimpleNamespace(
                    kind=task.kind, n_steps=task.n_steps, input_size=task.input_size, output_size=task.output_size
                )
            network_config(cfg, shapes[key])
        except (ValueError, TypeError) as err:
            raise ValueError(f"{flag} point {sp.describe(point)}: {err}") from None
    objectives = {
        ("val_perplexity", "minimize") if t.kind == "language" else ("val_accuracy", "maximize")
        for t in shapes.values()
    }
    if len(objectives) > 1:
        raise ValueError("the sweep mixes language and classification tasks: their objectives differ")
    return objectives.pop()


def make_plan(
    fixed: Mapping[str, Any],
    grid: Mapping | None = None,
    space: Mapping | None = None,
    sampler: str | None = None,
    trials: int | None = None,
    prune: str | None = None,
) -> Plan:
    """Check a sweep completely (ValueError naming the argument) and return it as a Plan (``fixed`` may use
    old field names, ``train.config.RENAMED``)."""
    fixed = migrate(fixed)
    unknown = sorted(set(fixed) - {f for f in TrainConfig.__dataclass_fields__})
    if unknown:
        raise ValueError(f"fixed options {unknown} are not TrainConfig fields")
    if grid and space:
        raise ValueError("give --grid (an exhaustive grid) or --space (a search), not both")
    if grid is None and space is None:
        raise ValueError("give --grid NAME=V1,V2,... or --space NAME=LOW:HIGH with --trials N")
    make_pruner(prune)
    fixed = dict(fixed)
    checked_grid: dict | None = None
    checked_space: dict | None = None
    if grid is not None:
        if sampler not in (None, "grid"):
            raise ValueError(f"--sampler {sampler} searches a --space; a --grid runs every point")
        if trials is not None:
            raise ValueError("--trials sets the size of a --space search; a --grid runs every point")
        checked_grid = sp.normalize_grid(grid)
        points, flag, sampler = sp.grid_points(checked_grid), "--grid", "grid"
        trials = len(points)
    else:
        checked_space = space = sp.normalize_space(space or {})
        sampler = sampler or "tpe"
        if sampler not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            raise ValueError(f"--trials must be an integer >= 1 for a --space search, got {trials!r}")
        points, flag = sp.space_probes(space), "--space"
    cfgs = sp.check_points(fixed, points, flag)
    objective, direction = _objective(cfgs, points, flag)
    names = list(checked_grid or checked_space or {})
    # list fields (layers, conditions) as their text spec, the form grid values take too
    full = {
        k: sp.parse_value(k, v) if k in sp.JOINED else v for k, v in sp.strip_swept(cfgs[0].to_dict(), names).items()
    }
    return Plan(
        fixed=full,
        grid=checked_grid,
        space=checked_space,
        sampler=sampler,
        trials=trials,
        objective=objective,
        direction=direction,
        prune=None if prune in (None, "", "none") else str(prune),
    )


def compare_spec(saved: dict, mine: dict, where: str) -> None:
    """ValueError naming every field where the stored sweep differs from this one (the stored spec's old
    field names read as the new ones)."""
    saved = sp.migrate_spec(saved)

    def flat(spec: dict, fill: dict | None = None) -> dict:
        out = {f"{k}": v for k, v in spec.items() if k != "fixed"}
        fixed = spec.get("fixed", {})
        if fill is not None:  # a training option added since the sweep started: its trials ran with the default
            fixed = {**{k: v for k, v in with_defaults(fixed).items() if k in fill}, **fixed}
        out.update(fixed)
        return out

    a, b = flat(saved, mine.get("fixed", {})), flat(mine)
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        detail = "; ".join(f"{k}: saved {a.get(k)!r} vs now {b.get(k)!r}" for k in diff)
        raise ValueError(
            f"cannot continue the sweep in {where}: it was started with a different configuration "
            f"({detail}); use another --out / --study for a new sweep"
        )


def check_sweep_json(out: str | Path, plan: Plan) -> None:
    path = Path(out) / SWEEP_JSON
    if path.is_file():
        compare_spec(json.loads(path.read_text())["spec"], plan.spec(), str(path))


def write_sweep_json(out: str | Path, plan: Plan, study_name: str, url: str) -> None:
    atomic_write_json({"study": study_name, "storage": masked(url), "spec": plan.spec()}, Path(out) / SWEEP_JSON)


def _wait_attr(study: optuna.Study, key: str, timeout: float) -> Any:
    """A study user attribute that the creating process (maybe on another machine) is about to set."""
    deadline = time.monotonic() + timeout
    while True:
        value = study.user_attrs.get(key)  # read from the storage on every call
        if value is not None or time.monotonic() >= deadline:
            return value
        time.sleep(0.2)


def queue(study: optuna.Study, plan: Plan) -> int:
    """Queue the grid points (or empty search slots) that no trial holds yet; returns how many."""
    trials = study.get_trials(deepcopy=False)
    if plan.grid:
        have = {sp.params_key(sp.trial_params(t)) for t in trials}
        todo = [p for p in plan.points() if sp.params_key(p) not in have]
        for point in todo:
            study.enqueue_trial(point, user_attrs={"setting": sp.setting_slug(point)})
        return len(todo)
    slots = sum(1 for t in trials if "failed_trial" not in t.system_attrs and "requeued_from" not in t.user_attrs)
    for _ in range(plan.trials - slots):
        study.enqueue_trial({})
    return max(plan.trials - slots, 0)


def requeue_failed(study: optuna.Study, plan: Plan) -> int:
    """Queue again every setting whose trials all failed (``--retry-failed``); returns how many."""
    groups: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        groups.setdefault(sp.params_key(sp.trial_params(t)), []).append(t)
    count = 0
    for members in groups.values():
        if all(t.state == TrialState.FAIL for t in members):
            last = members[-1]
            study.enqueue_trial(
                last.system_attrs.get("fixed_params") or last.params,  # as queued: the worker reads old names
                user_attrs={"setting": last.user_attrs.get("setting", ""), "requeued_from": last.number},
            )
            count += 1
    return count


def prepare_study(
    storage,
    url: str,
    name: str,
    plan: Plan,
    retry_failed: bool = False,
    log: Callable[[str], None] = print,
    wait: float = 30.0,
) -> optuna.Study:
    """Create the sweep's study and queue its trials, or join an existing one that matches ``plan``."""
    with queue_lock(url):
        try:
            study = optuna.create_study(
                storage=storage, study_name=name, direction=cast(Literal["minimize", "maximize"], plan.direction)
            )
            study.set_user_attr(SPEC_ATTR, plan.spec())
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage)
            saved = _wait_attr(study, SPEC_ATTR, wait)
            if saved is None:
                raise ValueError(
                    f"study {name!r} in {masked(url)} was not made by spikestab sweep (no "
                    f"{SPEC_ATTR!r} attribute); choose another --study"
                ) from None
            compare_spec(saved, plan.spec(), f"study {name!r} of {masked(url)}")
            created = False
        if created or _wait_attr(study, QUEUED_ATTR, wait) is None:
            added = queue(study, plan)
            study.set_user_attr(QUEUED_ATTR, plan.trials)
            if not created and added:
                log(f"sweep: queued {added} trials that the process creating the study did not")
        if retry_failed:
            log(f"sweep: --retry-failed queued {requeue_failed(study, plan)} failed settings again")
    return study
