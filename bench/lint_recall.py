"""Recall at the exact line on a corpus of buggy programs (``bench/lint_corpus``).

Each corpus file marks the lines that hold a numerical bug with ``# BUG``. Recall counts
marked lines with at least one finding; findings on unmarked lines are reported as
extra (false positives, or true ones the corpus did not mark).

    python bench/lint_recall.py [-v]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nantrap.lint import LintConfig, lint_file  # noqa: E402

CORPUS = Path(__file__).parent / "lint_corpus"


def main() -> None:
    verbose = "-v" in sys.argv
    marked = hit = extra = lines = 0
    for path in sorted(CORPUS.glob("*.py")):
        text = path.read_text().splitlines()
        lines += len(text)
        bugs = {i for i, line in enumerate(text, 1) if line.rstrip().endswith("# BUG")}
        found: dict[int, list[str]] = {}
        for f in lint_file(path, LintConfig()):
            found.setdefault(f.location.line, []).append(f.code)
        marked += len(bugs)
        hit += len(bugs & set(found))
        extra += len(set(found) - bugs)
        if verbose:
            for n in sorted(bugs | set(found)):
                tag = "hit " if n in bugs and n in found else ("MISS" if n in bugs else "XTRA")
                codes = ",".join(found.get(n, []))
                print(f"{tag} {path.name}:{n}: {codes}  {text[n - 1].strip()[:70]}")
    print(f"corpus: {len(list(CORPUS.glob('*.py')))} files, {lines} lines, {marked} marked bugs")
    print(f"recall at the exact line: {hit}/{marked} = {hit / max(marked, 1):.0%}")
    print(f"findings on unmarked lines: {extra}")


if __name__ == "__main__":
    main()
