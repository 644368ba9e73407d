"""Read a guard run folder (``events.jsonl``, one per rank) into plain data for the renderers.

The reader never raises on bad content: a missing file, an unreadable or corrupt line, or an
unknown record type becomes a line in ``RunLog.problems`` and the rest is still read, so a
report of a crashed run shows everything that was written before the crash.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nantrap.findings import SCHEMA_VERSION, Diagnosis

__all__ = ["EVENTS", "RUN_JSON", "Incident", "RunLog", "event_files", "load_run", "number"]

EVENTS = "events.jsonl"
RUN_JSON = "run.json"
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def number(value: Any) -> float | None:
    """A float from an events.jsonl value (``"nan"``/``"inf"`` strings included); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return _NONFINITE.get(value.strip().lower())
    return None


@dataclass
class Incident:
    """One incident diagnosis, the policy action(s) taken at its step on its rank, and
    what the training loop said about that step (``context`` records: epoch, batch)."""

    diagnosis: Diagnosis
    actions: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    # unlocalized incidents (NT903, loop form) that this one's armed trace explained
    earlier: list[Incident] = field(default_factory=list)

    @property
    def batch(self) -> Any:
        """The batch that went bad: from the loop's context record or the evidence."""
        return self.context.get("batch", self.diagnosis.evidence.get("batch"))

    @property
    def step(self) -> int | None:
        return self.diagnosis.step

    @property
    def first_step(self) -> int | None:
        """The step where this non-finite value was first seen (an earlier, folded one)."""
        steps = [i.step for i in (*self.earlier, self) if i.step is not None]
        return min(steps) if steps else None

    @property
    def rank(self) -> int | None:
        return self.diagnosis.location.rank


@dataclass
class RunLog:
    """Everything one run folder holds, record type by record type, in file order."""

    path: Path
    runs: list[dict[str, Any]] = field(default_factory=list)  # one header per rank
    steps: list[dict[str, Any]] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)
    contexts: list[dict[str, Any]] = field(default_factory=list)  # batch/epoch of a step
    problems: list[str] = field(default_factory=list)  # what could not be read, and where
    meta: dict[str, Any] = field(default_factory=dict)  # run.json of ``nantrap run``
    files: list[Path] = field(default_factory=list)

    @property
    def header(self) -> dict[str, Any]:
        """The run header of the lowest rank (``{}`` when none was written)."""
        if not self.runs:
            return {}
        return min(self.runs, key=lambda r: r.get("rank") or 0)

    @property
    def ranks(self) -> list[int]:
        seen = {r.get("rank") for r in self.runs} | {s.get("rank") for s in self.steps}
        return sorted(r for r in seen if isinstance(r, int))

    @property
    def distributed(self) -> bool:
        """True when more than one rank ran (from the headers or the records)."""
        sizes = [r.get("world_size") for r in self.runs]
        return len(self.ranks) > 1 or any(isinstance(s, int) and s > 1 for s in sizes)

    @property
    def warnings(self) -> list[Diagnosis]:
        return [d for d in self.diagnoses if not d.incident]

    @property
    def status(self) -> str:
        """``ok`` / ``stopped`` / ``error`` from the end records; ``unfinished`` without one."""
        order = ["ok", "stopped", "error"]
        states = [e.get("status", "error") for e in self.ends]
        if not states:
            return "unfinished"
        return max(states, key=lambda s: order.index(s) if s in order else len(order))

    @property
    def last_step(self) -> int | None:
        steps = [e.get("step") for e in self.ends] + [s.get("step") for s in self.steps]
        steps = [s for s in steps if isinstance(s, int)]
        return max(steps) if steps else None

    def incidents(self) -> list[Incident]:
        """Incident diagnoses in step order, each with the actions logged for its step/rank."""
        found = []
        for diag in self.diagnoses:
            if not diag.incident:
                continue
            acts = [
                a
                for a in self.actions
                if a.get("step") == diag.step
                and (diag.location.rank is None or a.get("rank") in (None, diag.location.rank))
            ]
            context = {}
            for rec in self.contexts:
                if rec.get("step") == diag.step and rec.get("rank") == diag.location.rank:
                    context.update(rec)
            found.append(Incident(diag, acts, context))
        found = _fold_superseded(found)
        # per step: the rank(s) where it started first (DDP context), then by rank
        found.sort(
            key=lambda i: (
                i.first_step if i.first_step is not None else -1,
                i.context.get("origin") is False,
                i.rank or 0,
            )
        )
        return found

    def series(self, key: str, rank: int | None = None) -> list[tuple[list[int], list[float]]]:
        """One field of the step records as (steps, values) segments in logging order.

        A new segment starts where the step number goes back (a rollback replays steps), so
        the last segment holds what the run kept and earlier ones what it undid. Non-finite
        values stay nan/inf.
        """
        if rank is None and self.ranks:
            rank = self.ranks[0]
        segments: list[tuple[list[int], list[float]]] = []
        last = None
        for rec in self.steps:
            if rank is not None and rec.get("rank", rank) != rank:
                continue
            value, step = number(rec.get(key)), rec["step"]
            if value is None:
                continue
            if last is None or step <= last:
                segments.append(([], []))
            segments[-1][0].append(step)
            segments[-1][1].append(value)
            last = step
        return segments


