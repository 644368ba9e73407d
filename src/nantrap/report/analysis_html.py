"""An analysis (``nantrap analyze``) as one self-contained HTML page, in the run report's style.

Sections: header facts (model, frontend, input ranges, dtypes, counts), verdict, one card per
hazard (catalog code linking to its explanation, severity, node/module, source lines, the
provenance path, evidence intervals, the fix and the precondition that makes the op safe),
the coverage note (NT902), the per-layer table (flagged rows highlighted) and the catalog
entries the cards cite. No script, no network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from nantrap import __version__
from nantrap.errors import ConfigError
from nantrap.findings import Finding, Severity
from nantrap.report._format import fmt, source_context
from nantrap.report._html import facts, page, table
from nantrap.traps import get_trap

__all__ = ["render_analysis_html", "split_precondition"]

_CSS = """
.card.sev-warning{border-left-color:var(--warn)}.card.sev-info{border-left-color:var(--mute)}
.card.sev-warning .code{color:#b26a00}.card.sev-info .code{color:var(--mute)}
a.code{text-decoration:none}a.code:hover{text-decoration:underline}
.badge.warning{background:var(--warn);color:var(--ink)}.badge.info{background:var(--mute)}
.path{font-family:ui-monospace,monospace;font-size:13px;background:#f3f4f6;border-radius:4px;
padding:4px 10px;margin:6px 0;word-break:break-word}
.pre{background:#e3f2fd;border-radius:4px;padding:8px 12px;margin:8px 0}
.verdict.warn{border-color:var(--warn)}#warnings{margin:16px 0}
#warnings li{font-family:inherit;font-size:14px}
.layers th{text-align:left}tr.flag td{background:#fff8e1}tr.hazard td{background:#ffebee}
tr:target td,.card:target{outline:2px solid var(--roll)}
.explain{background:#fff;border:1px solid var(--line);border-radius:6px;padding:10px 14px;
margin:10px 0}.explain pre{white-space:pre-wrap}
"""

# How ``nantrap.analyze`` appends the precondition (RANUM's safe input/weight bound) to a fix.
_PRECONDITION_STARTS = (
    " Safe (for these weights) while",
    " For the given input ranges it is safe",
    " The search found no input range or weight bound",
)
_SHOWN_ELSEWHERE = {"path", "safe_inputs", "safe_weight_bound", "parameters"}
_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


def split_precondition(fix: str) -> tuple[str, str | None]:
    """``(fix, precondition)``: the analysis's fix text without, and with only, the note on
    the input range / weight bound that makes the op safe (None when there is none)."""
    cut = [fix.find(s) for s in _PRECONDITION_STARTS if s in fix]
    if not cut:
        return fix, None
    at = min(cut)
    return fix[:at].rstrip(), fix[at:].strip()


def render_analysis_html(
    analysis: Any, *, table_rows: str = "full", source_roots: Sequence[Path] = ()
) -> str:
    """The whole page for one :class:`~nantrap.analyze.Analysis`, as a string.

    ``table_rows``: the per-layer table with every row (``full``), only flagged rows
    (``flagged``), or none (``none``).
    """
    if table_rows not in ("full", "flagged", "none"):
        raise ConfigError(f"table {table_rows!r}: choose full, flagged or none")
    graph = analysis.graph
    title = f"nantrap analyze — {graph.name}"
    shown = sorted(
        (f for f in analysis.findings if f.code != "NT902"), key=lambda f: _RANK[f.severity]
    )
    rows = {r.node: n for n, r in enumerate(analysis.layers, 1)}
    if table_rows != "full":
        keep = {r.node for r in analysis.layers if r.flags} if table_rows == "flagged" else set()
        rows = {node: n for node, n in rows.items() if node in keep}
    roots = (*source_roots, Path.cwd())
    body = [
        f"<h1>{escape(title)} {_badge(analysis)}</h1>",
        f"<p class='sub'>{escape(graph.framework)} graph · {len(graph.nodes)} nodes · "
        f"analyzed in {analysis.seconds:.2f} s</p>",
        _facts(analysis),
        _warnings(analysis.warnings),
        _verdict(analysis),
        _cards(shown, rows, roots),
        _coverage([f for f in analysis.findings if f.code == "NT902"]),
        _layers(analysis, rows),
        _catalog(shown + [f for f in analysis.findings if f.code == "NT902"]),
        f"<footer>nantrap {escape(__version__)} · nantrap analyze (the same findings as "
        "--format json)</footer>",
    ]
    return page(title, body, css=_CSS)


def _counts(findings: Iterable[Finding]) -> dict[Severity, int]:
    found = list(findings)
    return {s: sum(f.severity == s for f in found) for s in Severity}


_NOUN = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _badge(analysis: Any) -> str:
    counts = _counts(analysis.findings)
    for sev in (Severity.ERROR, Severity.WARNING):
        if counts[sev]:
            return f"<span class='badge {sev}'>{_plural(counts[sev], _NOUN[sev])}</span>"
    return "<span class='badge ok'>clean</span>"


def _interval(value: Any) -> str:
    """``[lo, hi]`` from a two-item list (``"-inf"`` strings included), else the value."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"[{fmt(value[0])}, {fmt(value[1])}]"
    return fmt(value)


def _facts(analysis: Any) -> str:
    graph = analysis.graph
    counts = _counts(analysis.findings)
    dtypes = sorted({r.dtype for r in analysis.layers if r.dtype})
    items: list[tuple[str, object]] = [
        ("model", graph.name),
        ("frontend", graph.framework),
        ("graph nodes", len(graph.nodes)),
        ("layers in the table", len(analysis.layers)),
    ]
    for name, iv in analysis.input_ranges.items():
        items.append((f"input {name}", f"[{fmt(iv.lo)}, {fmt(iv.hi)}]"))
    items += [
        ("dtype", ", ".join(dtypes) or None),
        ("errors", counts[Severity.ERROR]),
        ("warnings", counts[Severity.WARNING]),
        ("notes", counts[Severity.INFO]),
        ("flagged layers", sum(bool(r.flags) for r in analysis.layers)),
    ]
    return facts(items)


def _warnings(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
    return f"<div class='problems' id='warnings'><b>Warnings</b><ul>{items}</ul></div>"


def _verdict(analysis: Any) -> str:
    problems = [f for f in analysis.findings if f.severity != Severity.INFO]
    if not problems:
        return (
            "<div class='verdict clean'>No hazard found: for these input ranges every op "
            "stays in its domain and within the dtype's range.</div>"
        )
    first = min(problems, key=lambda f: _RANK[f.severity])
    trap = get_trap(first.code, default=None)
    name = f"{first.code} {trap.name}" if trap else first.code
    loc = first.location
    where = " · ".join(w for w in (loc.module, loc.node, _short(loc.source())) if w)
    path = first.evidence.get("path")
    lines = [f"<b>First {escape(str(first.severity))}:</b> {escape(name)} at {escape(where)}"]
    if path:
        lines.append(f"<b>Path:</b> {escape(' ← '.join(map(str, path)))}")
    fix, _ = split_precondition(first.fix or "")
    if fix:
        lines.append(f"<b>Fix:</b> {escape(fix)}")
    tone = "" if first.severity == Severity.ERROR else " warn"
    return f"<div class='verdict{tone}'>" + "<br>".join(lines) + "</div>"


def _short(source: str | None) -> str | None:
    """``models.py:144`` from a full ``/path/to/models.py:144``."""
    return Path(source).name if source else None


def _cards(findings: list[Finding], rows: Mapping[str, int], roots: tuple[Path, ...]) -> str:
    if not findings:
        return ""
    counts = _counts(findings)
    head = ", ".join(_plural(n, _NOUN[s]) for s, n in counts.items() if n)
    cards = "".join(_card(n, f, rows, roots) for n, f in enumerate(findings, 1))
    return f"<h2 id='hazards'>Hazards ({escape(head)})</h2>{cards}"


def _card(n: int, finding: Finding, rows: Mapping[str, int], roots: tuple[Path, ...]) -> str:
    loc = finding.location
    trap = get_trap(finding.code, default=None)
    name = f"{finding.code} {trap.name}" if trap else finding.code
    sev = str(finding.severity)
    parts = [
        f"<div class='card sev-{sev}' id='finding-{n}'><h3>"
        f"<a class='code' href='#trap-{escape(finding.code)}'>{escape(name)}</a> "
        f"<span class='badge {sev}'>{sev}</span> [{escape(str(finding.category))}]</h3>",
    ]
    path = finding.evidence.get("path")
    message = finding.message
    if path:  # shown on its own line below
        message = message.replace(f"; path {' ← '.join(map(str, path))}", "")
    parts.append(f"<p class='msg'>{escape(message)}</p>")
    if path:
        parts.append(f"<p class='path'>{escape(' ← '.join(map(str, path)))}</p>")
    node = loc.node
    if node in rows:
        node_html = f"<a href='#layer-{rows[node]}'>{escape(node)}</a>"
    else:
        node_html = escape(node) if node else None
    op = loc.neutral_op
    if op and loc.op and loc.op != op:
        op = f"{op} ({loc.op})"
    facts_ = [
        ("op", escape(op or loc.op or "") or None),
        ("node", node_html),
        ("module", escape(loc.module) if loc.module else None),
        ("phase", escape(str(loc.phase)) if loc.phase else None),
        ("source", escape(loc.source()) if loc.source() else None),
        ("reaches", escape(", ".join(finding.evidence.get("parameters") or ())) or None),
    ]
    kv = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in facts_ if v)
    if kv:
        parts.append(f"<dl class='kv'>{kv}</dl>")
    context = source_context(loc, roots=roots)
    if context:
        lines = "".join(
            f"<span class='{'hit' if hit else ''}'><span class='n'>{num:>5} </span>"
            f"{escape(text)}</span>"
            for num, text, hit in context
        )
        parts.append(f"<pre class='src'>{lines}</pre>")
    evidence = _evidence(finding.evidence)
    if evidence:
        kv = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in evidence)
        parts.append(f"<b>Evidence</b><dl class='kv'>{kv}</dl>")
    fix, precondition = split_precondition(finding.fix or (trap.fix if trap else ""))
    if fix:
        parts.append(f"<div class='fix'><b>Fix:</b> {escape(fix)}</div>")
    if precondition:
        parts.append(f"<div class='pre'><b>Precondition:</b> {escape(precondition)}</div>")
    parts.append("</div>")
    return "".join(parts)


def _evidence(evidence: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Evidence as (key, text): intervals as ``[lo, hi]``, the rest as read."""
    out = []
    has_range = "input_range" in evidence
    for key, value in evidence.items():
        if key in _SHOWN_ELSEWHERE or (has_range and key in ("input_lo", "input_hi")):
            continue
        if isinstance(value, Mapping):
            text = ", ".join(f"{k} in {_interval(v)}" for k, v in value.items())
        elif key.endswith("_range"):
            text = _interval(value)
        elif isinstance(value, (list, tuple)):
            text = ", ".join(fmt(v) for v in value)
        else:
            text = fmt(value)
        out.append((key.replace("_", " "), text))
    return out


def _coverage(notes: list[Finding]) -> str:
    if not notes:
        return ""
    items = []
    for f in notes:
        nodes = f.evidence.get("nodes") or ()
        items.append(
            f"<p><a class='code' href='#trap-{escape(f.code)}'>{escape(f.code)}</a> "
            f"{escape(f.message)}</p>"
            + (f"<p class='sub'>nodes: {escape(', '.join(map(str, nodes)))}</p>" if nodes else "")
            + (f"<p class='sub'>{escape(f.fix)}</p>" if f.fix else "")
        )
    return (
        "<h2 id='coverage'>Coverage</h2><div class='problems' id='unsupported'>"
        + "".join(items)
        + "</div>"
    )


def _layers(analysis: Any, rows: Mapping[str, int]) -> str:
    layers = [r for r in analysis.layers if r.node in rows]
    if not layers:
        return ""
    bad = {f.location.node for f in analysis.findings if f.severity == Severity.ERROR}
    cells, classes = [], []
    for r in layers:
        cells.append(
            [
                r.module or "—",
                r.node,
                r.op,
                f"[{fmt(r.lo)}, {fmt(r.hi)}]",
                r.dtype or "—",
                ", ".join(r.flags),
                _short(r.source) or "",
            ]
        )
        hazard = r.node in bad or "nan/inf" in r.flags
        classes.append("hazard" if hazard else "flag" if r.flags else "")
    html = table(
        ("module", "node", "op", "output range", "dtype", "flags", "source"),
        cells,
        left=(1, 2, 5, 6),
        row_classes=classes,
        row_ids=[f"layer-{rows[r.node]}" for r in layers],
    )
    caption = (
        "Sound output interval of every op that depends on a model input. "
        "Red: an op whose output can be NaN/Inf; yellow: saturated or unbounded outputs."
    )
    return (
        f"<h2 id='layers'>Per-layer ranges ({len(layers)})</h2>"
        f"<p class='sub'>{escape(caption)}</p><div class='layers'>{html}</div>"
    )


def _catalog(findings: Iterable[Finding]) -> str:
    codes = list(dict.fromkeys(f.code for f in findings))
    entries = []
    for code in codes:
        trap = get_trap(code, default=None)
        if trap is None:
            continue
        entries.append(
            f"<div class='explain' id='trap-{escape(code)}'><h3>{escape(code)} "
            f"{escape(trap.name)}</h3><p class='msg'>{escape(trap.title)}</p>"
            f"<pre>{escape(trap.explain())}</pre></div>"
        )
    if not entries:
        return ""
    return "<h2 id='catalog'>Catalog entries (nantrap explain)</h2>" + "".join(entries)
