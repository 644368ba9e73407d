"""A guard run as one self-contained ``report.html``: no script, no network, figures inline.

Sections: summary, what could not be read, timeline (loss, gradient norm, update ratio, LR
with incidents and actions), per-module value ranges, one card per incident (diagnosis, first
bad op, source lines, input statistics, fix, catalog entry, what the policy did), early
warnings, and the action log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from nantrap import __version__
from nantrap.report import plots
from nantrap.report._format import (
    STATS_COLUMNS,
    action_text,
    context_text,
    earlier_text,
    fmt,
    grouped_actions,
    origin_text,
    source_context,
    split_evidence,
)
from nantrap.report._html import facts, page
from nantrap.report._html import table as _table
from nantrap.report.run_log import Incident, RunLog
from nantrap.traps import get_trap

__all__ = ["render_html"]


def render_html(log: RunLog, *, source_roots: Sequence[Path] = ()) -> str:
    """The whole page for one run folder, as a string."""
    roots = (*source_roots, log.path, log.path.parent)
    head = log.header
    title = f"nantrap run report — {head.get('model') or log.path.name}"
    body = [
        f"<h1>{escape(title)} <span class='badge {escape(log.status)}'>"
        f"{escape(log.status)}</span></h1>",
        f"<p class='sub'>{escape(str(log.path.resolve()))}</p>",
        _facts(log),
        _verdict(log),
        _problems(log.problems),
        _notes(log),
        _timeline(log),
        _ranges(log),
        _incidents(log, roots),
        _warnings(log),
        _actions(log),
        f"<footer>nantrap {escape(__version__)} · read "
        f"{escape(', '.join(p.name for p in log.files) or 'no events file')}</footer>",
    ]
    return page(title, body)


def _facts(log: RunLog) -> str:
    head = log.header
    items = [
        ("framework", head.get("framework")),
        ("model", head.get("model")),
        ("optimizer", head.get("optimizer")),
        ("policy", head.get("policy")),
        ("ranks", head.get("world_size") or (len(log.ranks) or None)),
        ("last step", log.last_step),
        ("incidents", sum(1 + len(i.earlier) for i in log.incidents())),
        ("early warnings", len(log.warnings)),
        ("started", head.get("time")),
        ("command", " ".join(map(str, log.meta.get("command") or head.get("argv") or [])) or None),
        ("exit code", log.meta.get("exit_code")),
    ]
    return facts(items)


def _verdict(log: RunLog) -> str:
    incidents = log.incidents()
    lines = []
    if incidents:
        first = incidents[0]
        rank = f" (rank {first.rank})" if log.distributed and first.rank is not None else ""
        lines.append(f"<b>First incident{rank}:</b> {escape(first.diagnosis.headline())}")
        context = context_text(first.context, first.batch, first.step)
        if context:
            lines.append(f"<b>Where in the loop:</b> {escape(context)}")
        ranks = sorted({i.rank for i in incidents if i.rank is not None and _own(i)})
        for inc in incidents:
            ranks = sorted(set(ranks) | set(inc.context.get("bad_ranks") or ()))
        if ranks and log.distributed:
            lines.append(f"<b>Rank(s) that went bad:</b> {escape(', '.join(map(str, ranks)))}")
        done = [action_text(a) for i in incidents for a in i.actions]
        if done:
            lines.append(f"<b>What the guard did:</b> {escape('; '.join(_unique(done)))}")
    elif log.steps:
        lines.append("No NaN/Inf incident in this run.")
    if log.steps or log.ends:
        lines.append(f"<b>Run ended:</b> {escape(log.status)} at step {escape(fmt(log.last_step))}")
    if log.meta.get("error"):
        lines.append(f"<b>The script raised:</b> {escape(str(log.meta['error']))}")
    if not lines:
        return ""
    clean = "" if incidents or log.meta.get("error") else " clean"
    return f"<div class='verdict{clean}'>" + "<br>".join(lines) + "</div>"


def _notes(log: RunLog) -> str:
    notes = [str(n) for n in log.meta.get("notes") or []]
    if not notes:
        return ""
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f"<div class='problems'><b>Notes from nantrap run</b><ul>{items}</ul></div>"


def _problems(problems: Iterable[str]) -> str:
    items = "".join(f"<li>{escape(p)}</li>" for p in problems)
    if not items:
        return ""
    return (
        "<div class='problems' id='problems'><b>Parts of this run could not be read</b>"
        f" (the rest is shown):<ul>{items}</ul></div>"
    )


def _figure(svg: str | None, caption: str, missing: str) -> str:
    if svg is None:
        return f"<p class='sub'>{escape(missing)}</p>"
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _no_plots(what: str) -> str:
    if not plots.HAVE_MATPLOTLIB:
        return "Figures need matplotlib: pip install 'nantrap[report]'."
    return what


def _timeline(log: RunLog) -> str:
    svg = plots.timeline(log)
    caption = (
        "Red lines: incidents (catalog code on top); orange bands: steps undone by a rollback; "
        "dashed: skipped or stopped; ✕: non-finite values; ▲: early warnings."
    )
    return "<h2 id='timeline'>Timeline</h2>" + _figure(
        svg, caption, _no_plots("No step records in this run.")
    )


def _ranges(log: RunLog) -> str:
    svg = plots.ranges_heatmap(log)
    caption = (
        "Per-module output ranges on sampled steps. Top: magnitude of the largest output; "
        "bottom: fraction of outputs saturated at exactly 0 or 1; ✕: non-finite; grey: "
        "not sampled."
    )
    missing = _no_plots(
        "No sampled value ranges in this run (the guard samples them every "
        "`every` steps when early warnings are on)."
    )
    return "<h2 id='ranges'>Layer value ranges</h2>" + _figure(svg, caption, missing)


_MAX_CARDS = 6


def _incidents(log: RunLog, roots: tuple[Path, ...]) -> str:
    """A card for the first incident of each kind (code, module, op, rank); a table of all."""
    incidents = log.incidents()
    if not incidents:
        return ""
    firsts: dict[tuple, Incident] = {}
    for inc in incidents:
        d = inc.diagnosis
        firsts.setdefault((d.code, d.module, d.op, inc.rank), inc)
    shown = list(firsts.values())[:_MAX_CARDS]
    number = {id(inc): n for n, inc in enumerate(incidents, 1)}
    cards = "".join(_card(number[id(inc)], inc, roots, log.distributed) for inc in shown)
    out = f"<h2 id='incidents'>Incidents ({len(incidents)})</h2>{cards}"
    if len(incidents) > len(shown):
        rows = [
            [
                str(n),
                fmt(inc.step),
                fmt(inc.rank),
                inc.diagnosis.code,
                inc.diagnosis.module or "—",
                "; ".join(action_text(a) for a in inc.actions) or (inc.diagnosis.action or "—"),
            ]
            for n, inc in enumerate(incidents, 1)
        ]
        out += (
            f"<details><summary>All {len(incidents)} incidents (a card above for the first "
            "of each kind)</summary>"
            + _table(("#", "step", "rank", "code", "module", "action"), rows, left=(4, 5))
            + "</details>"
        )
    return out


def _card(n: int, incident: Incident, roots: tuple[Path, ...], distributed: bool) -> str:
    diag = incident.diagnosis
    loc = diag.location
    where = [f"step {diag.step}" if diag.step is not None else None]
    where.append(f"rank {loc.rank}" if distributed and loc.rank is not None else None)
    where.append(context_text(incident.context, incident.batch, diag.step))
    trap = get_trap(diag.code, default=None)
    name = f"{diag.code} {trap.name}" if trap else diag.code
    parts = [
        f"<div class='card' id='incident-{n}'><h3>Incident {n} · "
        f"{escape(' · '.join(w for w in where if w))} — <span class='code'>{escape(name)}"
        f"</span> [{escape(str(diag.category))}]</h3>",
        f"<p class='msg'>{escape(diag.message)}</p>",
    ]
    seen = earlier_text(incident.earlier)
    if seen:
        parts.append(f"<p class='sub'>{escape(seen)}.</p>")
    facts = [
        ("op", _op(diag.neutral_op, diag.op)),
        ("module", loc.module),
        ("phase", str(loc.phase) if loc.phase else None),
        ("source", loc.source()),
        ("graph node", loc.node),
    ]
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts if v)
    if rows:
        parts.append(f"<dl class='kv'>{rows}</dl>")
    context = source_context(loc, roots=roots)
    if context:
        lines = "".join(
            f"<span class='{'hit' if hit else ''}'><span class='n'>{num:>5} </span>"
            f"{escape(text)}</span>"
            for num, text, hit in context
        )
        parts.append(f"<pre class='src'>{lines}</pre>")
    stats, others = split_evidence(diag.evidence)
    if stats:
        parts.append("<b>Tensor statistics</b>" + _table(STATS_COLUMNS, stats))
    if others:
        kv = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in others)
        parts.append(f"<b>Evidence</b><dl class='kv'>{kv}</dl>")
    fix = diag.fix or (trap.fix if trap else None)
    if fix:
        parts.append(f"<div class='fix'><b>Fix:</b> {escape(fix)}</div>")
    origin = origin_text(incident.context) if distributed else None
    if origin:
        parts.append(f"<p class='sub'><b>Origin:</b> {escape(origin)}</p>")
    did = [action_text(a) for a in incident.actions]
    if not did and diag.action:
        did = [diag.action]
    if did:
        parts.append(f"<div class='did'><b>What the policy did:</b> {escape('; '.join(did))}</div>")
    if trap:
        parts.append(
            f"<details><summary>nantrap explain {escape(trap.code)}</summary>"
            f"<pre>{escape(trap.explain())}</pre></details>"
        )
    parts.append("</div>")
    return "".join(parts)


def _warnings(log: RunLog) -> str:
    groups: dict[tuple, list] = {}
    for diag in log.warnings:
        groups.setdefault((diag.code, diag.module, diag.location.rank), []).append(diag)
    if not groups:
        return ""
    rows = []
    for (code, module, rank), diags in groups.items():
        steps = [d.step for d in diags if d.step is not None]
        span = f"{min(steps)}–{max(steps)}" if steps else "—"
        rows.append(
            [
                code,
                module or "—",
                "—" if rank is None else str(rank),
                span,
                str(len(diags)),
                diags[-1].message,
            ]
        )
    table = _table(("code", "module", "rank", "steps", "times", "last message"), rows, left=(1, 5))
    return f"<h2 id='warnings'>Early warnings ({len(log.warnings)})</h2>{table}"


def _actions(log: RunLog) -> str:
    if not log.actions:
        return ""
    rank_order = sorted(log.actions, key=lambda a: a.get("rank") or 0)
    rows = []
    for rank in sorted({a.get("rank") or 0 for a in rank_order}):
        mine = [a for a in rank_order if (a.get("rank") or 0) == rank]
        for steps, text in grouped_actions(mine):
            rows.append([steps, str(rank), text] if log.distributed else [steps, text])
    header = ("steps", "rank", "action") if log.distributed else ("steps", "action")
    return "<h2 id='actions'>Policy actions</h2>" + _table(header, rows, left=(len(header) - 1,))


def _own(incident: Incident) -> bool:
    """Whether this rank's incident started on it, not only followed another rank's (the
    verdict is all-reduced): from the DDP context record, else a diagnosis of its own."""
    if "origin" in incident.context:
        return bool(incident.context["origin"])
    return incident.diagnosis.code != "NT903"


def _op(neutral: str | None, op: str | None) -> str | None:
    if neutral and op and neutral != op:
        return f"{neutral} ({op})"
    return neutral or op


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
