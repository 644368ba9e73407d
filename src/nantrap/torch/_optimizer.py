"""How a guarded optimizer stays the optimizer: ``guard`` swaps the instance's class for a
subclass of its own class whose ``step`` runs the guard.

The object the user holds stays the same object, so everything keyed on it keeps working:
``isinstance`` checks, LR schedulers created before or after, GradScaler's per-optimizer
state (keyed by ``id(optimizer)``), ``param_groups``/``state`` identity, ``state_dict``
(the plain optimizer's, loadable without nantrap). A wrapper object would have to forward
every attribute and would break ``id``-keyed state; a second object sharing ``__dict__``
would leave an unguarded twin around. ``unguard`` puts the original class back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["guarded_class", "guarded_step", "route_scheduler_patch", "schedulers_of"]


def guarded_step(self: Any, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
    return self._nantrap_guard.step(closure, **kwargs)


guarded_step.hooked = True  # type: ignore[attr-defined]  # keep torch from re-wrapping it


def _zero_grad(self: Any, set_to_none: bool = True) -> None:
    self._nantrap_guard.new_iteration()
    type(self).__mro__[1].zero_grad(self, set_to_none)


def _load_state_dict(self: Any, state_dict: dict[str, Any]) -> None:
    """Load as the plain class does, then tell the guard its snapshots are stale."""
    type(self).__mro__[1].load_state_dict(self, state_dict)
    self._nantrap_guard.state_loaded()


def _reduce_ex(self: Any, protocol: int) -> Any:
    """Pickle / deepcopy as the plain optimizer class (the guard is not copied)."""
    return (_plain_optimizer, (type(self).__mro__[1], self.__getstate__()))


def _plain_optimizer(cls: type, state: dict[str, Any]) -> torch.optim.Optimizer:
    optimizer = cls.__new__(cls)
    optimizer.__setstate__(state)
    return optimizer


@functools.cache
def guarded_class(cls: type) -> type:
    """``cls`` with the guard's ``step``: same name, ``isinstance(opt, cls)`` stays true."""
    return type(
        cls.__name__,
        (cls,),
        {
            "__module__": cls.__module__,
            "__qualname__": f"{cls.__qualname__}[nantrap-guarded]",
            "step": guarded_step,
            "zero_grad": _zero_grad,
            "load_state_dict": _load_state_dict,
            "__reduce_ex__": _reduce_ex,
            "guard": property(lambda self: self._nantrap_guard, doc="The TorchGuard."),
            "diagnoses": property(
                lambda self: self._nantrap_guard.diagnoses, doc="The guard's findings."
            ),
            "stopped": property(lambda self: self._nantrap_guard.stopped),
        },
    )


def route_scheduler_patch(optimizer: torch.optim.Optimizer, target: Callable) -> None:
    """An LR scheduler replaces ``optimizer.step`` by an instance attribute wrapping the
    class's step as it was then; point that wrapper at ``target`` (the guarded step, or the
    plain one again on ``unguard``), keeping the call flag the scheduler checks."""
    patched = optimizer.__dict__.get("step")
    if patched is None or not hasattr(patched, "_wrapped_by_lr_sched"):
        return

    def step(*args: Any, **kwargs: Any) -> Any:
        optimizer._opt_called = True  # what the scheduler's own wrapper records
        return target(*args, **kwargs)

    step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    optimizer.__dict__["step"] = step


def schedulers_of(optimizer: torch.optim.Optimizer) -> list[Any]:
    """LR schedulers that drive ``optimizer`` (a scan of its referrers: rollback path only)."""
    import gc

    from torch.optim.lr_scheduler import LRScheduler

    found = []
    for ref in gc.get_referrers(optimizer):
        owners = [ref] if isinstance(ref, LRScheduler) else []
        if isinstance(ref, dict) and ref.get("optimizer") is optimizer:
            owners = [o for o in gc.get_referrers(ref) if isinstance(o, LRScheduler)]
        found += [o for o in owners if getattr(o, "optimizer", None) is optimizer]
    return found
