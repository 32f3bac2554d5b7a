"""``spikestab stabilize``: build a network for a task, apply stability conditions (the recommended recipe
by default, or any of I-IV, D, G), print the report table and optionally write it as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch

from ..data.tasks import TASKS as DATA_TASKS
from ..dynamics import RESETS
from ..models import NETS, SNNConfig, SNNLanguageModel, build_model, parse_layers
from ..presets import paper_config, paper_defaults
from ..train.device import DEVICE_HELP, host, parse_device
from ..train.flags import add_alias
from ..train.memory import check_fits
from ..train.run_folder import VIRTUAL_ROOTS
from ..train.task import PROBE_SAMPLES, probe_set
from .conditions import SOLVE_FOR, check_rate
from .regime import MIN_PROBE_SAMPLES, REGIMES, SPARSE_RATE, TIMING_SPARSE_RATE
from .stabilize import CHOOSES, CONDITIONS, MODES, RECIPE, resolve_conditions, stabilize

TASKS = ("random", *DATA_TASKS)  # "random": a random spike batch, no data needed


def _random_batch(args: argparse.Namespace) -> tuple[torch.Tensor, int, int, str, None]:
    if not 0.0 < args.input_rate < 1.0:
        raise ValueError(f"--input-rate must be in (0, 1), got {args.input_rate}")
    gen = torch.Generator().manual_seed(args.seed)
    x = (torch.rand(args.steps, args.batch, args.inputs, generator=gen) < args.input_rate).float()
    return x, args.inputs, 10, "classification", None


def _task_batch(args: argparse.Namespace, probe_samples: int):
    """The task's first batch, sizes and kind, and the recipe's labelled probe set: the first
    ``probe_samples`` samples of the shuffled training set (``train.task.probe_set``; None for 0, a
    language task or too few samples)."""
    from ..data import lm_batches, load_task, make_loader

    try:
        # the paper repeats every input frame twice (docs/theory.md, "Tasks")
        task = load_task(args.task, args.data_dir, seed=args.seed, time_repeat=2 if args.preset == "paper" else 1)
    except FileNotFoundError as err:  # reported like any bad input: a clean message, exit status 2
        raise ValueError(str(err)) from err
    if isinstance(task.train, torch.Tensor):  # a language task: a token stream
        inputs, _ = next(iter(lm_batches(task.train, args.batch, task.n_steps)))
        return inputs, task.input_size, task.output_size, "language", None
    x, _ = next(iter(make_loader(task.train, args.batch, shuffle=False, seed=args.seed)))
    probe = probe_set(task, probe_samples, args.seed, probe_samples) if probe_samples else None
    return x, task.input_size, task.output_size, "classification", probe


def build(args: argparse.Namespace, probe_samples: int = 0):
    """(model, batch, probe) for the command-line arguments; probe: ``probe_samples`` labelled training
    samples (inputs, labels) of the task, or None."""
    sizes = parse_layers(args.layers)
    batch, n_in, n_out, kind, probe = _random_batch(args) if args.task == "random" else _task_batch(args, probe_samples)
    check_fits(n_in, sizes, n_out, batch.shape[0], batch.shape[1], f"--layers {args.layers}")
    torch.manual_seed(args.seed)
    dampening = 1.0 if args.dampening is None else args.dampening
    kw = dict(net=args.net, reset=args.reset, surrogate=args.surrogate, dampening=dampening, dropout=0.0)
    cfg = paper_config(n_in, n_out, sizes, **kw) if args.preset == "paper" else SNNConfig(n_in, n_out, sizes, **kw)
    model = build_model(cfg, kind)  # a language model's embedding is as wide as its last layer
    if args.preset == "paper":
        paper_defaults(model, seq_len=batch.shape[0], seed=args.seed)
    return model, batch, probe


def _check_file(flag: str, path: str | None, makes_folders: bool = False) -> None:
    """ValueError unless ``path`` (of ``flag``) names a file that can be written: in an existing folder
    (``makes_folders``: or one that can be created), writable, not on a virtual file system."""
    if path is None:
        return
    p = Path(path)
    folder = next((f for f in p.parents if f.exists()), Path.cwd()) if makes_folders else p.parent
    if not path.strip() or p.is_dir() or not folder.is_dir():
        where = "a folder that exists or can be created" if makes_folders else "an existing folder"
        raise ValueError(f"{flag} must name a file in {where}, got {path!r}")
    if str(p.resolve()).startswith(tuple(root + "/" for root in VIRTUAL_ROOTS)):
        raise ValueError(f"{flag} {path!r} is on a virtual file system: choose a file on disk")
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"{flag} {path!r} cannot be written (no write permission): choose another file")


def _check_args(args: argparse.Namespace) -> None:
    """ValueError for a size out of range or an output file that cannot be written, before any work."""
    for flag, value in (("--steps", args.steps), ("--batch", args.batch), ("--inputs", args.inputs)):
        if value < 1:
            raise ValueError(f"{flag} must be an integer >= 1, got {value}")
    if args.probe_samples != 0 and args.probe_samples < MIN_PROBE_SAMPLES:
        raise ValueError(f"--probe-samples must be 0 (no probe) or >= {MIN_PROBE_SAMPLES}, got {args.probe_samples}")
    if args.sparse_rate is not None:
        check_rate(args.sparse_rate, "--sparse-rate")
    _check_file("--json", args.json, makes_folders=True)
    _check_file("--save", args.save)


def _conditions(args: argparse.Namespace) -> tuple[str, ...]:
    """The conditions to apply: the named ones, or the recipe without G when --dampening was given (the
    recipe keeps it); ValueError for a named condition that would overwrite --dampening."""
    conds = tuple(c.strip() for c in args.conditions.split(",") if c.strip())
    if not conds:
        raise ValueError("--conditions is empty: name 'auto' (the recipe) or conditions such as I,II,III,IV")
    if args.dampening is None:
        return conds
    if conds == ("auto",):
        print(f"kept as you set it: dampening={args.dampening} (condition G left out); the recipe applies D")
        return tuple(c for c in RECIPE if CHOOSES[c] != "dampening")
    for cond in resolve_conditions(conds):
        if CHOOSES.get(cond) == "dampening":
            raise ValueError(
                f"condition {cond} chooses the dampening, and --dampening {args.dampening} was given: leave "
                f"{cond} out of --conditions, or leave --dampening out to let {cond} choose it"
            )
    return conds


def _cmd(args: argparse.Namespace) -> int:
    _check_args(args)
    device = parse_device(args.device)  # a GPU torch does not see: refused before any work
    conds = _conditions(args)
    is_recipe = set(resolve_conditions(conds)) <= set(RECIPE)
    if not is_recipe and args.regime != "auto":
        raise ValueError(f"--regime {args.regime} applies to the recommended recipe (--conditions auto) only")
    if args.sparse_rate is not None and (args.regime == "dense" or "D" not in resolve_conditions(conds)):
        raise ValueError(
            "--sparse-rate is condition D's target in the recipe's sparse regime and would be ignored with "
            f"--conditions {args.conditions} --regime {args.regime}: leave it out, or use --conditions auto "
            "with --regime auto or sparse"
        )
    # the probe decides the recipe's regime: only the recipe with --regime auto measures it, by D's thresholds
    measured = is_recipe and args.regime == "auto" and "D" in resolve_conditions(conds)
    model, batch, probe = build(args, args.probe_samples if measured else 0)
    recipe = {"regime": args.regime, "probe": probe, "sparse_rate": args.sparse_rate} if is_recipe else {}
    report = stabilize(
        model,
        batch,
        conds,
        mode=args.stability_mode,
        solve_for=args.solve_for,
        rate=args.rate,
        device=device,  # the model (built on the CPU from the seed), the batch and the probe move there
        **recipe,
    )
    print(report)
    options = {k: v for k, v in vars(args).items() if k != "func"}
    if args.json:
        report.write_json(args.json, extra={"config": options})
        print(f"wrote {args.json}")
    if args.save:
        save_model(model, args.save, report.to_dict(), options)
    return 0


def save_model(model, path: str, report: dict, options: dict) -> None:
    """Save a stabilised model as ``{"state_dict", "config" (SNNConfig fields), "kind", "report", "options"}``
    and say how to load it and how to train such a network."""
    from ..files import atomic_torch_save

    kind = "language" if isinstance(model, SNNLanguageModel) else "classification"
    atomic_torch_save(
        {
            "state_dict": host(model.state_dict()),  # CPU tensors: the file loads on any machine
            "config": dataclasses.asdict(model.config),
            "kind": kind,
            "report": report,
            "options": options,
        },
        path,
    )
    cls = type(model).__name__
    damp = "" if options["dampening"] is None else f" --dampening {options['dampening']}"
    print(
        f"saved the stabilised model to {path}; load it in Python with:\n"
        f"  from spikestab.models import {cls}, SNNConfig, load_model_state\n"
        f"  ck = torch.load({path!r}, weights_only=True)\n"
        f"  model = {cls}(SNNConfig(**ck['config'])); load_model_state(model, ck['state_dict'])\n"
        f"to train such a network on a task, `spikestab train` applies the same conditions at its start: "
        f"spikestab train --task TASK --net {options['net']} --layers {options['layers']} "
        f"--conditions {options['conditions']} --stability-mode {options['stability_mode']} "
        f"--reset {options['reset']} --surrogate {options['surrogate']}{damp} --out runs/NAME"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stabilize",
        help="apply stability conditions and print the measured report",
        description="Build a network for a task (or random input), apply stability conditions "
        "on one batch and print what each condition chose and measured. --save keeps "
        "the stabilised model; `spikestab train` applies the same conditions itself "
        "(--conditions) before it trains.",
    )
    p.add_argument("--task", default="random", help=f"{', '.join(TASKS)} (random: no data needed)")
    p.add_argument("--net", choices=sorted(NETS), default="lif", help="neuron model")
    p.add_argument("--layers", default="2x128", help="widths, e.g. 2x256 or 128,256")
    p.add_argument(
        "--stability-mode",
        choices=list(MODES),
        default="measured",
        help="measured: conditions solved on the batch's own voltages; paper: the paper's closed forms",
    )
    add_alias(p, "--mode", "--stability-mode", dest="stability_mode", choices=list(MODES))
    p.add_argument(
        "--conditions",
        default="auto",
        help=f"auto (the recommended recipe) or a comma-separated subset of {','.join(CONDITIONS)}",
    )
    p.add_argument("--device", default="cpu", help=f"{DEVICE_HELP} (default: cpu)")
    p.add_argument("--json", default=None, help="write the report here as JSON")
    p.add_argument(
        "--save",
        default=None,
        metavar="FILE",
        help="save the stabilised model here (torch file: state_dict, config, kind, report)",
    )
    _network_options(p)
    _condition_options(p)
    p.set_defaults(func=_cmd)


def _network_options(p: argparse.ArgumentParser) -> None:
    """Where the task's data is, and the network's settings before the conditions."""
    p.add_argument("--data-dir", default=None, help="folder with the task's files (see `spikestab tasks`)")
    p.add_argument(
        "--preset",
        choices=["none", "paper"],
        default="none",
        help="paper: the paper's network settings (input frames repeated twice)",
    )
    p.add_argument("--reset", default="subtract", help=", ".join(RESETS))
    p.add_argument("--surrogate", default="fast-sigmoid", help="SG shape (fast-sigmoid, exponential, ...)")
    p.add_argument(
        "--dampening",
        type=float,
        default=None,
        help="SG peak height (default 1.0, chosen by condition G of the recipe or by III); a value given is "
        "kept: the recipe leaves G out, and a condition that would choose it is refused",
    )


def _condition_options(p: argparse.ArgumentParser) -> None:
    """What the conditions target and the batch (or random input) they are solved on."""
    p.add_argument(
        "--solve-for", choices=list(SOLVE_FOR), default="sharpness", help="the SG parameter condition IV sets"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.5,
        help="target initial firing rate of conditions I and D (the recipe's dense regime)",
    )
    p.add_argument(
        "--regime",
        choices=list(REGIMES),
        default="auto",
        help="start of the recipe: auto (dense or sparse, measured on labelled task samples; dense "
        "with --task random), dense (rate --rate), sparse (rate --sparse-rate)",
    )
    p.add_argument(
        "--sparse-rate",
        type=float,
        default=None,
        help=f"the recipe's condition D target in its sparse regime (default {TIMING_SPARSE_RATE} where the "
        f"input is a timing code, else {SPARSE_RATE})",
    )
    p.add_argument(
        "--probe-samples",
        type=int,
        default=PROBE_SAMPLES,
        help="labelled training samples the recipe's regime is measured on (0: none, dense)",
    )
    p.add_argument("--input-rate", type=float, default=0.1, help="--task random: input spike probability")
    p.add_argument("--inputs", type=int, default=100, help="--task random: input channels")
    p.add_argument("--steps", type=int, default=200, help="--task random: time steps")
    p.add_argument("--batch", type=int, default=8, help="samples in the batch the conditions are solved on")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the random input")
