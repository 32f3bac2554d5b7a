"""Training configuration: one flat, JSON-able dataclass, validated before any work starts; its fields'
table (``fields.option``) is the one source of the flags, the sweep's option space and the validation."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..data.tasks import TASKS as TASK_LOADERS
from ..dynamics import RESETS
from ..models import NETS, parse_layers
from ..regularizers import parse_sparsity
from ..stability.regime import REGIMES, SPARSE_RATE, TIMING_SPARSE_RATE
from ..stability.stabilize import CHOOSES, MODES, PAPER_CONDITIONS, RECIPE, resolve_conditions
from ..surrogate import SHAPES, canonical_shape
from .device import DEVICE, DEVICE_HELP, PRECISION_HELP, PRECISIONS
from .fields import POSITIVE, Check, Range, fraction, integer, one_of, option, rows
from .loggers import LOGGERS

__all__ = ["RENAMED", "TASKS", "TrainConfig", "migrate", "parse_conditions", "parse_layers", "with_defaults"]

TASKS = tuple(TASK_LOADERS)  # the names data.load_task accepts
ON_NONFINITE = ("stop", "skip")
LR_MAX = 3.4e37  # AdamW's first update is lr / (1 - beta1) = 10 lr, and float32 ends at 3.4e38

# fields that do not change what a run computes: they may differ when a run is resumed
# (the device too: a run may continue on another one; results.json records where it ran)
NON_RESULT_FIELDS = (
    "out",
    "data_dir",
    "checkpoint_every",
    "progress",
    "max_minutes",
    "threads",
    "device",
    "user_set",
    "log",
)

# names renamed to one vocabulary (issue 23): old field -> new field, and old -> new values of a field.
# Run folders, sweep databases and result files written before keep the old ones; ``migrate`` reads them.
RENAMED = {"sg": "surrogate", "stabilize": "conditions"}
RENAMED_VALUES = {"backend": {"event": "native"}}


def migrate(stored: Mapping[str, Any]) -> dict:
    """A stored config (or sweep point) with the old names of ``RENAMED`` / ``RENAMED_VALUES`` read as
    the new ones: the one place old run folders, sweep databases and result files are translated.
    ValueError when a dict holds both an old name and its new one."""
    out: dict[str, Any] = {}
    for key, value in stored.items():
        new = RENAMED.get(key, key)
        if new != key and new in stored:
            raise ValueError(f"config holds both {key!r} and {new!r} (the new name of {key!r}); keep {new!r}")
        out[new] = RENAMED_VALUES.get(new, {}).get(value, value) if isinstance(value, str) else value
    return out


def parse_log(spec: str | list | tuple | None) -> tuple[str, ...]:
    """``tensorboard,csv`` -> ("tensorboard", "csv") (each once, in the order given); ``none``, empty or
    None -> ()."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or ())
    names = [str(s).strip() for s in items if str(s).strip()]
    return () if names == ["none"] else tuple(dict.fromkeys(names))


def parse_conditions(spec: str | list | tuple | None) -> tuple[str, ...]:
    """``I,II,III,IV`` -> ("I", "II", "III", "IV"); ``auto`` -> ("auto",) (the recommended recipe, kept by
    name so a run records that it asked for it); ``none``, empty or None -> () (an empty text is how a
    sweep stores an empty list; the flag refuses it: ``flags.config_dict_from_args``)."""
    if not spec or spec == "none" or list(spec) == ["none"]:  # None, "", (), [] (a saved config's list)
        return ()
    items = tuple(str(c).strip() for c in (spec.split(",") if isinstance(spec, str) else spec))
    if items == ("auto",):
        return items
    try:
        resolve_conditions(items)
    except ValueError as err:
        raise ValueError(f"conditions must be 'auto', 'none' or a comma-separated list of conditions: {err}") from None
    return items


