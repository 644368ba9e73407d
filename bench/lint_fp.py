"""False positives per 1,000 lines of ``nantrap lint`` on large, well-kept trees.

Lints each installed package's tree (torch, keras, numpy, transformers, torchmetrics,
lightning, tensorflow by default) with the default configuration and counts findings
(NT901, "could not read this file", is counted apart). Well-kept library code is taken
as clean, so every finding counts as a false positive (some are true, deliberate
reference code). Each tree is linted as one project (``lint_paths``: calls across its
files count); ``--per-file`` lints each file alone, as ``nantrap lint`` does.
``--out FILE`` writes every finding as ``path:line: CODE message`` to compare two runs.

    python bench/lint_fp.py [PACKAGE_OR_DIR ...] [--per-file] [--out findings.txt]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nantrap.findings import Report  # noqa: E402
from nantrap.lint import LintConfig, discover, lint_file, lint_paths  # noqa: E402

DEFAULT = ("torch", "keras", "numpy", "transformers", "torchmetrics", "lightning", "tensorflow")


def tree_of(name: str) -> Path | None:
    path = Path(name)
    if path.is_dir():
        return path
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def count_lines(tree: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in tree.rglob("*.py"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", default=list(DEFAULT))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--per-file", action="store_true")
    args = parser.parse_args()
    total_lines = total = 0
    codes: Counter[str] = Counter()
    listing: list[str] = []
    start = time.perf_counter()
    for name in args.trees:
        tree = tree_of(name)
        if tree is None:
            print(f"{name}: not installed, skipped")
            continue
        lines = count_lines(tree)
        if args.per_file:
            report = Report(engine="lint")
            for path in discover([tree], LintConfig()):
                report.extend(lint_file(path, LintConfig()))
        else:
            report = lint_paths([tree], LintConfig())
        found = [f for f in report.findings if f.code != "NT901"]
        unreadable = len(report.findings) - len(found)
        total_lines += lines
        total += len(found)
        codes.update(f.code for f in found)
        listing += [f"{f.location.path}:{f.location.line}: {f.code} {f.message}" for f in found]
        rate = 1000 * len(found) / max(lines, 1)
        print(
            f"{name:14s} {lines:>10,} lines {len(found):5d} findings {rate:6.3f} per 1,000"
            f"  (NT901: {unreadable})"
        )
    rate = 1000 * total / max(total_lines, 1)
    print(f"{'all':14s} {total_lines:>10,} lines {total:5d} findings {rate:6.3f} per 1,000")
    print("by code: " + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())))
    print(f"time: {time.perf_counter() - start:.0f} s")
    if args.out:
        args.out.write_text("\n".join(sorted(listing)) + "\n")


if __name__ == "__main__":
    main()
