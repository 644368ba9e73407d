"""Rendering of an :class:`~nantrap.analyze.Analysis`: text (the CLI prints it) and a
self-contained HTML page in the run report's style (:func:`render_html`)."""

from __future__ import annotations

import math
from pathlib import Path

from nantrap.findings import Severity
from nantrap.report.analysis_html import render_analysis_html

__all__ = ["render_html", "render_text", "write_html"]


def _num(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    return f"{x:.4g}"


def render_text(analysis, *, table: str = "full") -> str:
    """The per-layer table (``full``, ``flagged`` rows only, or ``none``), then findings."""
    g = analysis.graph
    lines = [
        f"nantrap analyze: {g.name} ({g.framework}, {len(g.nodes)} nodes, {analysis.seconds:.2f} s)"
    ]
    for name, iv in analysis.input_ranges.items():
        lines.append(f"  input {name}: [{_num(iv.lo)}, {_num(iv.hi)}]")
    rows = analysis.layers if table == "full" else [r for r in analysis.layers if r.flags]
    if table != "none" and rows:
        head = ("layer", "op", "range", "dtype", "flags")
        body = [
            (
                r.module or r.node if (r.module or "") else r.node,
                r.op,
                f"[{_num(r.lo)}, {_num(r.hi)}]",
                r.dtype or "",
                ", ".join(r.flags),
            )
            for r in rows
        ]
        widths = [min(44, max(len(h), *(len(b[i]) for b in body))) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines.append("")
        lines.append(fmt.format(*head).rstrip())
        lines.append(fmt.format(*("-" * w for w in widths)).rstrip())
        lines.extend(fmt.format(*(c[:44] for c in b)).rstrip() for b in body)
    if analysis.findings:
        lines.append("")
    for f in analysis.findings:
        loc = f.location
        where = loc.source() or loc.node
        lines.append(f"{f.code} [{f.severity}] {where}: {f.message}")
        if f.fix and f.severity != Severity.INFO:
            lines.append(f"    fix: {f.fix}")
    counts = {s: sum(f.severity == s for f in analysis.findings) for s in Severity}
    lines.append("")
    lines.append(
        f"{counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} warning(s), "
        f"{counts[Severity.INFO]} note(s)"
    )
    return "\n".join(lines)


def render_html(analysis, *, table: str = "full") -> str:
    """The analysis as one self-contained HTML page (no script, no network): header facts,
    one card per hazard, the coverage note, the per-layer table (``full``/``flagged``/``none``)
    and the catalog entries the cards link to."""
    return render_analysis_html(analysis, table_rows=table)


def write_html(analysis, path: str | Path, *, table: str = "full") -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8); returns the path."""
    out = Path(path)
    out.write_text(render_html(analysis, table=table), encoding="utf-8")
    return out