def _fold_superseded(incidents: list[Incident]) -> list[Incident]:
    """Fold each unlocalized incident into the later one that names it in its evidence
    (``supersedes``: loop form B traced the next occurrence): the report leads with the
    localized cause. Each reference takes the latest matching incident before it in file
    order on the same rank (a rollback can repeat step numbers)."""
    kept: list[Incident] = []
    for inc in incidents:
        refs = inc.diagnosis.evidence.get("supersedes")
        for ref in refs if isinstance(refs, list) else ():
            if not isinstance(ref, dict):
                continue
            for old in reversed(kept):
                d = old.diagnosis
                if (
                    (d.code, d.step) == (ref.get("code"), ref.get("step"))
                    and old.rank == inc.rank
                    and not old.earlier
                ):
                    kept.remove(old)
                    inc.earlier.append(old)
                    break
        kept.append(inc)
    return kept


def event_files(run_dir: Path) -> list[Path]:
    """``events.jsonl`` plus per-rank files (``events.rank1.jsonl``, ``rank1/events*.jsonl``)."""
    found = [run_dir / EVENTS] if (run_dir / EVENTS).is_file() else []
    found += sorted(p for p in run_dir.glob("events.*.jsonl") if p.is_file())
    found += sorted(p for p in run_dir.glob("rank*/events*.jsonl") if p.is_file())
    return found


def load_run(run_dir: str | Path) -> RunLog:
    """Read every events file of a run folder; problems are collected, never raised."""
    path = Path(run_dir)
    log = RunLog(path=path)
    if not path.is_dir():
        log.problems.append(f"{path}: no such run folder")
        return log
    log.meta = _read_meta(path / RUN_JSON, log.problems)
    log.files = event_files(path)
    if not log.files and log.meta:
        log.problems.append(f"{path}: no {EVENTS}: the run guarded no optimizer (see the notes)")
    elif not log.files:
        log.problems.append(f"{path}: no {EVENTS} in this folder (is it a nantrap run folder?)")
    for file in log.files:
        _read_file(file, log)
    return log


def _read_meta(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name}: unreadable ({exc}); ignored")
        return {}
    return data if isinstance(data, dict) else {}


def _read_file(file: Path, log: RunLog) -> None:
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.problems.append(f"{file}: cannot read ({exc.strerror or exc})")
        return
    rank = _rank_of(file)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{file.name}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            log.problems.append(f"{where}: not a JSON object ({exc.msg}); line skipped")
            continue
        if not isinstance(record, dict):
            log.problems.append(f"{where}: not a JSON object; line skipped")
            continue
        problem = _add(record, log, rank)
        if problem:
            log.problems.append(f"{where}: {problem}; line skipped")


def _add(record: dict[str, Any], log: RunLog, rank: int) -> str | None:
    version = record.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        return f"schema_version {version!r} is newer than this nantrap reads ({SCHEMA_VERSION})"
    record.setdefault("rank", rank)
    kind = record.get("type")
    if kind == "run":
        log.runs.append(record)
    elif kind == "step":
        if not isinstance(record.get("step"), int):
            return "step record without an integer 'step'"
        log.steps.append(record)
    elif kind == "action":
        log.actions.append(record)
    elif kind == "end":
        log.ends.append(record)
    elif kind == "context":
        log.contexts.append(record)
    elif kind == "diagnosis":
        try:
            diag = Diagnosis.from_dict({k: v for k, v in record.items() if k != "type"})
        except (TypeError, ValueError, KeyError) as exc:
            return f"diagnosis record does not parse ({exc})"
        if not isinstance(diag, Diagnosis):
            return "diagnosis record of kind Finding, not Diagnosis"
        if diag.location.rank is None:
            loc = dataclasses.replace(diag.location, rank=record["rank"])
            diag = dataclasses.replace(diag, location=loc)
        log.diagnoses.append(diag)
    else:
        return f"unknown record type {kind!r}"
    return None


def _rank_of(file: Path) -> int:
    """Rank of a per-rank file (``rank2/events.jsonl``, ``events.rank2.jsonl``); else 0."""
    parts = file.name.split(".")
    for part in (file.parent.name, parts[1] if len(parts) == 3 else ""):
        if part.startswith("rank") and part[4:].isdigit():
            return int(part[4:])
    return 0