TAIL = Range(
    (Check(lambda v: v is None or (isinstance(v, (int, float)) and math.isfinite(v) and v > 1.0), "a finite q > 1"),)
)
LR = Range(
    (
        *POSITIVE.checks,
        Check(
            lambda v: v <= LR_MAX,
            f"a finite number in (0, {LR_MAX:g}]",
            " (AdamW's first step is lr / (1 - 0.9), which must fit in float32)",
        ),
    )
)
LOG = Range(
    (
        Check(
            lambda v: isinstance(v, tuple) and all(x in LOGGERS for x in v),
            f"'none' or a comma-separated list of {', '.join(LOGGERS)}",
        ),
    )
)
USER_SET = Range(
    (Check(lambda v: isinstance(v, (tuple, list)) and all(isinstance(x, str) for x in v), "a list of field names"),)
)
EXTERNAL = Range(
    (
        Check(
            lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("name"), str)),
            "None or a dict with the dataset's 'name' (recorded by Trainer from data.task_from_datasets)",
        ),
    )
)
MINUTES = Range((Check(lambda v: v is None or (isinstance(v, (int, float)) and v > 0), "> 0"),))
CONDITIONS_HELP = (
    "conditions applied before training: auto (the recommended recipe D,G), none, or a list such as I,II,III,IV"
)
REGIME_HELP = (
    "start of the recipe (--conditions auto): auto (dense rate 1/2 or sparse rate --sparse-rate, chosen by "
    "measuring how readable a dense start leaves the classes), dense, sparse"
)
NONFINITE_HELP = (
    "a non-finite loss or gradient: stop (stop the run, keep the last good checkpoint) | skip (skip "
    "that optimiser step and count it)"
)


