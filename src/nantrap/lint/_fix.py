"""Applying text edits and showing them as a unified diff."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from nantrap.findings import Edit

_LINE_START = re.compile(r"\r\n|\r|\n")


def apply_edits(source: str, edits: Iterable[Edit]) -> tuple[str, int]:
    """Apply non-overlapping edits (1-based, end exclusive); returns (text, edits applied).

    Overlapping edits after the first are skipped; a later run applies them.
    """
    starts = [0] + [m.end() for m in _LINE_START.finditer(source)]

    def offset(line: int, col: int) -> int | None:
        if not 0 < line <= len(starts):
            return None
        return starts[line - 1] + col - 1

    spans = []
    for e in edits:
        a, b = offset(e.line, e.col), offset(e.end_line, e.end_col)
        if a is None or b is None or a > b or b > len(source):
            continue
        spans.append((a, b, e.replacement))
    spans.sort()
    chosen = []
    last_end = -1
    for a, b, text in spans:
        if a >= last_end:
            chosen.append((a, b, text))
            last_end = b
    out = source
    for a, b, text in reversed(chosen):
        out = out[:a] + text + out[b:]
    return out, len(chosen)


def unified_diff(path: str, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{path.lstrip('/')}",  # git's a/b prefixes, also for absolute paths
            tofile=f"b/{path.lstrip('/')}",
        )
    )
