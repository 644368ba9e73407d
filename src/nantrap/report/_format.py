"""Formatting shared by the run renderers (HTML, Markdown): numbers, actions, evidence, source."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nantrap.findings import Location
from nantrap.report.run_log import number

__all__ = [
    "STATS_COLUMNS",
    "action_text",
    "context_text",
    "earlier_text",
    "fmt",
    "grouped_actions",
    "origin_text",
    "source_context",
    "split_evidence",
    "stats_row",
]

STATS_COLUMNS = ("tensor", "dtype[shape]", "min", "max", "zeros", "negative", "NaN", "Inf")
_STATS_KEYS = {"numel", "dtype"}


# context fields that are the guard's own or shown elsewhere (DDP origin)
_CONTEXT_SHOWN_ELSEWHERE = {
    "type",
    "schema_version",
    "step",
    "rank",
    "source",
    "bad_ranks",
    "origin",
}


def context_text(context: Mapping[str, Any], batch: Any = None, step: Any = None) -> str | None:
    """The training loop's context of an incident (``guard.annotate``) as
    ``epoch 2, batch 17, micro batch 1``: epoch and batch first. ``batch`` (e.g. from the
    evidence) stands in when the context has none and it says more than the ``step``."""
    fields = {k: v for k, v in context.items() if k not in _CONTEXT_SHOWN_ELSEWHERE}
    if batch is not None and batch != step:
        fields.setdefault("batch", batch)
    order = sorted(fields, key=lambda k: (k != "epoch", k != "batch"))
    text = ", ".join(
        f"{k.replace('_', ' ')} {fmt(fields[k])}" for k in order if fields[k] is not None
    )
    return text or None


def earlier_text(earlier: list[Any]) -> str | None:
    """``First seen at step 2 (NT903, not localized: ...; skipped the update)`` for the
    unlocalized incidents folded into a localized one (``Incident.earlier``)."""
    if not earlier:
        return None
    parts = []
    for inc in earlier:
        d = inc.diagnosis
        reason = d.evidence.get("reason") or "not localized"
        did = "; ".join(action_text(a) for a in inc.actions) or d.action
        parts.append(
            f"step {fmt(d.step)} ({d.code}, not localized: {reason}" + (f"; {did})" if did else ")")
        )
    return "First seen at " + ", then at ".join(parts)


def fmt(value: Any) -> str:
    """A number as people read it (4 significant digits); other values as text."""
    num = number(value)
    if num is None:
        return "—" if value is None else str(value)
    if math.isnan(num):
        return "NaN"
    if math.isinf(num):
        return "Inf" if num > 0 else "-Inf"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{num:.4g}"


def action_text(action: Mapping[str, Any]) -> str:
    """``rolled back to step 30; lr 0.5 → 0.25 (retry 1)`` from an action record."""
    kind = str(action.get("action", "?"))
    text = {
        "skip": "skipped the update (gradients dropped)",
        "rollback": "rolled back",
        "stop": "stopped the run",
        "raise": "raised NanTrapError",
        "warn": "warned and let the update through",
    }.get(kind, kind)
    if kind == "rollback" and action.get("to_step") is not None:
        text += f" to step {action['to_step']}"
    before, after = action.get("lr_before"), action.get("lr_after")
    if before is not None and after is not None and before != after:
        text += f"; lr {fmt(before)} → {fmt(after)}"
    if action.get("retries"):
        text += f" (retry {action['retries']})"
    if action.get("detail"):
        text += f" — {action['detail']}"
    return text


def grouped_actions(actions: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(steps, text) with runs of the same action on consecutive steps merged:
    ``("4–47", "warned and let the update through (44×)")``."""
    out: list[tuple[str, str]] = []
    run: list[Mapping[str, Any]] = []

    def flush() -> None:
        if not run:
            return
        first, last = run[0].get("step"), run[-1].get("step")
        steps = fmt(first) if len(run) == 1 else f"{fmt(first)}–{fmt(last)}"
        text = action_text(run[0]) + (f" ({len(run)}×)" if len(run) > 1 else "")
        out.append((steps, text))

    for action in actions:
        prev = run[-1] if run else None
        same = (
            prev is not None
            and action_text(action) == action_text(prev)
            and isinstance(action.get("step"), int)
            and isinstance(prev.get("step"), int)
            and action["step"] - prev["step"] == 1
        )
        if not same:
            flush()
            run = []
        run.append(action)
    flush()
    return out


def origin_text(context: Mapping[str, Any]) -> str | None:
    """Where a multi-process incident started, from the DDP context record (or None)."""
    bad = context.get("bad_ranks")
    if bad is None:
        return None
    if context.get("origin"):
        return "this rank's own gradients were non-finite before the all-reduce"
    ranks = ", ".join(map(str, bad)) or "none seen"
    return f"this rank followed the all-reduced verdict (bad rank(s): {ranks})"


def _is_stats(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) >= _STATS_KEYS


def stats_row(name: str, stats: Mapping[str, Any]) -> list[str]:
    """One row of STATS_COLUMNS from a TensorStats dict."""
    shape = ",".join(str(s) for s in stats.get("shape") or ())
    return [
        name,
        f"{stats.get('dtype', '?')}[{shape}]",
        fmt(stats.get("min")),
        fmt(stats.get("max")),
        fmt(stats.get("zeros", 0)),
        fmt(stats.get("negatives", 0)),
        fmt(stats.get("nan", 0)),
        fmt(stats.get("inf", 0)),
    ]


def split_evidence(evidence: Mapping[str, Any]) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Evidence as (tensor-statistics rows, other key/value pairs), walking lists and dicts."""
    rows: list[list[str]] = []
    facts: list[tuple[str, str]] = []

    def walk(name: str, value: Any) -> None:
        if _is_stats(value):
            rows.append(stats_row(name, value))
        elif isinstance(value, Mapping):
            for key, sub in value.items():
                walk(f"{name}.{key}" if name else str(key), sub)
        elif isinstance(value, (list, tuple)) and value and all(_is_stats(v) for v in value):
            for i, sub in enumerate(value):
                walk(f"{name}[{i}]", sub)
        elif isinstance(value, (list, tuple)):
            facts.append((name, ", ".join(fmt(v) for v in value)))
        else:
            facts.append((name, fmt(value)))

    walk("", evidence)
    return rows, facts


def source_context(
    location: Location, *, roots: tuple[Path, ...] = (), around: int = 3
) -> list[tuple[int, str, bool]]:
    """(line number, text, is the finding's line) around ``location``; from the file if it
    can be read (tried as given, then under each of ``roots``), else its ``source_line``."""
    if location.line is None:
        return []
    if location.path:
        candidates = [Path(location.path)] + [root / location.path for root in roots]
        for candidate in candidates:
            try:
                lines = candidate.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            if 1 <= location.line <= len(lines):
                lo = max(1, location.line - around)
                hi = min(len(lines), location.line + around)
                return [(n, lines[n - 1], n == location.line) for n in range(lo, hi + 1)]
    if location.source_line:
        return [(location.line, location.source_line, True)]
    return []