@dataclass
class TrainConfig:
    """Everything a training run depends on (plus where it writes). Each field's row (``fields.option``:
    default, help, flag type, accepted range) is the one source of its ``spikestab train`` flag, its sweep
    values and its validation."""

    task: str = option("sl-mnist", f"one of {', '.join(TASKS)}", one_of(TASKS))
    data_dir: str | None = option(None, "folder with the task's files")
    task_options: dict = option(help="task options (--task-option KEY=VALUE)", flag=None, factory=dict)
    external_task: dict | None = option(
        None, "the dataset handed to Trainer from Python (data.task_from_datasets); task is then unused", EXTERNAL, None
    )
    time_repeat: int = option(1, "repeat every input frame k times", integer(1), int)
    input_dropout: float = option(0.0, "drop input spikes (training only)", fraction(), float)
    net: str = option(
        "lif", "lif | alif | cuba | slstm (spiking LSTM; with --conditions none)", one_of(NETS, sort=True)
    )
    layers: tuple[int, ...] = option((128, 128), "widths: NxW (2x256) or W1,W2 (256,128)")
    recurrent: bool = option(True, "feed-forward spiking layers", flag=bool)
    tau: float = option(20.0, "membrane time constant in steps", POSITIVE, float)
    threshold: float = option(1.0, "firing threshold", POSITIVE, float)
    reset: str = option("subtract", " | ".join(RESETS), one_of(RESETS))
    dropout: float = option(0.1, "dropout before every spiking layer", fraction(), float)
    surrogate: str = option(
        "fast-sigmoid",
        "surrogate-gradient shape (fast-sigmoid, exponential, ...)",
        one_of(SHAPES, key=canonical_shape, sort=True),
    )
    dampening: float = option(1.0, "SG peak height gamma", POSITIVE, float)
    sharpness: float = option(1.0, "SG inverse width beta", POSITIVE, float)
    tail: float | None = option(None, "q of the q-pseudospike SG", TAIL, float)
    conditions: tuple[str, ...] = option(("auto",), CONDITIONS_HELP)  # () or "none": off
    stability_mode: str = option("measured", "how the conditions are solved: " + " | ".join(MODES), one_of(MODES))
    regime: str = option("auto", REGIME_HELP, one_of(REGIMES))
    sparse_rate: float | None = option(
        None,
        f"condition D's target firing rate in the recipe's sparse regime (default {TIMING_SPARSE_RATE} where "
        f"the input is a timing code, else {SPARSE_RATE})",
        fraction(open_low=True, optional=True),
        float,
    )
    init_rate: float | None = option(
        None, "calibrate the initial firing rate to this value", fraction(open_low=True, optional=True), float
    )
    sparsity: str | None = option(None, "variant:target[:schedule[:weight]], e.g. l1_rate:0.01:linear")
    lr: float = option(1e-3, "learning rate", LR, float)
    weight_decay: float = option(0.0, "weight decay (not on embeddings)", fraction(), float)
    paper_weight_decay: bool = option(
        False, "decoupled weight decay not multiplied by the learning rate (official code)", flag=bool
    )
    clip_norm: float = option(1.0, "gradient-norm clipping", POSITIVE, float)
    on_nonfinite: str = option("stop", NONFINITE_HELP, Range((Check(lambda v: v in ON_NONFINITE, "'stop' or 'skip'"),)))
    epochs: int = option(10, "planned number of epochs", integer(1), int)
    batch_size: int = option(64, "training batch size", integer(1), int)
    eval_batch_size: int = option(256, "evaluation batch size", integer(1), int)
    seq_len: int = option(100, "language-model window length", integer(1), int)
    seed: int = option(0, "seed of initialisation, dropout and batch order", integer(0), int)
    data_seed: int = option(0, "seed of generated data and shuffled splits", integer(0), int)
    backend: str = option(
        "auto", "layer kernel backend: auto (picks the fastest) | native (the C time loops) | fused | reference"
    )
    precision: str = option("32", PRECISION_HELP, one_of(PRECISIONS))
    time_checkpoint: int = option(
        0,
        "recompute the spiking layers in segments of K steps during backward (0: off; less memory, ~1.7x time)",
        integer(0, " (0: off)"),
        int,
    )
    out: str = option("runs/train", "run folder (checkpoints, metrics, results, figures)")
    checkpoint_every: int = option(50, "checkpoint every N steps (and every epoch)", integer(1), int)
    eval_every: int | None = option(
        None, "also evaluate on val every N steps (default: once per epoch)", integer(1, optional="once per epoch"), int
    )
    max_minutes: float | None = option(None, "stop training after this many minutes, then test", MINUTES, float)
    progress: bool = option(True, "no progress bar (default: a bar per epoch)", flag=bool)
    log: tuple[str, ...] = option(
        (),
        "copies of metrics.jsonl for other tools, in OUT/tensorboard and OUT/metrics.csv (default: none)",
        LOG,
    )
    threads: int | None = option(
        None, "torch CPU threads (1 is often fastest on a shared machine)", integer(1, optional="torch's default"), int
    )
    device: str = option("cpu", DEVICE_HELP, DEVICE)
    # the fields the user set (flags typed, --config keys, sweep values, Python keywords; ``given``): the
    # recipe keeps those it would choose (``kept``). None: the names passed to the constructor
    user_set: tuple[str, ...] | None = option(None, "fields the user set", USER_SET, flag=None)

    def __new__(cls, *args: Any, **kwargs: Any) -> TrainConfig:
        """Note which fields the caller passed (positional ones by their order), for ``user_set``."""
        obj = super().__new__(cls)
        given = frozenset([f.name for f in fields(cls)][: len(args)]) | frozenset(kwargs)
        object.__setattr__(obj, "_given", given)
        return obj

    def __post_init__(self) -> None:
        if self.user_set is None:
            self.user_set = tuple(getattr(self, "_given", frozenset()) - {"user_set"})
        self.layers = parse_layers(self.layers)
        self.conditions = parse_conditions(self.conditions)
        self.log = parse_log(self.log)
        # a value other than the default was set by someone too (e.g. through dataclasses.replace)
        self.user_set = tuple(sorted(set(self.user_set) | self._changed()))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field outside its range (in the table's order), then the
        rules between fields."""
        for name, f in rows(TrainConfig).items():
            problem = f.metadata["range"].problem(name, getattr(self, name))
            if problem:
                raise ValueError(problem)
        if self.net == "slstm" and self.precision != "32":
            raise ValueError(
                f"net 'slstm' trains in precision '32' only (its own time loop does not run under autocast), got "
                f"precision {self.precision!r}"
            )
        if self.net == "slstm" and (self.conditions or self.init_rate is not None):
            raise ValueError(
                "net 'slstm' takes conditions 'none' and no init_rate: the stability conditions and the "
                f"rate calibration are for LIF/ALIF layers (got conditions={list(self.conditions)!r}, "
                f"init_rate={self.init_rate!r})"
            )
        if self.regime != "auto" and (not self.conditions or resolve_conditions(self.conditions) != RECIPE):
            raise ValueError(
                f"regime {self.regime!r} applies to the recommended recipe (conditions 'auto') only, "
                f"got conditions={list(self.conditions)!r}"
            )
        if self.sparsity:
            parse_sparsity(self.sparsity, len(self.layers), self.epochs)
        self._validate_stability()

    def _validate_stability(self) -> None:
        """The rules between the conditions and the values the user set: a value a named condition would
        choose, a stability mode or regime that would be ignored, a net the conditions do not model."""
        if self.net == "cuba" and self.conditions:
            raise ValueError(
                "net 'cuba' takes conditions 'none': its synaptic current is not modelled by the stability "
                f"conditions (got conditions={list(self.conditions)!r}; spikestab.init.fluctuation initialises it)"
            )
        applied = resolve_conditions(self.conditions) if self.conditions else ()
        if self.stability_mode == "paper" and not set(applied) & set(PAPER_CONDITIONS):
            raise ValueError(
                f"stability_mode 'paper' applies to the paper's conditions {','.join(PAPER_CONDITIONS)} only and "
                f"would be ignored with conditions {','.join(self.conditions) or 'none'}: leave --stability-mode "
                "out, or name paper conditions (--conditions I,II,III,IV)"
            )
        self._validate_sparse_rate()
        if self.conditions == ("auto",):
            if self.regime != "auto" and not self.recipe_conditions():
                raise ValueError(
                    f"regime {self.regime!r} sets the targets of the recipe's conditions D and G, and both "
                    "parameters they choose were set (threshold, dampening): leave --regime out, or one of them"
                )
            return
        for cond in applied:
            name = CHOOSES.get(cond)
            if name is not None and name in (self.user_set or ()):
                raise ValueError(
                    f"condition {cond} chooses the {name}, and {name}={getattr(self, name)!r} was set: leave "
                    f"{cond} out of conditions, or leave {name} out to let {cond} choose it (with conditions "
                    f"'auto' the recipe keeps a {name} you set and chooses the rest)"
                )

    def _validate_sparse_rate(self) -> None:
        """A sparse rate the user set must be used: by condition D of the recipe, in a regime that may be
        sparse."""
        if "sparse_rate" not in (self.user_set or ()):
            return
        recipe = bool(self.conditions) and resolve_conditions(self.conditions) == RECIPE
        why = (
            "the recipe is not applied"
            if not recipe
            else "the regime is dense"
            if self.regime == "dense"
            else "condition D is left out (threshold set)"
            if "D" not in self.recipe_conditions()
            else None
        )
        if why:
            raise ValueError(
                f"sparse_rate={self.sparse_rate!r} is condition D's target in the recipe's sparse regime and would be "
                f"ignored here ({why}): leave --sparse-rate out, or use --conditions auto with --regime auto or "
                "sparse and no --threshold"
            )

    def _changed(self) -> set[str]:
        """The fields whose value differs from their default."""
        out = set()
        for f in fields(self):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if f.name != "user_set" and getattr(self, f.name) != default:
                out.add(f.name)
        return out

    def kept(self) -> dict[str, Any]:
        """The parameters the recipe would choose that the user set, with their values: they are kept, and
        their conditions left out (``recipe_conditions``). Empty unless conditions are 'auto'."""
        if self.conditions != ("auto",):
            return {}
        names = sorted({CHOOSES[c] for c in RECIPE} & set(self.user_set or ()))
        return {name: getattr(self, name) for name in names}

    def recipe_conditions(self) -> tuple[str, ...]:
        """The conditions this run applies: the recipe's without those whose parameter is ``kept``, or the
        named ones (none for 'none')."""
        if self.conditions != ("auto",):
            return resolve_conditions(self.conditions) if self.conditions else ()
        return tuple(c for c in RECIPE if CHOOSES[c] not in self.kept())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        d["conditions"] = list(self.conditions)
        d["user_set"] = list(self.user_set or ())
        d["log"] = list(self.log)
        return d

    def result_fields(self) -> dict:
        """The fields that determine the run's results (compared on ``--resume``)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_FIELDS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """The config of a dict of fields, each set by the user unless ``d["user_set"]`` lists those that
        were; old names (``RENAMED``, e.g. a run folder's "sg") are read as the new ones."""
        d = migrate(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}; accepted keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path, run: bool = False) -> TrainConfig:
        """The config of a JSON file of fields (every field in it was set by the user); ``run``: a run
        folder's config.json, whose ``user_set`` says which were, and which lacks it when written before
        it was recorded (then the recipe chose every parameter: none was kept)."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {str(p)!r} does not exist")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {str(p)!r} is not valid JSON: {err}") from None
        if not isinstance(d, dict):
            raise ValueError(f"config file {str(p)!r} must hold a JSON object")
        if run:
            d.setdefault("user_set", [])
        elif isinstance(d.get("conditions"), str) and not d["conditions"].strip():
            # a run folder writes "none" as []; an empty text typed into a config file is refused as on the
            # command line (stored sweeps read through from_dict, where old databases hold it, still accept it)
            raise ValueError(
                f"config file {str(p)!r}: conditions is empty: write \"none\" to train without stabilisation, "
                "or leave it out for the recommended recipe (auto)"
            )
        return cls.from_dict(d)


# result fields with a plain default: a saved config that lacks one was written before the field existed,
# and behaved as that default (resume and sweep continuation compare with it filled in)
DEFAULT_RESULT_FIELDS = {
    f.name: (list(f.default) if isinstance(f.default, tuple) else f.default)
    for f in fields(TrainConfig)
    if f.name not in NON_RESULT_FIELDS and f.default is not MISSING
}


def with_defaults(saved: Mapping[str, Any]) -> dict:
    """``saved`` (a stored config dict, old names read as the new ones) with every result field it lacks
    set to that field's default."""
    saved = migrate(saved)
    return {**{k: v for k, v in DEFAULT_RESULT_FIELDS.items() if k not in saved}, **saved}
