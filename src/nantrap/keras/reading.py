"""One training step as an instrument hands it to the guard: the probe's numbers and the
ways to re-run it, on any Keras backend."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ProbeReading", "StepRun"]


@dataclass(frozen=True)
class ProbeReading:
    """One step's numbers on the host. ``param_norm`` is measured after the update."""

    loss: float
    grad_norm: float
    param_norm: float
    applied: bool
    loss_scale: float
    steps: int  # probe calls so far (counts gated steps too)

    @property
    def grads_finite(self) -> bool:
        return math.isfinite(self.grad_norm)


@dataclass(frozen=True)
class StepRun:
    """A finished step: its numbers, its batch and what re-runs it.

    ``replay()`` runs it again eagerly (no patches, the dropout masks it had) for an op
    trace; ``sample()`` is the cheaper run an early-warning sample traces (None: the backend
    samples training steps as they run); ``apply_dropped()`` applies the update the gate
    dropped, for a ``warn`` decision (None where it cannot be re-applied in order).
    """

    reading: ProbeReading
    batch: Any = None
    replay: Callable[[], Any] | None = None
    sample: Callable[[], Any] | None = None
    apply_dropped: Callable[[], Any] | None = None
