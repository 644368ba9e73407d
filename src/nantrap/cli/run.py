"""``nantrap run script.py [args...]``: run an unchanged training script under the guard."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nantrap.errors import ConfigError

NAME = "run"
HELP = "run an unchanged training script with the guard on every optimizer it creates"
ORDER = 30
POLICIES = ("warn", "skip", "rollback", "stop", "raise")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        choices=POLICIES,
        default="warn",
        help="what the guard does at an incident (default: warn)",
    )
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        help="the run folder (default: nantrap-runs/<timestamp>)",
    )
    parser.add_argument(
        "--guard-option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="extra keyword for nantrap.torch.guard, e.g. lr_decay=0.5 (repeatable)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not render report.html")
    parser.add_argument(
        "-m", dest="module", action="store_true", help="run a module, like python -m"
    )
    parser.add_argument("target", metavar="SCRIPT", help="the script (or module with -m)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")


def run(args: argparse.Namespace) -> int:
    from nantrap.run import RunConfig, run_guarded
    from nantrap.run.session import GUARD_DEFAULTS, default_log_dir

    config = RunConfig(
        target=args.target,
        args=list(args.args),
        module=args.module,
        policy=args.policy,
        log_dir=Path(args.log_dir) if args.log_dir else default_log_dir(),
        guard_options={**GUARD_DEFAULTS, **_options(args.guard_option)},
        report=not args.no_report,
    )
    result = run_guarded(config)
    sys.stdout.flush()
    for note in result.notes:
        print(f"nantrap run: {note}", file=sys.stderr)
    where = result.report or result.log_dir
    print(
        f"nantrap run: {result.status} (exit {result.exit_code}); report: {where}", file=sys.stderr
    )
    return result.exit_code


def _options(items: list[str]) -> dict:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--guard-option {item!r}: expected KEY=VALUE, e.g. lr_decay=0.5")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options
