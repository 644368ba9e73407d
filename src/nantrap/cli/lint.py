"""``nantrap lint PATH...``: find numerical traps in Python files and notebooks.

Exit codes follow ruff: 0 clean, 1 findings (or, with ``--diff``, fixes to apply),
2 usage or input error.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

NAME = "lint"
HELP = "find numerical traps (log of softmax, x / norm, exp overflow...) in source and notebooks"
ORDER = 10
FORMATS = ("text", "json", "sarif")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", default=["."], help="files or folders (default: .)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format")
    parser.add_argument("--select", help="comma-separated code prefixes to check (NT1,NT202)")
    parser.add_argument("--extend-select", help="code prefixes to add to the selection")
    parser.add_argument("--ignore", help="comma-separated code prefixes to skip")
    parser.add_argument("--fix", action="store_true", help="apply safe fixes in place")
    parser.add_argument(
        "--unsafe-fixes", action="store_true", help="also apply fixes that may change results"
    )
    parser.add_argument(
        "--diff", action="store_true", help="show the fixes as a diff; change no file"
    )
    parser.add_argument("--config", type=Path, help="pyproject.toml to read [tool.nantrap] from")
    parser.add_argument("--isolated", action="store_true", help="ignore configuration files")
    parser.add_argument("--exit-zero", action="store_true", help="exit 0 even with findings")
    parser.add_argument("-o", "--output-file", type=Path, help="write the report here")
    parser.add_argument("--max-file-size", type=int, help="skip files above this many bytes")
    parser.add_argument(
        "--stdin-filename", help="name to report for source read from stdin (PATH '-')"
    )


def run(args: argparse.Namespace) -> int:
    from nantrap.errors import ConfigError
    from nantrap.findings import Report
    from nantrap.lint import (
        LintConfig,
        discover,
        find_pyproject,
        fix_file,
        fix_source,
        lint_paths,
        lint_source,
        load_config,
        unified_diff,
    )
    from nantrap.lint._config import _codes

    config = LintConfig()
    if not args.isolated:
        if args.config is not None:
            if not args.config.is_file():
                raise ConfigError(f"--config {args.config}: no such file")
            config = load_config(args.config)
        else:
            first = Path(args.paths[0]) if args.paths and args.paths[0] != "-" else Path.cwd()
            found = find_pyproject(first if first.exists() else Path.cwd())
            config = load_config(found)
    here = Path("<command line>")
    if args.select:
        config = config.merged(select=_codes(here, "--select", _split(args.select)))
    if args.extend_select:
        config = config.merged(
            select=config.select + _codes(here, "--extend-select", _split(args.extend_select))
        )
    if args.ignore:
        config = config.merged(ignore=config.ignore + _codes(here, "--ignore", _split(args.ignore)))
    if args.max_file_size is not None:
        if args.max_file_size <= 0:
            raise ConfigError("--max-file-size must be a positive number of bytes")
        config = config.merged(max_file_size=args.max_file_size)
    unsafe = args.unsafe_fixes or config.unsafe_fixes

    report = Report(engine="lint")
    fixed = diffs = 0
    if args.paths == ["-"]:
        name = args.stdin_filename or "-"
        text = sys.stdin.read()
        if args.fix or args.diff:
            new, fixed = fix_source(text, name, config, unsafe=unsafe)
            if args.diff:
                diff = unified_diff(name, text, new)
                diffs += bool(diff)
                sys.stdout.write(diff)
                return 0 if args.exit_zero or not diffs else 1
            sys.stdout.write(new)
            text = new
        report.extend(lint_source(text, name, config))
    else:
        missing = [p for p in args.paths if not Path(p).exists()]
        if missing:
            print(f"nantrap lint: error: no such file or folder: {missing[0]}", file=sys.stderr)
            return 2
        roots = [Path(p) for p in args.paths]
        files = list(discover(roots, config))
        for path in files:
            if args.fix or args.diff:
                old, new, n = fix_file(path, config, unsafe=unsafe)
                if n and new != old:
                    if args.diff:
                        diffs += 1
                        sys.stdout.write(unified_diff(str(path), old, new))
                        continue
                    _write(path, new)
                    fixed += n
        if not args.diff:
            # one project: a function imported from another linted file gets the facts of
            # the calls there too
            report.extend(lint_paths(roots, config).findings)
        report.meta["files"] = len(files)
        if args.diff:
            if diffs:
                print(f"Would fix {diffs} file{'s' if diffs != 1 else ''}.", file=sys.stderr)
            return 0 if args.exit_zero or not diffs else 1
    if fixed:
        print(f"Fixed {fixed} finding{'s' if fixed != 1 else ''}.", file=sys.stderr)
    report.meta["fixed"] = fixed
    output = _render(report, args.format)
    if args.output_file is not None:
        args.output_file.write_text(output, encoding="utf-8")
    elif args.paths != ["-"] or not (args.fix or args.diff):
        sys.stdout.write(output)
    else:
        sys.stderr.write(output)
    return 0 if args.exit_zero or not report.findings else 1


def _render(report, fmt: str) -> str:
    if fmt == "json":
        from nantrap.report.json import render
    elif fmt == "sarif":
        from nantrap.report.sarif import render
    else:
        from nantrap.report.text import render
    return render(report)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically, keeping its permissions."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".nantrap")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
