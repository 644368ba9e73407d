"""The guard under ``torch.distributed`` DDP: which rank went bad, and one folder per rank.

``nantrap.torch.guard`` already all-reduces its per-step verdict, so every rank skips, rolls
back or stops together and no rank waits in a collective another rank left. What the
all-reduce loses is *where* it started: after DDP averages the gradients every rank holds the
same NaN. ``RankWatch`` keeps it, at no extra collective: a DDP communication hook marks, in
a few extra elements of each gradient bucket's own all-reduce, whether this rank's gradients
were finite *before* the average; every rank then knows the set of ranks that went bad.

``guard_ddp`` puts it together: the guard, a ``RankWatch``, a per-rank log folder
(``log_dir/rank<r>``), and the ranks whose own gradients were non-finite as loop context
(``guard.annotate``) of each diagnosis. The loop adds its batch index with
``opt.guard.annotate(batch=i)``.
"""

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import nantrap.torch as nt

__all__ = ["RankWatch", "guard_ddp"]


class RankWatch:
    """A DDP comm hook that all-reduces each gradient bucket (averaged, like DDP's default)
    together with one flag per rank: 1 where that rank's own bucket was non-finite.

    ``bad_ranks()`` returns the ranks flagged in the last backward (one host sync; call it
    on incidents only).
    """

    def __init__(self, model: DistributedDataParallel, process_group: Any = None):
        self.group = process_group
        self.world = dist.get_world_size(process_group)
        self.rank = dist.get_rank(process_group)
        self._current: torch.Tensor | None = None
        self.last: torch.Tensor | None = None  # flags of the last complete backward
        model.register_comm_hook(self, RankWatch._hook)

    @staticmethod
    def _hook(state: "RankWatch", bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        # real annotations: DDP checks them (hence no `from __future__ import annotations`)
        buf = bucket.buffer()
        flags = torch.zeros(state.world, device=buf.device, dtype=buf.dtype)
        flags[state.rank] = (~torch.isfinite(buf)).any().to(buf.dtype)
        packed = torch.cat([buf / state.world, flags])
        work = dist.all_reduce(packed, group=state.group, async_op=True)
        last = bucket.is_last()

        def unpack(fut: torch.futures.Future) -> torch.Tensor:
            out = fut.value()[0]
            seen = out[-state.world :] > 0
            state._current = seen if state._current is None else state._current | seen
            if last:
                state.last, state._current = state._current, None
            # NB: DDP copies the returned gradients out itself, on the backward's thread
            # (where a localization trace sees the copy; this callback may run elsewhere)
            return out[: -state.world]

        return work.get_future().then(unpack)

    def bad_ranks(self) -> list[int]:
        if self.last is None:
            return []
        return [r for r, bad in enumerate(self.last.tolist()) if bad]

    def state_dict(self) -> dict[str, Any]:
        return {"last": None if self.last is None else self.last.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        last = state.get("last")
        self.last = None if last is None else torch.tensor(last, dtype=torch.bool)


def guard_ddp(
    optimizer: torch.optim.Optimizer,
    model: DistributedDataParallel,
    policy: str = "rollback",
    log_dir: str | Path | None = None,
    **options: Any,
) -> torch.optim.Optimizer:
    """``nantrap.torch.guard`` for a DDP model: rank-aware incidents, one folder per rank.

    Call it on every rank, like DDP itself. Returns ``optimizer`` (now guarded);
    ``optimizer.guard.rank_watch`` is the :class:`RankWatch`.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("guard_ddp needs torch.distributed to be initialized")
    rank = dist.get_rank()
    rank_dir = None if log_dir is None else Path(log_dir) / f"rank{rank}"
    watch = RankWatch(model) if isinstance(model, DistributedDataParallel) else None
    nt.guard(optimizer, model, policy=policy, log_dir=rank_dir, **options)
    guard = optimizer.guard
    guard.rank_watch = watch
    if watch is not None:
        # evaluated only when a diagnosis is written: the flags' host sync stays off the
        # clean steps
        guard.annotate(
            bad_ranks=watch.bad_ranks, origin=lambda: rank in watch.bad_ranks(), source="ddp"
        )
    return optimizer
