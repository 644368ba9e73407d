"""One training step's numbers, as the probe of any Keras backend measured them."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ProbeReading"]


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
