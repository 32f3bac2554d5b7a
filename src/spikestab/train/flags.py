"""The ``spikestab train`` options as command-line flags: every TrainConfig field's flag (defaulting to
"not given", so a ``--config`` file is only overridden by the flags typed), and the config they give.
``spikestab sweep`` adds the same flags for its fixed options."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from .config import RENAMED, RENAMED_VALUES, TrainConfig
from .fields import rows


def flag_of(name: str) -> str:
    """The flag of a config field: ``init_rate`` -> ``--init-rate``; a switch that defaults to True is
    turned off by ``--no-NAME`` (``--no-recurrent``)."""
    f = rows(TrainConfig)[name]
    prefix = "--no-" if f.metadata["flag"] is bool and f.default is True else "--"
    return prefix + name.replace("_", "-")


def option_types() -> dict[str, type]:
    """TrainConfig field -> the type its ``spikestab train`` flag parses (fields without a flag excluded)."""
    return {name: f.metadata["flag"] for name, f in rows(TrainConfig).items() if f.metadata["flag"] is not None}


def flag_dest(name: str) -> str | None:
    """The config field of a flag or field name (``--init-rate``, ``init-rate``, ``init_rate``), or None;
    an old name (``RENAMED``: ``sg``, ``--stabilize``) gives its new field, with a deprecation note."""
    text = name.lstrip("-").replace("-", "_")
    if text in RENAMED:
        deprecated(name, RENAMED[text].replace("_", "-") if name.startswith("--") else RENAMED[text])
        text = RENAMED[text]
    return text if text in option_types() else None


def deprecated(old: str, new: str) -> None:
    """Say on stderr (and as a DeprecationWarning) that ``old`` is an alias kept for one release of ``new``."""
    text = f"{old} is deprecated and will be removed in the next release; use {new}"
    print(f"spikestab: note: {text}", file=sys.stderr)
    warnings.warn(text, DeprecationWarning, stacklevel=3)


class DeprecatedAlias(argparse.Action):
    """An old flag kept one release: parses like ``new`` (into its dest), with a deprecation note."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        deprecated(str(option), self.new)
        setattr(namespace, self.dest, values)


def add_alias(p: argparse.ArgumentParser | argparse._ArgumentGroup, old: str, new: str, **kwargs: Any) -> None:
    """Flag ``old``, kept one release, sets what flag ``new`` sets (``kwargs``: its dest, type, ...)."""
    p.add_argument(old, action=DeprecatedAlias, new=new, help=argparse.SUPPRESS, **kwargs)


def new_value(name: str, value: Any) -> Any:
    """A flag value with an old spelling (``RENAMED_VALUES``: ``--backend event``) read as the new one,
    with a deprecation note."""
    renamed = RENAMED_VALUES.get(name, {})
    if isinstance(value, str) and value in renamed:
        deprecated(f"{flag_of(name)} {value}", f"{flag_of(name)} {renamed[value]}")
        return renamed[value]
    return value


def _task_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"task options look like KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _help(f: Field) -> str:
    """A flag's help: the field's help, the default it falls back to (flags default to "not given", so that
    a --config file is not overridden) and its accepted range (unless the help lists the choices)."""
    text, rng = f.metadata["help"], f.metadata["range"]
    if f.metadata["flag"] is not bool and f.default is not None and "default" not in text:
        value = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        text += f" (default: {value})"
    if rng.text and not rng.text.startswith(("one of", "None")):
        text += f"; {rng.text}"
    return text


def add_config_options(p: argparse.ArgumentParser | argparse._ArgumentGroup, exclude: tuple[str, ...] = ()) -> None:
    """Every ``spikestab train`` config flag (all defaulting to "not given"), ``--task-option`` and
    ``--config``; ``exclude`` names config fields whose flag the caller defines itself (e.g. ``out``)."""
    for name, typ in option_types().items():
        if name in exclude:
            continue
        f = rows(TrainConfig)[name]
        if typ is bool:
            action = "store_false" if f.default is True else "store_true"
            p.add_argument(flag_of(name), dest=name, action=action, default=argparse.SUPPRESS, help=_help(f))
        else:
            p.add_argument(flag_of(name), dest=name, type=typ, default=argparse.SUPPRESS, help=_help(f))
    for old, new in RENAMED.items():
        if new not in exclude:
            old_flag = "--" + old.replace("_", "-")
            add_alias(p, old_flag, flag_of(new), dest=new, type=option_types()[new], default=argparse.SUPPRESS)
    p.add_argument(
        "--task-option",
        dest="task_option",
        type=_task_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option (repeatable), e.g. source=digits; `spikestab tasks` lists every task's options",
    )
    p.add_argument("--config", dest="config_file", default=None, help="JSON file of config fields")


def file_config(path: str) -> dict:
    """The fields a ``--config`` file sets (checked as a whole config; a run's config.json sets those its
    ``user_set`` lists)."""
    cfg = TrainConfig.from_json(path)
    d = cfg.to_dict()
    return {k: d[k] for k in cfg.user_set or () if k in d}


def config_dict_from_args(args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> dict:
    """The JSON config (if any) overridden by the flags given on the command line, as a plain dict of
    TrainConfig fields (not yet validated); ``exclude`` drops fields the caller owns."""
    base = file_config(args.config_file) if args.config_file else {}
    names = {f.name for f in fields(TrainConfig)} - set(exclude)
    given = {k: new_value(k, v) for k, v in vars(args).items() if k in names}
    if isinstance(given.get("conditions"), str) and not given["conditions"].strip():
        raise ValueError(
            "--conditions is empty: pass --conditions none to train without stabilisation, or leave it out "
            "for the recommended recipe (auto)"
        )
    base.update(given)
    if args.task_option:
        base["task_options"] = {**base.get("task_options", {}), **dict(args.task_option)}
    return {k: v for k, v in base.items() if k not in exclude}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The JSON config (if any) overridden by the flags given on the command line; with ``--resume``, the
    run folder's stored config.json underneath both. The fields set are those given, and on resume also
    those the stored run had set (``TrainConfig.user_set``)."""
    given = config_dict_from_args(args)
    stored = Path(given.get("out", TrainConfig.out)) / "config.json"
    if getattr(args, "resume", False) and stored.is_file():
        saved = TrainConfig.from_json(stored, run=True)
        base = saved.to_dict()
        given["task_options"] = {**base["task_options"], **given.get("task_options", {})}
        given = {**base, **given, "user_set": sorted(set(saved.user_set or ()) | set(given))}
    return TrainConfig.from_dict(given)
