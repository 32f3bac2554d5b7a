"""The ``spikestab train`` options as command-line flags: every TrainConfig field's flag (defaulting to
"not given", so a ``--config`` file is only overridden by the flags typed), and the config they give.
``spikestab sweep`` adds the same flags for its fixed options."""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields
from pathlib import Path

from .config import TASKS, TrainConfig

# flag -> (config field, type, help); every flag defaults to "not given" so a --config file is only
# overridden by the flags actually typed
_FLAGS: list[tuple[str, str, type, str]] = [
    ("--task", "task", str, f"one of {', '.join(TASKS)}"),
    ("--data-dir", "data_dir", str, "folder with the task's files"),
    ("--net", "net", str, "lif | alif | slstm (spiking LSTM; with --stabilize none)"),
    ("--layers", "layers", str, "widths: NxW (2x256) or W1,W2 (256,128)"),
    ("--sg", "sg", str, "surrogate-gradient shape (fast-sigmoid, exponential, ...)"),
    ("--dampening", "dampening", float, "SG peak height gamma"),
    ("--sharpness", "sharpness", float, "SG inverse width beta"),
    ("--tail", "tail", float, "q of the q-pseudospike SG (q > 1)"),
    (
        "--stabilize",
        "stabilize",
        str,
        "conditions applied before training: auto (default: the recommended recipe D,G), none, "
        "or a list such as I,II,III,IV",
    ),
    ("--stability-mode", "stability_mode", str, "measured | paper"),
    (
        "--regime",
        "regime",
        str,
        "start of the recipe (--stabilize auto): auto (dense rate 1/2 or sparse rate 0.03, chosen by measuring "
        "how readable a dense start leaves the classes), dense, sparse",
    ),
    ("--init-rate", "init_rate", float, "calibrate the initial firing rate to this value"),
    ("--sparsity", "sparsity", str, "variant:target[:schedule[:weight]], e.g. l1_rate:0.01:linear"),
    ("--lr", "lr", float, "learning rate"),
    ("--weight-decay", "weight_decay", float, "weight decay (not on embeddings)"),
    ("--clip-norm", "clip_norm", float, "gradient-norm clipping"),
    (
        "--on-nonfinite",
        "on_nonfinite",
        str,
        "a non-finite loss or gradient: stop (default: stop the run, keep the last good checkpoint) | skip "
        "(skip that optimiser step and count it)",
    ),
    ("--epochs", "epochs", int, "planned number of epochs"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--eval-batch-size", "eval_batch_size", int, "evaluation batch size"),
    ("--seq-len", "seq_len", int, "language-model window length"),
    ("--seed", "seed", int, "seed of initialisation, dropout and batch order"),
    ("--data-seed", "data_seed", int, "seed of generated data and shuffled splits"),
    ("--tau", "tau", float, "membrane time constant in steps"),
    ("--threshold", "threshold", float, "firing threshold"),
    ("--reset", "reset", str, "subtract | multiplicative | multiplicative_all | none"),
    ("--dropout", "dropout", float, "dropout before every spiking layer"),
    ("--time-repeat", "time_repeat", int, "repeat every input frame k times"),
    ("--input-dropout", "input_dropout", float, "drop input spikes (training only)"),
    ("--backend", "backend", str, "layer kernel backend (auto picks the fastest)"),
    (
        "--time-checkpoint",
        "time_checkpoint",
        int,
        "recompute the spiking layers in segments of K steps during backward (0: off; less memory, ~1.7x time)",
    ),
    ("--out", "out", str, "run folder (checkpoints, metrics, results, figures)"),
    ("--checkpoint-every", "checkpoint_every", int, "checkpoint every N steps (and every epoch)"),
    ("--eval-every", "eval_every", int, "also evaluate on val every N steps (default: once per epoch)"),
    ("--max-minutes", "max_minutes", float, "stop training after this many minutes, then test"),
    ("--threads", "threads", int, "torch CPU threads (1 is often fastest on a shared machine)"),
]


def _task_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"task options look like KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# config fields with no value flag: the store_true / store_false switches below
SWITCHES = {"paper_weight_decay": bool, "recurrent": bool, "progress": bool}


def option_types() -> dict[str, type]:
    """TrainConfig field -> the type its ``spikestab train`` flag parses (``task_options`` excluded)."""
    return {**{dest: typ for _, dest, typ, _ in _FLAGS}, **SWITCHES}


def flag_dest(name: str) -> str | None:
    """The config field of a flag or field name (``--init-rate``, ``init-rate``, ``init_rate``), or None."""
    text = name.lstrip("-")
    for flag, dest, _, _ in _FLAGS:
        if text in (flag[2:], dest):
            return dest
    text = text.replace("-", "_")
    return text if text in SWITCHES else None


def add_config_options(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Every ``spikestab train`` config flag (all defaulting to "not given"), ``--task-option`` and
    ``--config``; ``exclude`` names config fields whose flag the caller defines itself (e.g. ``out``)."""
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    for flag, dest, typ, help_ in _FLAGS:
        if dest not in exclude:
            value = defaults[dest]
            if "default" not in help_ and value is not None:  # the flags default to "not given": say what it means
                help_ += f" (default: {','.join(map(str, value)) if isinstance(value, tuple) else value})"
            p.add_argument(flag, dest=dest, type=typ, default=argparse.SUPPRESS, help=help_)
    p.add_argument(
        "--task-option",
        dest="task_option",
        type=_task_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option (repeatable), e.g. source=digits; `spikestab tasks` lists every task's options",
    )
    p.add_argument("--paper-weight-decay", dest="paper_weight_decay", action="store_true", default=argparse.SUPPRESS,
                   help="decoupled weight decay not multiplied by the learning rate (official code)")
    p.add_argument("--no-recurrent", dest="recurrent", action="store_false", default=argparse.SUPPRESS,
                   help="feed-forward spiking layers")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS,
                   help="no progress bar (default: a bar per epoch)")
    p.add_argument("--config", dest="config_file", default=None, help="JSON file of config fields")


def config_dict_from_args(args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> dict:
    """The JSON config (if any) overridden by the flags given on the command line, as a plain dict of
    TrainConfig fields (not yet validated); ``exclude`` drops fields the caller owns."""
    base = TrainConfig.from_json(args.config_file).to_dict() if args.config_file else {}
    names = {f.name for f in fields(TrainConfig)} - set(exclude)
    given = {k: v for k, v in vars(args).items() if k in names}
    base.update(given)
    if args.task_option:
        base["task_options"] = {**base.get("task_options", {}), **dict(args.task_option)}
    return {k: v for k, v in base.items() if k not in exclude}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The JSON config (if any) overridden by the flags given on the command line; with ``--resume``, the
    run folder's stored config.json underneath both."""
    given = config_dict_from_args(args)
    stored = Path(given.get("out", TrainConfig.out)) / "config.json"
    if getattr(args, "resume", False) and stored.is_file():
        base = TrainConfig.from_json(stored).to_dict()
        given["task_options"] = {**base["task_options"], **given.get("task_options", {})}
        given = {**base, **given}
    return TrainConfig.from_dict(given)
