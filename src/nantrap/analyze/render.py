"""Text rendering of an :class:`~nantrap.analyze.Analysis` (the CLI prints it)."""

from __future__ import annotations

import math

from nantrap.findings import Severity

__all__ = ["render_text"]


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
