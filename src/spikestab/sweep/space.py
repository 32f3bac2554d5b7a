"""What a sweep varies: option names, ``--grid`` / ``--space`` values, every point checked through
TrainConfig before anything runs, and the run-directory name of a setting.

A swept NAME is a ``spikestab train`` option or TrainConfig field in either spelling (``init-rate``,
``init_rate``, ``--init-rate``) or ``task_options.KEY`` (``task-option.KEY``); fields that do not
change what a run computes (``out``, ``threads``, ... see ``NON_RESULT_FIELDS``) cannot be swept.
Values are separated by commas, or by semicolons when a value itself holds commas
(``conditions=none;I,II;I,II,III,IV``, ``layers=16;16,16``); ``none`` stands for None / no conditions.
An old name (``train.config.RENAMED``: ``sg``, ``stabilize``) is read as its new one, with a note; trials
an old sweep queued under an old name keep it (``queued_name``).

>>> canonical("init-rate"), canonical("--dampening"), canonical("task-option.n_units")
('init_rate', 'dampening', 'task_options.n_units')
>>> parse_grid(["dampening=0.5,1", "seed=0,1"])
{'dampening': [0.5, 1.0], 'seed': [0, 1]}
>>> parse_space(["lr=1e-4:1e-2:log", "surrogate=fast-sigmoid,exponential"])
{'lr': {'low': 0.0001, 'high': 0.01, 'log': True}, 'surrogate': {'choices': ['fast-sigmoid', 'exponential']}}
>>> setting_slug({"dampening": 0.5, "seed": 1})
'dampening=0.5_seed=1__8ce6403f'
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from ..train.config import NON_RESULT_FIELDS, RENAMED, TrainConfig, migrate
from ..train.flags import flag_dest, option_types

TASK_OPTION = "task_options."
_FIELDS = {f.name: f for f in fields(TrainConfig)}
# fields that accept None ("none" on the command line)
_OPTIONAL = {name for name, f in _FIELDS.items() if f.default is None} | {"conditions"}
JOINED = ("layers", "conditions")  # list-valued fields: a grid value is their text spec, e.g. "16,16"
OLD_NAMES = {new: old for old, new in RENAMED.items()}
Value = Any  # None | bool | int | float | str


def sweepable() -> list[str]:
    """The TrainConfig fields a sweep may vary (plus ``task_options.KEY``): those with a ``spikestab train``
    flag (not ``task_options`` nor ``external_task``, a dataset handed from Python) that change results."""
    return sorted(set(option_types()) - set(NON_RESULT_FIELDS))


def canonical(name: str) -> str:
    """The config field a swept name stands for; ValueError for a name ``spikestab train`` lacks."""
    text = str(name).strip()
    head, dot, key = text.partition(".")
    if dot and head.lstrip("-").replace("-", "_") in ("task_options", "task_option"):
        if not key:
            raise ValueError(f"{name!r} names no task option (write task_options.KEY)")
        return TASK_OPTION + key
    dest = flag_dest(text) or text.lstrip("-").replace("-", "_")
    if dest in NON_RESULT_FIELDS:
        raise ValueError(f"{name!r} cannot be swept: it does not change what a run computes")
    if dest not in sweepable():
        raise ValueError(
            f"unknown option {name!r}; options that can be swept: {', '.join(sweepable())}, task_options.KEY"
        )
    return dest


def parse_value(name: str, value: Value) -> Value:
    """A value for field ``name``: text is parsed as its ``spikestab train`` flag would parse it;
    Python values are normalised (int -> float for float fields, layer / condition lists -> text)."""
    if name.startswith(TASK_OPTION):
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value
    typ = option_types().get(name, str)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null") and name in _OPTIONAL:
            return None
        if typ is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"{name} takes true or false, got {value!r}")
        try:
            return typ(text)
        except ValueError:
            raise ValueError(f"{name} takes {typ.__name__} values, got {value!r}") from None
    if name in JOINED and isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"{name} values must be numbers, strings, booleans or None, got {value!r}")
    return value


def _split(text: str) -> list[str]:
    parts = text.split(";") if ";" in text else text.split(",")
    return [p.strip() for p in parts if p.strip()]


def _item(item: str, flag: str) -> tuple[str, str]:
    name, sep, values = item.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"{flag} takes NAME=VALUES, got {item!r}")
    try:
        return canonical(name), values
    except ValueError as err:
        raise ValueError(f"{flag} {item!r}: {err}") from None


def normalize_grid(grid: Mapping[str, Iterable[Value]], flag: str = "--grid") -> dict[str, list[Value]]:
    """Canonical names and normalised values; ValueError for an empty grid, an empty value list or a
    repeated name or value."""
    if not grid:
        raise ValueError(f"{flag} is empty: give at least one NAME=V1,V2,...")
    out: dict[str, list[Value]] = {}
    for raw, values in grid.items():
        try:
            name = canonical(raw)
            vals = [parse_value(name, v) for v in ([values] if isinstance(values, str) else values)]
        except ValueError as err:
            raise ValueError(f"{flag} {raw}: {err}") from None
        if name in out:
            raise ValueError(f"{flag} names {name} twice")
        if not vals:
            raise ValueError(f"{flag} {raw}: no values")
        keys = [json.dumps(v) for v in vals]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{flag} {raw}: a value is repeated in {vals}")
        out[name] = vals
    return out


def parse_grid(items: Sequence[str]) -> dict[str, list[Value]]:
    """``["NAME=V1,V2", ...]`` (the repeatable ``--grid``) -> {field: [values]}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        name, values = _item(item, "--grid")
        if name in grid:
            raise ValueError(f"--grid names {name} twice")
        grid[name] = _split(values)
        if not grid[name]:
            raise ValueError(f"--grid {item!r}: no values")
    return normalize_grid(grid)


