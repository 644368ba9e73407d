"""``nantrap demo``: the seed's NaN traps, each run plain and then under the guard."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "run the seed's NaN traps on synthetic data, plain and then guarded"
ORDER = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--framework",
        choices=("torch", "tf"),
        default="torch",
        help="which guard to show (default: torch)",
    )
    parser.add_argument(
        "--log-dir",
        default=None,
        help="where the guarded runs write events.jsonl (default: a temp dir)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.framework == "tf":
            from nantrap.tf.demo import run_demo
        else:
            from nantrap.torch.demo import run_demo
    except ImportError as exc:
        extra = "tf" if args.framework == "tf" else "torch"
        print(f"nantrap demo: needs {exc.name or extra} (pip install 'nantrap[{extra}]')")
        return 2
    if args.framework == "tf":
        return run_demo()
    return run_demo(log_dir=args.log_dir)
