"""The micro-batches of one optimizer step (gradient accumulation), for repro bundles.

The forward hook records each training forward's arguments (references, no copies, no
sync); ``observe(loss, targets)`` attaches a loss and targets to the latest one. When a step
goes bad, :meth:`MicroBatches.culprit` picks the micro-batch to write to the bundle: the
first whose loss is non-finite, else the first with a non-finite floating input, else the
last. It reads the device only then (off the hot path); the list is cleared every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

__all__ = ["MicroBatch", "MicroBatches"]


@dataclass
class MicroBatch:
    args: tuple
    kwargs: dict
    loss: Any = None
    targets: Any = None

    def loss_finite(self) -> bool | None:
        """None when no tensor loss was observed for this micro-batch."""
        if not isinstance(self.loss, torch.Tensor):
            return None
        return bool(torch.isfinite(self.loss.detach()).all())

    def inputs_finite(self) -> bool:
        return all(
            bool(torch.isfinite(t.detach()).all())
            for t in tree_leaves((self.args, self.kwargs))
            if isinstance(t, torch.Tensor) and t.is_floating_point()
        )


class MicroBatches:
    """The training forwards of the current step, in order."""

    def __init__(self) -> None:
        self.batches: list[MicroBatch] = []

    def __len__(self) -> int:
        return len(self.batches)

    def forward(self, args: tuple, kwargs: dict) -> None:
        self.batches.append(MicroBatch(args, kwargs))

    def observe(self, loss: Any = None, targets: Any = None) -> None:
        """Attach ``loss``/``targets`` to the latest forward (the usual order: forward,
        loss, backward, observe)."""
        if not self.batches:
            return
        last = self.batches[-1]
        if loss is not None:
            last.loss = loss
        if targets is not None:
            last.targets = targets

    def culprit(self) -> MicroBatch | None:
        """The micro-batch that went bad, or the last one when none can be told apart."""
        for b in self.batches:
            if b.loss_finite() is False:
                return b
        for b in self.batches:
            if not b.inputs_finite():
                return b
        return self.batches[-1] if self.batches else None

    def clear(self) -> None:
        self.batches.clear()
