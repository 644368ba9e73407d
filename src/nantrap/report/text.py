"""Plain-text rendering of a Report, ruff style: ``path:line:col: CODE message``.

Notebook findings read ``nb.ipynb:cell 3:2:5: NT101 ...`` (cell-relative lines).
"""

from __future__ import annotations

from nantrap.findings import Finding, Report

__all__ = ["location", "render"]


def location(f: Finding) -> str:
    """``path:line:col`` (``path:cell N:line:col`` for a notebook cell)."""
    loc = f.location
    parts = [loc.path or "-"]
    cell = f.evidence.get("cell")
    if cell:
        parts.append(f"cell {cell}")
    if loc.line is not None:
        parts.append(str(loc.line))
        if loc.col is not None:
            parts.append(str(loc.col))
    return ":".join(parts)


def render(report: Report, *, show_fix: bool = True, summary: bool = True) -> str:
    """One line per finding plus an indented ``fix:`` line, then a summary line."""
    lines = []
    for f in report.findings:
        mark = " [*]" if f.fix_safe and f.edits else ""
        lines.append(f"{location(f)}: {f.code}{mark} {f.message}")
        if show_fix and f.fix:
            lines.append(f"  fix: {f.fix}")
    if summary:
        n = len(report.findings)
        if n == 0:
            lines.append("All checks passed!")
        else:
            lines.append(f"Found {n} finding{'s' if n != 1 else ''}.")
            fixable = sum(1 for f in report.findings if f.fix_safe and f.edits)
            if fixable:
                lines.append(f"[*] {fixable} fixable with the `--fix` option.")
    return "\n".join(lines) + "\n"
