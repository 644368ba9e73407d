"""Metric sinks: the event log fans each record out to them (TensorBoard, W&B).

A sink sees exactly the records written to ``events.jsonl`` — the numbers the guard has
already fetched to the host — so it adds no device sync. :class:`MetricSink` turns records
into scalars and text markers; a backend implements ``scalars``, ``text`` and ``close``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["STEP_SCALARS", "MetricSink", "Sink", "make_sinks"]

STEP_SCALARS = ("loss", "grad_norm", "update_ratio", "lr")
PREFIX = "nantrap/"
_NOT_CONTEXT = {"type", "schema_version", "step", "rank"}


class Sink(Protocol):
    """Receives every event record (a JSON-safe dict with ``type``)."""

    def write(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class MetricSink(ABC):
    """Records -> scalars (``nantrap/loss``, ``grad_norm``, ``update_ratio``, ``lr`` per
    step record) and markers: ``nantrap/incident`` (1.0 at an incident's step, with its
    headline as text ``nantrap/diagnosis``), ``nantrap/warning`` for early warnings, and
    ``nantrap/rollback_to`` (the step restored) with the action as text ``nantrap/action``;
    the loop's context of a diagnosis (``annotate``) as text ``nantrap/context``.
    """

    def write(self, record: Mapping[str, Any]) -> None:
        kind = record.get("type")
        if kind == "step":
            values = {PREFIX + k: float(record[k]) for k in STEP_SCALARS if _number(record.get(k))}
            if values:
                self.scalars(int(record["step"]), values)
        elif kind == "diagnosis":
            step = _step(record.get("location", {}).get("step"))
            incident = bool(record.get("incident"))
            self.scalars(step, {PREFIX + ("incident" if incident else "warning"): 1.0})
            self.text(step, PREFIX + "diagnosis", _diagnosis_text(record))
        elif kind == "action":
            step = _step(record.get("step"))
            if record.get("to_step") is not None:
                self.scalars(step, {PREFIX + "rollback_to": float(record["to_step"])})
            self.text(step, PREFIX + "action", _action_text(record))
        elif kind == "context":
            fields = {k: v for k, v in record.items() if k not in _NOT_CONTEXT}
            if fields:
                text = ", ".join(f"{k}={v}" for k, v in fields.items())
                self.text(_step(record.get("step")), PREFIX + "context", text)
        elif kind == "end":
            self.text(
                _step(record.get("step")), PREFIX + "action", f"run ended: {record.get('status')}"
            )

    @abstractmethod
    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Write scalar ``values`` (tag -> number) at ``step``."""

    @abstractmethod
    def text(self, step: int, tag: str, text: str) -> None:
        """Write a Markdown ``text`` under ``tag`` at ``step``."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the backend (a later record may reopen it)."""


def make_sinks(*, tensorboard: str | None, wandb: bool, rank: int = 0) -> list[Sink]:
    """The sinks a guard config asks for (``tensorboard``: the resolved directory)."""
    sinks: list[Sink] = []
    if tensorboard is not None:
        from nantrap.guard.tensorboard import TensorBoardSink

        path = tensorboard if rank == 0 else f"{tensorboard}/rank{rank}"
        sinks.append(TensorBoardSink(path))
    if wandb:
        from nantrap.guard.wandb_sink import active_run

        run = active_run(required=rank == 0)
        if run is not None:
            from nantrap.guard.wandb_sink import WandbSink

            sinks.append(WandbSink(run))
    return sinks


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _step(value: Any) -> int:
    return int(value) if isinstance(value, int) else 0


def _diagnosis_text(record: Mapping[str, Any]) -> str:
    loc = record.get("location") or {}
    where = " ".join(
        str(x)
        for x in (
            loc.get("op") and f"op {loc['op']}",
            loc.get("module") and f"in {loc['module']}",
            loc.get("path") and f"at {loc['path']}:{loc.get('line')}",
        )
        if x
    )
    text = f"**{record.get('code')}** {record.get('message', '')}"
    if where:
        text += f" ({where})"
    if record.get("fix"):
        text += f"  \nfix: {record['fix']}"
    return text


def _action_text(record: Mapping[str, Any]) -> str:
    text = f"{record.get('action')} at step {record.get('step')}"
    if record.get("to_step") is not None:
        text += f" -> back to step {record['to_step']}"
    before, after = record.get("lr_before"), record.get("lr_after")
    if _number(before) and _number(after) and before != after:
        text += f", lr {before:.3g} -> {after:.3g}"
    if record.get("detail"):
        text += f": {record['detail']}"
    return text
