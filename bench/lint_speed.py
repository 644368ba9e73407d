"""Lines per second of ``nantrap lint`` against ``python -m pyflakes`` on the same tree.

Both run as fresh subprocesses over the same directory, one after the other (and
alternating when ``--repeat`` > 1, taking each tool's best time), so the ratio is fair
on a noisy machine. Target: ratio >= 1 (no slower than pyflakes).

    python bench/lint_speed.py [TREE] [--repeat N]

TREE defaults to the installed ``keras`` package (about 300k lines).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_tree() -> Path:
    spec = importlib.util.find_spec("keras")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pass a TREE (keras is not installed to use as the default)")
    return Path(next(iter(spec.submodule_search_locations)))


def count_lines(tree: Path) -> tuple[int, int]:
    files = lines = 0
    for path in tree.rglob("*.py"):
        files += 1
        lines += path.read_bytes().count(b"\n")
    return files, lines


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    tree = args.tree or default_tree()
    files, lines = count_lines(tree)
    ours = [
        sys.executable,
        "-m",
        "nantrap",
        "lint",
        str(tree),
        "--isolated",
        "--exit-zero",
        "--format",
        "json",
        "--output-file",
        os.devnull,
    ]
    theirs = [sys.executable, "-m", "pyflakes", str(tree)]
    t_ours, t_theirs = [], []
    for _ in range(args.repeat):
        t_ours.append(timed(ours))
        t_theirs.append(timed(theirs))
    a, b = min(t_ours), min(t_theirs)
    print(f"tree: {tree} ({files} files, {lines:,} lines)")
    print(f"nantrap lint: {a:7.2f} s  {lines / a:10,.0f} lines/s")
    print(f"pyflakes:     {b:7.2f} s  {lines / b:10,.0f} lines/s")
    print(f"ratio (nantrap speed / pyflakes speed): {b / a:.2f}")


if __name__ == "__main__":
    main()