def normalize_space(space: Mapping[str, Any], flag: str = "--space") -> dict[str, dict]:
    """{field: {"low", "high", "log"} or {"choices": [...]}}, checked: numeric fields only for ranges,
    low < high, log ranges positive. Also takes (low, high[, "log"]) tuples or value lists."""
    if not space:
        raise ValueError(f"{flag} is empty: give at least one NAME=LOW:HIGH[:log] or NAME=V1,V2,...")
    out: dict[str, dict] = {}
    for raw, spec in space.items():
        try:
            name = canonical(raw)
            out[name] = _dimension(name, spec)
        except ValueError as err:
            raise ValueError(f"{flag} {raw}: {err}") from None
    return out


def _dimension(name: str, spec: Any) -> dict:
    numbers = (
        isinstance(spec, (list, tuple))
        and len(spec) in (2, 3)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec[:2])
        and (len(spec) == 2 or spec[2] in ("log", "", True, False))
    )
    if isinstance(spec, Mapping) and "choices" not in spec:
        low, high, log = spec["low"], spec["high"], bool(spec.get("log"))
    elif numbers:
        low, high, log = spec[0], spec[1], len(spec) == 3 and spec[2] in ("log", True)
    elif isinstance(spec, Mapping) or isinstance(spec, (list, tuple)):
        choices = spec["choices"] if isinstance(spec, Mapping) else spec
        return {"choices": normalize_grid({name: choices}, "choices")[name]}
    else:
        raise ValueError(f"takes LOW:HIGH[:log] or a list of values, got {spec!r}")
    typ = option_types().get(name)
    if typ not in (int, float):
        raise ValueError(f"{name} is not numeric: give a list of values instead of a range")
    low, high = parse_value(name, low), parse_value(name, high)
    if typ is int and not (isinstance(low, int) and isinstance(high, int)):
        raise ValueError(f"{name} takes integers, got {low!r}:{high!r}")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"the range needs finite LOW < HIGH, got {low!r}:{high!r}")
    if log and low <= 0:
        raise ValueError(f"a log range needs LOW > 0, got {low!r}")
    return {"low": low, "high": high, "log": bool(log)}


def parse_space(items: Sequence[str]) -> dict[str, dict]:
    """``["NAME=LOW:HIGH[:log]" or "NAME=V1,V2", ...]`` (the repeatable ``--space``) -> dimensions."""
    space: dict[str, Any] = {}
    for item in items:
        name, text = _item(item, "--space")
        if name in space:
            raise ValueError(f"--space names {name} twice")
        parts = text.split(":")
        if len(parts) in (2, 3) and (len(parts) == 2 or parts[2] == "log"):
            try:
                space[name] = {
                    "low": parse_value(name, parts[0]),
                    "high": parse_value(name, parts[1]),
                    "log": len(parts) == 3,
                }
            except ValueError as err:
                raise ValueError(f"--space {item!r}: {err}") from None
        else:
            space[name] = {"choices": _split(text)}
    return normalize_space(space)


