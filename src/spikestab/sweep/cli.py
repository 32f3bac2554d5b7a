"""``spikestab sweep`` and ``spikestab sweep-report``."""

from __future__ import annotations

import argparse

from ..train.flags import add_config_options, config_dict_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid or a search of training runs on Optuna (resumable, many workers)",
        description="Every trial is a `spikestab train` run in OUT/trials/<setting>; the trials are handed out "
        "by an Optuna storage (default OUT/sweep.db). Rerun the same command to continue a sweep. "
        "The options after the sweep options are the fixed training options, as for `spikestab train`.",
    )
    _sweep_options(p.add_argument_group("sweep"))
    add_config_options(p.add_argument_group("training options (as for spikestab train)"), exclude=("out",))
    p.set_defaults(func=_sweep)

    r = sub.add_parser(
        "sweep-report",
        help="table, best setting and figures of a sweep",
        description="Writes DIR/report/report.json, report.md and one PNG per swept option.",
    )
    r.add_argument("dir", help="the sweep's --out folder")
    r.add_argument("--storage", default=None, metavar="URL", help="the sweep's storage (default DIR/sweep.db)")
    r.add_argument("--study", default=None, help="study name (default: from DIR/sweep.json)")
    r.add_argument(
        "--ref",
        action="append",
        default=[],
        metavar="NAME=VALUE[:label]",
        help="vertical reference line on NAME's figure, e.g. dampening=0.3:predicted (repeatable)",
    )
    r.set_defaults(func=_report)


def _sweep_options(g: argparse._ArgumentGroup) -> None:
    """The options of the sweep itself (what varies, how trials are handed out)."""
    g.add_argument("--out", required=True, help="sweep folder: sweep.db, sweep.json, trials/<setting>/")
    g.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="swept option and its values (repeatable; every combination runs once; values holding "
        "commas are separated by ';'; 'none' for None)",
    )
    g.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="NAME=LOW:HIGH[:log]",
        help="searched option: a range, or a list V1,V2,... (repeatable; with --trials)",
    )
    g.add_argument("--sampler", default=None, help="tpe (default) | random, for --space")
    g.add_argument("--trials", type=int, default=None, help="number of --space trials in all")
    g.add_argument(
        "--prune",
        default=None,
        metavar="median[:STARTUP[:WARMUP]]",
        help="stop trials whose epoch objective is below the median of finished trials",
    )
    g.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    g.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="Optuna RDB URL (default sqlite:///OUT/sweep.db); postgresql://... shares one sweep between machines",
    )
    g.add_argument("--study", default=None, help="study name (default: the name of --out)")
    g.add_argument("--heartbeat", type=int, default=30, help="seconds between a running trial's heartbeats")
    g.add_argument(
        "--grace",
        type=int,
        default=None,
        help="seconds without heartbeat after which a trial's worker counts as dead (default 4 beats)",
    )
    g.add_argument("--sampler-seed", type=int, default=None, help="seed of the search sampler (+ worker index)")
    g.add_argument("--retry-failed", action="store_true", help="queue settings whose trials all failed again")


def _sweep(args: argparse.Namespace) -> int:
    from .run import run_sweep
    from .space import parse_grid, parse_space

    fixed = config_dict_from_args(args, exclude=("out",))
    grid = parse_grid(args.grid) if args.grid else None
    space = parse_space(args.space) if args.space else None
    try:
        run_sweep(
            args.out,
            fixed,
            grid,
            space,
            sampler=args.sampler,
            trials=args.trials,
            workers=args.workers,
            storage=args.storage,
            prune=args.prune,
            study_name=args.study,
            heartbeat=args.heartbeat,
            grace=args.grace,
            sampler_seed=args.sampler_seed,
            retry_failed=args.retry_failed,
            log=lambda line: print(line, flush=True),
        )
    except KeyboardInterrupt:
        print("sweep interrupted: the running trials are queued again; rerun the same command to continue", flush=True)
        return 130
    print(f"report: spikestab sweep-report {args.out}" + (" --storage URL" if args.storage else ""))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import report

    data = report(args.dir, storage=args.storage, study_name=args.study, refs=args.ref)
    with open(data["markdown"]) as fh:
        print(fh.read(), end="")
    for path in [data["markdown"], data["json"], *data["figures"]]:
        print(f"wrote {path}")
    return 0
