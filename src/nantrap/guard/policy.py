"""What the guard does about an incident: the policy, bounded retries and the LR decay."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["Action", "Decision", "Policy"]


class Action(str, Enum):
    RAISE = "raise"
    WARN = "warn"
    SKIP = "skip"
    ROLLBACK = "rollback"
    STOP = "stop"

    def __str__(self) -> str:
        return self.value

    @property
    def past(self) -> str:
        """The word a Diagnosis records in ``action``: raised, warned, skipped..."""
        return {
            "raise": "raised",
            "warn": "warned",
            "skip": "skipped",
            "rollback": "rolled-back",
            "stop": "stopped",
        }[self.value]


@dataclass(frozen=True)
class Decision:
    """One decision: the action, the LR multiplier to apply now, and why."""

    action: Action
    lr_factor: float = 1.0
    retries: int = 0
    detail: str = ""


class Policy:
    """Turns incidents into decisions and keeps the retry count and the cumulative LR scale.

    ``skip`` cannot repair state that is already non-finite (``state_corrupt``): it then
    rolls back when a snapshot exists and stops otherwise. ``rollback`` is bounded by
    ``max_retries`` consecutive rollbacks; ``progressed()`` (a new good snapshot after a
    rollback) resets the count.
    """

    def __init__(self, policy: str = "rollback", *, lr_decay: float = 0.5, max_retries: int = 3):
        self.policy = Action(policy)
        self.lr_decay = lr_decay
        self.max_retries = max_retries
        self.retries = 0
        self.lr_scale = 1.0  # product of every decay applied so far
        self.rollbacks = 0  # total over the run

    def decide(
        self, *, state_corrupt: bool = False, can_rollback: bool = True, bad_data: bool = False
    ) -> Decision:
        """``bad_data``: the incident was caused by the batch, not the weights or the LR:
        ``rollback`` then skips the batch instead (nothing to undo, no LR to lower)."""
        action = self.policy
        if action is Action.ROLLBACK and bad_data and not state_corrupt:
            return Decision(
                Action.SKIP,
                detail="bad data: the batch was skipped (no rollback or LR change needed)",
            )
        if action is Action.SKIP and state_corrupt:
            action = Action.ROLLBACK if can_rollback else Action.STOP
            if action is Action.STOP:
                return Decision(Action.STOP, detail="state is non-finite and no snapshot exists")
            return self._rollback("skip cannot repair non-finite state; rolled back instead")
        if action is Action.ROLLBACK:
            if not can_rollback:
                return Decision(Action.STOP, retries=self.retries, detail="no good snapshot left")
            if self.retries >= self.max_retries:
                return Decision(
                    Action.STOP,
                    retries=self.retries,
                    detail=f"max_retries={self.max_retries} rollbacks did not help",
                )
            return self._rollback("")
        return Decision(action)

    def _rollback(self, detail: str) -> Decision:
        self.retries += 1
        self.rollbacks += 1
        self.lr_scale *= self.lr_decay
        return Decision(
            Action.ROLLBACK, lr_factor=self.lr_decay, retries=self.retries, detail=detail
        )

    def progressed(self) -> None:
        """Training got past a new snapshot: the last rollback worked."""
        self.retries = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.value,
            "lr_decay": self.lr_decay,
            "max_retries": self.max_retries,
            "retries": self.retries,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy = Action(state["policy"])
        self.lr_decay = float(state["lr_decay"])
        self.max_retries = int(state["max_retries"])
        self.retries = int(state["retries"])
        self.lr_scale = float(state["lr_scale"])
        self.rollbacks = int(state["rollbacks"])
