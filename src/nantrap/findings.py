"""The one data model every engine returns: Finding (lint, analyze) and Diagnosis (guard).

Everything here is plain, immutable data that round-trips through JSON
(``to_dict`` / ``from_dict``); rendering lives in ``nantrap.report``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "Category",
    "Diagnosis",
    "Edit",
    "Finding",
    "Location",
    "Phase",
    "Report",
    "Severity",
]

SCHEMA_VERSION = 1


class Severity(str, Enum):
    ERROR = "error"  # produces NaN/Inf or a wrong result
    WARNING = "warning"  # can produce it; or a silent trap (fake loss, saturation)
    INFO = "info"  # context, coverage notes

    def __str__(self) -> str:
        return self.value


class Category(str, Enum):
    """What kind of numerical failure a finding is; every trap has exactly one."""

    DOMAIN = "domain"  # an op got an input outside its domain (log(0), sqrt(-1), x/0)
    OVERFLOW = "overflow"  # a result passed the dtype's max (exp, matmul, sum)
    DIVERGENCE = "divergence"  # the optimizer blew the weights up (learning rate)
    BAD_DATA = "bad-data"  # non-finite inputs/targets, targets out of the loss's range
    PRECISION = "precision"  # fp16/bf16 range or an epsilon lost in the dtype
    SATURATION = "saturation"  # sigmoid/tanh/softmax outputs at exactly 0 or 1
    CLIP_TRAP = "clip-trap"  # a clip that blocks the gradient: a fake loss
    COVERAGE = "coverage"  # the engine could not look at something (parse error, op)

    def __str__(self) -> str:
        return self.value


class Phase(str, Enum):
    """Where in a training step a runtime finding happened."""

    DATA = "data"
    FORWARD = "forward"
    BACKWARD = "backward"
    UPDATE = "update"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Location:
    """Where a finding is: a source span, a graph node, or an op in a training step."""

    path: str | None = None
    line: int | None = None
    col: int | None = None  # 1-based, like ruff
    end_line: int | None = None
    end_col: int | None = None
    source_line: str | None = None  # the text of ``line``, stripped
    module: str | None = None  # ``model.head.fc`` or a Keras layer name
    node: str | None = None  # graph node name (analyze)
    op: str | None = None  # framework op (``aten.log.default``, ``Log``)
    neutral_op: str | None = None  # name in nantrap.ops (``log``)
    phase: Phase | None = None
    step: int | None = None
    rank: int | None = None

    def source(self) -> str | None:
        """``file:line`` (or ``file:line:col``) if known."""
        if self.path is None:
            return None
        text = self.path
        if self.line is not None:
            text += f":{self.line}"
            if self.col is not None:
                text += f":{self.col}"
        return text


@dataclass(frozen=True)
class Edit:
    """Replace the text between two 1-based (line, col) positions; col is 1-based."""

    line: int
    col: int
    end_line: int
    end_col: int
    replacement: str


@dataclass(frozen=True)
class Finding:
    """One thing an engine found. ``code`` names its entry in the trap catalog."""

    code: str
    message: str  # the problem, with evidence (numbers, not adjectives)
    location: Location = field(default_factory=Location)
    severity: Severity = Severity.WARNING
    category: Category | None = None  # defaults to the trap's category
    evidence: Mapping[str, Any] = field(default_factory=dict)
    fix: str | None = None  # the remedy, in words
    edits: tuple[Edit, ...] = ()  # a mechanical rewrite, when one exists
    fix_safe: bool = False  # True: the edits preserve semantics (applied by --fix)
    engine: str = "lint"  # lint | analyze | guard

    def __post_init__(self) -> None:
        if self.category is None:
            from nantrap.traps import get_trap

            trap = get_trap(self.code, default=None)
            if trap is not None:
                object.__setattr__(self, "category", trap.category)
        object.__setattr__(self, "evidence", dict(self.evidence))

    def to_dict(self) -> dict[str, Any]:
        data = _plain(dataclasses.asdict(self))
        data["schema_version"] = SCHEMA_VERSION
        data["kind"] = type(self).__name__
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        data = dict(data)
        version = data.pop("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"finding has schema_version {version}; this nantrap reads up to "
                f"{SCHEMA_VERSION} (upgrade nantrap)"
            )
        kind = data.pop("kind", cls.__name__)
        target = Diagnosis if kind == "Diagnosis" else cls
        names = {f.name for f in dataclasses.fields(target)}
        data = {k: v for k, v in data.items() if k in names}
        loc = dict(data.get("location") or {})
        if loc.get("phase") is not None:
            loc["phase"] = Phase(loc["phase"])
        data["location"] = Location(**loc)
        data["severity"] = Severity(data.get("severity", "warning"))
        if data.get("category") is not None:
            data["category"] = Category(data["category"])
        data["edits"] = tuple(Edit(**e) for e in data.get("edits", ()))
        return target(**data)


@dataclass(frozen=True)
class Diagnosis(Finding):
    """A guard finding in a live run: the first bad op, why, and what was done.

    ``phase``, ``op``, ``module``, ``source`` and ``step`` read from ``location``.
    """

    engine: str = "guard"
    action: str | None = None  # what the policy did: raised, warned, skipped, rolled-back...
    incident: bool = True  # False for early warnings (saturation, clip-trap, spike)

    @property
    def phase(self) -> Phase | None:
        return self.location.phase

    @property
    def op(self) -> str | None:
        return self.location.op

    @property
    def neutral_op(self) -> str | None:
        return self.location.neutral_op

    @property
    def module(self) -> str | None:
        return self.location.module

    @property
    def source(self) -> str | None:
        return self.location.source()

    @property
    def step(self) -> int | None:
        return self.location.step

    def headline(self) -> str:
        """One line: ``step 12 · domain · log in model.head (train.py:41): message``."""
        parts = []
        if self.step is not None:
            parts.append(f"step {self.step}")
        parts.append(f"{self.code} {self.category}" if self.category else self.code)
        where = self.neutral_op or self.op
        if where and self.module:
            where = f"{where} in {self.module}"
        elif self.module:
            where = self.module
        if where:
            parts.append(where)
        head = " · ".join(parts)
        if self.source:
            head += f" ({self.source})"
        return f"{head}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        # flat copies of the fields users grep for in events.jsonl
        data.update(
            phase=_plain(self.phase),
            op=self.op,
            module=self.module,
            source=self.source,
            step=self.step,
        )
        return data


@dataclass
class Report:
    """What one engine run produced: findings plus metadata (paths, versions, counts)."""

    engine: str
    findings: list[Finding] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def extend(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "engine": self.engine,
            "meta": _plain(self.meta),
            "findings": [f.to_dict() for f in self.findings],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        return cls(
            engine=data["engine"],
            findings=[Finding.from_dict(f) for f in data.get("findings", ())],
            meta=dict(data.get("meta", {})),
        )


def _plain(value: Any) -> Any:
    """JSON-safe copy: enums to values, tuples to lists, non-finite floats to strings."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _plain(value.item())
    return value
