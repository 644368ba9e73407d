"""``nantrap report RUN_DIR``: render a guard run folder as HTML (default) or Markdown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "report"
HELP = "render a guard run folder (events.jsonl) as a self-contained HTML page or Markdown"
ORDER = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the guard's log_dir")
    parser.add_argument(
        "--format",
        choices=("html", "md"),
        default="html",
        help="html: RUN_DIR/report.html (default); md: Markdown for an issue, on stdout",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="where to write (default: RUN_DIR/report.html for html, stdout for md; '-' stdout)",
    )


def run(args: argparse.Namespace) -> int:
    from nantrap.report.run_log import load_run

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"nantrap report: {run_dir}: no such run folder", file=sys.stderr)
        return 2
    log = load_run(run_dir)
    if not log.files and not log.meta:  # not a run folder: an error, and nothing written
        for problem in log.problems:
            print(f"nantrap report: {problem}", file=sys.stderr)
        return 2
    for problem in log.problems:
        print(f"nantrap report: warning: {problem}", file=sys.stderr)
    text = render(log, args.format)
    target = args.output or (str(run_dir / "report.html") if args.format == "html" else "-")
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text, encoding="utf-8")
        print(f"nantrap report: wrote {target}", file=sys.stderr)
    return 2 if not log.files else 0


def render(log, fmt: str) -> str:
    """The run in one format (``html`` or ``md``)."""
    if fmt == "md":
        from nantrap.report.markdown import render_markdown

        return render_markdown(log)
    from nantrap.report.html import render_html

    return render_html(log)
