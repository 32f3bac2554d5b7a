"""``spikestab train``: build a TrainConfig from flags (over an optional JSON config), train, report."""

from __future__ import annotations

import argparse
import errno
import shlex
import sys
from pathlib import Path

from ..data.download import DownloadError, fetch_task_files
from .distributed import main as distributed_main
from .distributed import under_torchrun
from .flags import add_config_options, config_from_args
from .loggers import check_installed
from .report import report
from .trainer import Trainer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a spiking network on a task",
        description="Train a stacked LIF/ALIF network, stabilised before training by the "
        "recommended recipe (--conditions); writes checkpoints, metrics.jsonl, "
        "results.json and figures under --out (docs/run_folder.md explains each file). "
        "`spikestab tasks` lists the tasks and their options. Epochs are counted from 1 "
        "on the console and from 0 in metrics.jsonl and results.json.",
    )
    add_config_options(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with its stored configuration (flags typed override it; only "
        "--epochs and the non-result options may differ, so a finished run can be extended with "
        "--epochs N); an empty or missing --out starts a fresh run",
    )
    p.add_argument(
        "--no-figures",
        dest="figures",
        action="store_false",
        help="skip the figures (default: draw them under --out/figures)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch the task's official files (shd) into its data folder (--data-dir, default the cache) when "
        "they are missing, checked against their published checksums (as `spikestab download`)",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="data-parallel training in N processes on this machine (torch.distributed, gloo; "
        "--batch-size stays the global batch; docs/distributed.md); under torchrun leave it out",
    )
    p.set_defaults(func=_cmd)


def resume_command(out: str) -> str:
    """The command that continues the run in ``out`` (its config.json holds every other option)."""
    return f"spikestab train --resume --out {shlex.quote(str(out))}"


def _where(trainer: Trainer | None) -> str:
    ck = None if trainer is None else trainer.last_checkpoint
    if trainer is None or ck is None:
        return "no checkpoint had been written yet"
    return (
        f"the last checkpoint is {Path(trainer.cfg.out) / 'checkpoint.pt'} (step {ck['global_step']}, "
        f"{ck['epoch']} epochs done)"
    )


def _then(out: str) -> str:
    """How to continue a run that stopped: resume it once its config.json exists, else (stopped before the
    run wrote it: nothing holds the options yet, and a bare --resume would start a default run) run the
    same command again."""
    if (Path(out) / "config.json").is_file():
        return f"resume with: {resume_command(out)}"
    return "nothing to resume yet: run the same command again"


def _cmd(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    check_installed(cfg.log)  # before any process starts
    if args.download:
        try:
            fetch_task_files(cfg.task, cfg.data_dir, progress=cfg.progress)
        except DownloadError as err:
            print(f"spikestab train: error: {err}", file=sys.stderr)
            return 1
    if args.nproc is not None or under_torchrun():  # data-parallel: train/distributed.py
        return distributed_main(cfg, args.nproc, args.resume, args.figures)
    trainer = None
    try:
        trainer = Trainer(cfg)
        results = trainer.fit(resume=args.resume)  # refuses a foreign or existing run before writing anything
    except KeyboardInterrupt:
        print(f"\nspikestab train: interrupted; {_where(trainer)}; {_then(cfg.out)}", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(
            f"spikestab train: error: disk full ({err}); {_where(trainer)}; free some space, then {_then(cfg.out)}",
            file=sys.stderr,
        )
        return 1
    report(trainer, results, args.figures)
    return 0
