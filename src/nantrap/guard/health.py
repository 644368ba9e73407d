"""Judgements of the training state every guard edge makes from the history."""

from __future__ import annotations

import math

from nantrap.guard.divergence import divergence_evidence
from nantrap.guard.history import History

__all__ = ["worth_snapshot"]


def worth_snapshot(history: History) -> bool:
    """Whether the state is worth a snapshot: not in the middle of a blow-up (the loss well
    above its recent minimum while the gradient norm grows), so that a rollback after a
    divergence lands before it started."""
    ev = divergence_evidence(history, None)
    loss_up = ev.get("loss_last", 0.0) > 1.5 * max(ev.get("loss_min", math.inf), 1e-12)
    return not (loss_up and ev.get("grad_norm_growth", 0.0) >= 10.0)
