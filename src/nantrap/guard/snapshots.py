"""A ring of good training states in host memory. The framework edge supplies ``capture``
(state -> a host copy) and ``restore`` (host copy -> state); the ring decides when to take
one and which one to go back to."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Snapshot", "SnapshotRing"]


@dataclass
class Snapshot:
    """The state before step ``step`` (i.e. after ``step`` updates), as the edge captured it."""

    step: int
    state: Any
    lr_scale: float = 1.0  # the guard's cumulative LR decay when it was taken
    restores: int = 0


class SnapshotRing:
    """Keep the newest ``keep`` snapshots, one every ``every`` steps.

    ``restore_latest`` goes back to the newest snapshot; if that one was already restored
    and training failed again before a newer one was taken, it is dropped and the one
    before it is used (when there is one).
    """

    def __init__(
        self,
        every: int,
        keep: int,
        *,
        capture: Callable[[], Any] | None = None,
        restore: Callable[[Any], None] | None = None,
    ):
        self.every = every
        self.keep = keep
        self.capture = capture
        self.restore = restore
        self._ring: deque[Snapshot] = deque(maxlen=keep)

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def steps(self) -> list[int]:
        return [s.step for s in self._ring]

    @property
    def latest(self) -> Snapshot | None:
        return self._ring[-1] if self._ring else None

    def due(self, step: int) -> bool:
        return step % self.every == 0 and (not self._ring or self._ring[-1].step != step)

    def take(self, step: int, state: Any = None, *, lr_scale: float = 1.0) -> Snapshot:
        """Add the state before ``step``: ``state`` if given, else ``capture()``."""
        if state is None:
            if self.capture is None:
                raise RuntimeError("SnapshotRing.take needs a state or a capture function")
            state = self.capture()
        self.discard_after(step - 1)
        snap = Snapshot(step=step, state=state, lr_scale=lr_scale)
        self._ring.append(snap)
        return snap

    def discard_after(self, step: int) -> int:
        """Drop snapshots taken after ``step`` (they hold state that turned out bad)."""
        dropped = 0
        while self._ring and self._ring[-1].step > step:
            self._ring.pop()
            dropped += 1
        return dropped

    def restore_latest(self) -> Snapshot:
        """Restore the chosen snapshot through ``restore`` and return it."""
        if not self._ring:
            raise LookupError("no snapshot to restore")
        if self.restore is None:
            raise RuntimeError("SnapshotRing.restore_latest needs a restore function")
        if self._ring[-1].restores > 0 and len(self._ring) > 1:
            self._ring.pop()
        snap = self._ring[-1]
        self.restore(snap.state)
        snap.restores += 1
        return snap

    def state_dict(self) -> dict[str, Any]:
        """Metadata and the captured states themselves (framework objects, e.g. CPU tensors)."""
        return {
            "every": self.every,
            "keep": self.keep,
            "snapshots": [
                {"step": s.step, "state": s.state, "lr_scale": s.lr_scale, "restores": s.restores}
                for s in self._ring
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.every = int(state["every"])
        self.keep = int(state["keep"])
        self._ring = deque(
            (
                Snapshot(int(s["step"]), s["state"], float(s["lr_scale"]), int(s["restores"]))
                for s in state["snapshots"]
            ),
            maxlen=self.keep,
        )
