"""The ``spikestab`` command. Each subcommand lives in the module that owns its work and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the handler."""

from __future__ import annotations

import argparse
import importlib
import sys

# module that registers each group of subcommands
COMMAND_MODULES = [
    "spikestab.demo",
    "spikestab.stability.cli",
    "spikestab.train.cli",
    "spikestab.data.make_shd",
    "spikestab.sweep.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikestab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:  # bad input: a clear message, no traceback
        print(f"spikestab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
