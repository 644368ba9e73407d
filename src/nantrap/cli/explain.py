"""``nantrap explain NT102``: print one catalog entry."""

from __future__ import annotations

import argparse
import sys

from nantrap.traps import get_trap

NAME = "explain"
HELP = "explain a trap: what goes wrong, why (with numbers), the fix, bad/good code"
ORDER = 81


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("code", nargs="+", help="trap code (NT102) or name (clip-before-log)")


def run(args: argparse.Namespace) -> int:
    status = 0
    for i, code in enumerate(args.code):
        try:
            trap = get_trap(code)
        except KeyError as exc:
            print(f"nantrap explain: {exc.args[0]}", file=sys.stderr)
            status = 2
            continue
        if i:
            print()
        print(trap.explain())
    return status
