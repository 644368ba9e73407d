"""``nantrap traps``: list the catalog."""

from __future__ import annotations

import argparse
import json

from nantrap.findings import _plain
from nantrap.traps import all_traps

NAME = "traps"
HELP = "list the numerical traps nantrap knows (codes, names, categories)"
ORDER = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    traps = list(all_traps())
    if args.format == "json":
        print(json.dumps([_plain(t.__dict__) for t in traps], indent=2))
        return 0
    width = max(len(t.name) for t in traps)
    for t in traps:
        print(f"{t.code}  {t.name:<{width}}  {t.category!s:<11} {t.title}")
    return 0
