"""The ``nantrap`` command line. Each subcommand is one module in this package.

A command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; it is discovered automatically. Commands parse and print only:
the engines return data (Findings, Reports) and ``nantrap.report`` renders it.
Exit codes follow ruff: 0 clean, 1 findings, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from nantrap import __version__
from nantrap.errors import NantrapError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nantrap",
        description="Find, explain and fix NaN/Inf in neural-network training.",
    )
    parser.add_argument("--version", action="version", version=f"nantrap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except NantrapError as exc:
        print(f"nantrap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `nantrap traps | head`
        sys.stderr.close()
        return 0


def _command_modules():
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    return sorted(modules, key=lambda m: getattr(m, "ORDER", 50))
