"""A guard run as GitHub-flavoured Markdown, for pasting into an issue (no figures)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

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
from nantrap.report.run_log import Incident, RunLog
from nantrap.traps import get_trap

__all__ = ["render_markdown"]


def render_markdown(log: RunLog, *, source_roots: Sequence[Path] = ()) -> str:
    """The summary, each incident and the action log; problems reading the run listed."""
    roots = (*source_roots, log.path, log.path.parent)
    head = log.header
    out = [f"## nantrap run report: {head.get('model') or log.path.name} ({log.status})", ""]
    facts = [
        ("model", head.get("model")),
        ("optimizer", head.get("optimizer")),
        ("policy", head.get("policy")),
        ("ranks", head.get("world_size")),
        ("last step", log.last_step),
        ("incidents", sum(1 + len(i.earlier) for i in log.incidents())),
        ("early warnings", len(log.warnings)),
    ]
    out.append(" · ".join(f"**{k}** {v}" for k, v in facts if v is not None))
    out.append("")
    incidents = log.incidents()
    if incidents:
        first = incidents[0]
        rank = f" (rank {first.rank})" if log.distributed and first.rank is not None else ""
        out += [f"**First incident{rank}:** {first.diagnosis.headline()}", ""]
    bad = sorted({r for i in incidents for r in i.context.get("bad_ranks") or ()})
    if bad and log.distributed:
        out += [f"**Rank(s) that went bad:** {', '.join(map(str, bad))}", ""]
    if log.problems:
        out.append("> **Parts of this run could not be read** (the rest is shown):")
        out += [f"> - `{p}`" for p in log.problems]
        out.append("")
    out += _series_table(log)
    for n, incident in enumerate(log.incidents(), 1):
        out += _incident(n, incident, roots, log.distributed)
    if log.warnings:
        out += ["### Early warnings", ""]
        seen = set()
        for diag in log.warnings:
            key = (diag.code, diag.module, diag.location.rank)
            if key not in seen:
                seen.add(key)
                out.append(f"- {diag.headline()}")
        out.append("")
    if log.actions:
        out += ["### Policy actions", ""]
        for rank in sorted({a.get("rank") or 0 for a in log.actions}):
            mine = [a for a in log.actions if (a.get("rank") or 0) == rank]
            where = f" (rank {rank})" if log.distributed else ""
            out += [f"- step {steps}{where}: {text}" for steps, text in grouped_actions(mine)]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _incident(n: int, incident: Incident, roots: tuple[Path, ...], distributed: bool) -> list[str]:
    diag = incident.diagnosis
    loc = diag.location
    trap = get_trap(diag.code, default=None)
    where = " · ".join(
        x
        for x in (
            f"step {diag.step}" if diag.step is not None else "",
            f"rank {loc.rank}" if distributed and loc.rank is not None else "",
            context_text(incident.context, incident.batch, diag.step) or "",
        )
        if x
    )
    name = f"{diag.code} {trap.name}" if trap else diag.code
    out = [f"### Incident {n}: {where} — `{name}` [{diag.category}]", "", diag.message, ""]
    seen = earlier_text(incident.earlier)
    if seen:
        out += [f"*{seen}.*", ""]
    facts = [
        ("op", (diag.neutral_op and diag.op and f"{diag.neutral_op} ({diag.op})") or diag.op),
        ("module", loc.module),
        ("phase", loc.phase and str(loc.phase)),
        ("source", loc.source()),
    ]
    out += [f"- **{k}**: `{v}`" for k, v in facts if v]
    origin = origin_text(incident.context) if distributed else None
    if origin:
        out.append(f"- **origin**: {origin}")
    context = source_context(loc, roots=roots)
    if context:
        out += ["", "```python"]
        out += [f"{'>' if hit else ' '}{num:>5}  {text}" for num, text, hit in context]
        out.append("```")
    stats, others = split_evidence(diag.evidence)
    if stats:
        out += ["", *_table(STATS_COLUMNS, stats)]
    if others:
        out += ["", *[f"- {k}: {v}" for k, v in others]]
    fix = diag.fix or (trap.fix if trap else None)
    if fix:
        out += ["", f"**Fix:** {fix}"]
    did = [action_text(a) for a in incident.actions] or ([diag.action] if diag.action else [])
    if did:
        out += ["", f"**What the policy did:** {'; '.join(did)}"]
    if trap:
        out += ["", f"See `nantrap explain {trap.code}`."]
    return [*out, ""]


def _series_table(log: RunLog) -> list[str]:
    """Step records around the first incident (or the last ones), as a small table."""
    rank = log.ranks[0] if log.ranks else None
    recs = [s for s in log.steps if rank is None or s.get("rank", rank) == rank]
    if not recs:
        return []
    incidents = log.incidents()
    at = incidents[0].first_step if incidents else None
    hits = [i for i, r in enumerate(recs) if r["step"] == at]
    # in logging order: the steps before the incident and what came after it
    recs = recs[max(0, hits[0] - 5) : hits[0] + 4] if hits else recs[-8:]
    keys = ("step", "loss", "grad_norm", "update_ratio", "lr")
    return [*_table(keys, [[fmt(r.get(k)) for k in keys] for r in recs]), ""]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines
