"""The guard's event log: ``log_dir/events.jsonl`` (read by ``nantrap report``) plus a short
human summary through ``logging.getLogger("nantrap")``.

One JSON object per line, each with ``schema_version`` and ``type`` (run, step, context,
diagnosis, action, end); non-finite floats are written as the strings "nan", "inf", "-inf".
Every record is also handed to the log's metric sinks (TensorBoard, W&B).

``context`` records (``step``, ``rank`` and the fields of ``GuardEngine.annotate``: epoch,
batch, micro-batch, the ranks that went bad...) follow the diagnosis record they belong to;
``nantrap report`` joins them to the incident by step and rank.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import IO, Any

from nantrap.findings import SCHEMA_VERSION, Diagnosis
from nantrap.guard.sinks import Sink

__all__ = ["EVENTS_FILE", "EventLog", "jsonable", "read_events"]

EVENTS_FILE = "events.jsonl"
logger = logging.getLogger("nantrap")


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: enums to values, tuples to lists, non-finite floats to strings."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, deque)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return jsonable(value.item())
    return value


class EventLog:
    """Appends events to ``log_dir/events.jsonl`` (rank > 0: ``events.rank<r>.jsonl``) and
    keeps the newest ``keep`` of them in ``records``. ``log_dir=None`` keeps them in memory
    only."""

    def __init__(
        self,
        log_dir: str | Path | None = None,
        *,
        rank: int = 0,
        keep: int = 10_000,
        sinks: Sequence[Sink] = (),
    ):
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.rank = rank
        self.sinks: list[Sink] = list(sinks)
        self.records: deque[dict[str, Any]] = deque(maxlen=keep)
        self.written = 0
        self._file: IO[str] | None = None

    @property
    def path(self) -> Path | None:
        if self.log_dir is None:
            return None
        name = EVENTS_FILE if self.rank == 0 else f"events.rank{self.rank}.jsonl"
        return self.log_dir / name

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        record = {"schema_version": SCHEMA_VERSION, "type": type_, **jsonable(fields)}
        self.records.append(record)
        if self.path is not None:
            if self._file is None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(json.dumps(record, allow_nan=False) + "\n")
            self._file.flush()
            self.written += 1
        for sink in list(self.sinks):
            try:
                sink.write(record)
            except Exception as err:  # a metrics backend must not take the run down
                logger.warning(
                    "nantrap: %s failed (%r); it gets no more records", type(sink).__name__, err
                )
                self.sinks.remove(sink)
        return record

    def run(
        self,
        *,
        framework: str,
        policy: str,
        model: str | None,
        optimizer: str | None,
        lr: Sequence[float],
        world_size: int = 1,
        argv: Sequence[str] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        record = self.emit(
            "run",
            time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            framework=framework,
            policy=policy,
            model=model,
            optimizer=optimizer,
            lr=list(lr),
            rank=self.rank,
            world_size=world_size,
            argv=list(argv),
            **extra,
        )
        logger.info(
            "nantrap guard on %s/%s, policy=%s%s",
            model,
            optimizer,
            policy,
            f", events in {self.path}" if self.path else "",
        )
        return record

    def step(
        self,
        step: int,
        *,
        loss: float | None,
        grad_norm: float | None,
        update_ratio: float | None,
        lr: float | None,
        ranges: Mapping[str, Mapping[str, float]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = dict(
            step=step, loss=loss, grad_norm=grad_norm, update_ratio=update_ratio, lr=lr
        )
        if ranges:
            fields["ranges"] = ranges
        return self.emit("step", **fields, **extra)

    def diagnosis(self, diagnosis: Diagnosis) -> dict[str, Any]:
        data = diagnosis.to_dict()
        data.pop("schema_version", None)
        record = self.emit("diagnosis", **data)
        prefix = "nantrap" if diagnosis.incident else "nantrap warning"
        logger.warning("%s: %s", prefix, diagnosis.headline())
        if diagnosis.incident and diagnosis.fix:
            logger.warning("nantrap fix: %s", diagnosis.fix)
        return record

    def action(
        self,
        step: int,
        action: str,
        *,
        to_step: int | None = None,
        lr_before: float | None = None,
        lr_after: float | None = None,
        retries: int = 0,
        detail: str = "",
    ) -> dict[str, Any]:
        record = self.emit(
            "action",
            step=step,
            action=str(action),
            to_step=to_step,
            lr_before=lr_before,
            lr_after=lr_after,
            retries=retries,
            detail=detail,
        )
        text = f"nantrap: {action} at step {step}"
        if to_step is not None:
            text += f" -> back to step {to_step}"
        if lr_before is not None and lr_after is not None and lr_before != lr_after:
            text += f", lr {lr_before:.3g} -> {lr_after:.3g}"
        if retries:
            text += f" (retry {retries})"
        if detail:
            text += f": {detail}"
        logger.warning(text)
        return record

    def end(self, step: int, status: str) -> dict[str, Any]:
        record = self.emit("end", step=step, status=status)
        logger.info("nantrap: run ended at step %d (%s)", step, status)
        self.close()
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:
                logger.warning("nantrap: closing %s failed: %r", type(sink).__name__, err)

    def state_dict(self) -> dict[str, Any]:
        return {
            "log_dir": None if self.log_dir is None else str(self.log_dir),
            "rank": self.rank,
            "written": self.written,
            "records": list(self.records),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.close()
        self.log_dir = None if state["log_dir"] is None else Path(state["log_dir"])
        self.rank = int(state["rank"])
        self.written = int(state["written"])
        self.records = deque(state["records"], maxlen=self.records.maxlen)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The records of an events.jsonl file, in order."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