def grid_points(grid: Mapping[str, Sequence[Value]]) -> list[dict[str, Value]]:
    """Every combination, the first name varying slowest."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def space_probes(space: Mapping[str, dict]) -> list[dict[str, Value]]:
    """The points a search space is validated on: every range end and every choice (others at their
    first end / choice)."""
    base = {n: (d["choices"][0] if "choices" in d else d["low"]) for n, d in space.items()}
    probes = [base]
    for n, d in space.items():
        for v in d["choices"][1:] if "choices" in d else [d["high"]]:
            probes.append({**base, n: v})
    return probes


def apply(fixed: Mapping[str, Any], params: Mapping[str, Value]) -> dict:
    """The config dict of one point: ``fixed`` with the swept values put in (task options nested)."""
    cfg = dict(fixed)
    cfg["task_options"] = dict(cfg.get("task_options") or {})
    for name, value in params.items():
        if name.startswith(TASK_OPTION):
            cfg["task_options"][name[len(TASK_OPTION) :]] = value
        else:
            cfg[name] = value
    return cfg


def strip_swept(cfg: Mapping[str, Any], names: Iterable[str]) -> dict:
    """``cfg`` without the swept fields (what the sweep holds fixed)."""
    names = set(names)
    out = {k: v for k, v in cfg.items() if k not in names}
    out["task_options"] = {k: v for k, v in (cfg.get("task_options") or {}).items() if TASK_OPTION + k not in names}
    return out


def check_points(fixed: Mapping[str, Any], points: Sequence[Mapping[str, Value]], flag: str) -> list[TrainConfig]:
    """Every point as a TrainConfig (a ValueError names the point) — what ``spikestab train`` would check."""
    cfgs = []
    for point in points:
        try:
            cfgs.append(TrainConfig.from_dict(apply(fixed, point)))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{flag} point {describe(point)}: {err}") from None
    return cfgs


def describe(params: Mapping[str, Value]) -> str:
    """``dampening=0.5 seed=1`` (task options by their key)."""
    return " ".join(f"{_short(k)}={fmt_value(v)}" for k, v in params.items()) or "(no swept option)"


def _short(name: str) -> str:
    return name[len(TASK_OPTION) :] if name.startswith(TASK_OPTION) else name


def fmt_value(value: Value) -> str:
    """A value as the report and run-directory names show it (floats to 4 significant digits)."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def params_key(params: Mapping[str, Value]) -> str:
    """A canonical text of a point, equal for equal settings (JSON, sorted names)."""
    return json.dumps(dict(params), sort_keys=True)


def setting_slug(params: Mapping[str, Value], max_len: int = 80) -> str:
    """Run-directory name of a setting: readable ``name=value`` parts and a short hash of the exact
    values, so a retried trial finds its directory again and different values never share one."""
    digest = hashlib.sha1(params_key(params).encode()).hexdigest()[:8]
    text = "_".join(f"{_short(k)}={fmt_value(v)}" for k, v in params.items()) or "default"
    text = re.sub(r"[^A-Za-z0-9._,=+-]", "-", text)[:max_len]
    return f"{text}__{digest}"


def trial_params(trial: Any) -> dict:
    """A trial's swept values (its queued ones where it was queued) under the current names (an old
    sweep's "sg" read as "surrogate")."""
    return migrate(trial.system_attrs.get("fixed_params") or trial.params)


def queued_name(name: str, queued: Mapping[str, Value]) -> str:
    """The name a trial's queued values hold option ``name`` under: its old name (``RENAMED``) in a trial
    an old sweep queued, ``name`` otherwise."""
    old = OLD_NAMES.get(name)
    return old if old is not None and name not in queued and old in queued else name


def migrate_spec(spec: Mapping[str, Any]) -> dict:
    """A stored sweep definition (``study.Plan.spec``) with old field names read as the new ones."""
    return {**spec, **{k: migrate(spec[k]) for k in ("fixed", "grid", "space") if spec.get(k)}}
