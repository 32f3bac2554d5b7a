"""The ``spikestab`` command. Each subcommand lives in the module that owns its work and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the handler."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

# module that registers each group of subcommands
COMMAND_MODULES = [
    "spikestab.demo",
    "spikestab.stability.cli",
    "spikestab.train.cli",
    "spikestab.data.make_shd",
    "spikestab.sweep.cli",
    "spikestab.data.catalog",
    "spikestab.data.download",
]

DESCRIPTION = (
    "Train spiking neural networks with surrogate gradients (SG) whose shape, dampening and "
    "initialisation are chosen by stability conditions. Start with `spikestab demo` (offline, a few "
    "minutes), list the tasks with `spikestab tasks`, then `spikestab train --task ...`; "
    "`spikestab COMMAND --help` explains each command and shows its defaults."
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except switches and unset (None) options, whose help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def _version() -> str:
    try:
        return importlib.metadata.version("spikestab")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikestab", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"spikestab {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    helps = {a.dest: a.help for a in sub._choices_actions}
    for command, p in sub.choices.items():  # every command: a description and its defaults in --help
        p.formatter_class = HelpFormatter
        text = helps[command] or command
        p.description = p.description or (text[0].upper() + text[1:] + ".")
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
