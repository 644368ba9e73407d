"""Guard every ``torch.optim.Optimizer`` an unchanged script creates (``nantrap run``).

While installed, ``Optimizer.__init__`` is wrapped so that each new optimizer gets a guard
(``nantrap.torch.guard``, which swaps the instance's class; the script keeps its object) on
its first ``zero_grad`` or ``step``, when the subclass's ``__init__`` is done and the model
exists. LR schedulers created for it are tracked (rolled back with it), a GradScaler (when
the script makes one) is handed to the guard, and the loss of each ``loss.backward()`` (of
``scaler.scale(loss).backward()``: divided by the scale again) goes to the guard, so the
report has the loss curve.

The model is not passed to an optimizer, so ``ModuleIndex`` finds it: module- and
parameter-registration hooks record which module owns each parameter and each module's
parents, and the outermost module holding the most of the optimizer's parameters is the model.
"""

from __future__ import annotations

import functools
import logging
import types
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_hooks

__all__ = ["AutoGuard", "ModuleIndex", "attach"]

log = logging.getLogger("nantrap")
_ROUTED = ("step", "zero_grad")


class ModuleIndex:
    """Which modules own which parameters, and who contains whom, for modules built while
    installed. ``model_of(optimizer)`` names the model an optimizer trains."""

    def __init__(self) -> None:
        self._owners: weakref.WeakSet[nn.Module] = weakref.WeakSet()
        self._parents: weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet[nn.Module]] = (
            weakref.WeakKeyDictionary()
        )
        self._handles: list[Any] = []

    def install(self) -> None:
        self._handles = [
            _module_hooks.register_module_parameter_registration_hook(self._on_parameter),
            _module_hooks.register_module_module_registration_hook(self._on_module),
        ]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _on_parameter(self, module: nn.Module, name: str, param) -> None:
        if param is not None:
            self._owners.add(module)

    def _on_module(self, parent: nn.Module, name: str, child) -> None:
        if isinstance(child, nn.Module):
            self._parents.setdefault(child, weakref.WeakSet()).add(parent)

    def tops(self, module: nn.Module) -> list[nn.Module]:
        """The outermost modules that contain ``module`` (itself if none does)."""
        found, todo, seen = [], [module], set()
        while todo:
            current = todo.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            parents = list(self._parents.get(current, ()))
            if parents:
                todo += parents
            else:
                found.append(current)
        return found

    def model_of(self, optimizer: torch.optim.Optimizer) -> tuple[nn.Module | None, int, int]:
        """(model, parameters of the optimizer it holds, parameters of the optimizer)."""
        wanted = {id(p) for group in optimizer.param_groups for p in group["params"]}
        candidates: dict[int, nn.Module] = {}
        for owner in list(self._owners):
            if any(id(p) in wanted for p in owner.parameters(recurse=False)):
                for top in self.tops(owner):
                    candidates[id(top)] = top
        best, best_n = None, 0
        for top in candidates.values():
            n = sum(1 for p in top.parameters() if id(p) in wanted)
            if n > best_n:
                best, best_n = top, n
        return best, best_n, len(wanted)


class AutoGuard:
    """Patches torch while installed; one guard per optimizer the script creates.

    The first optimizer logs to ``log_dir``, later ones to ``log_dir/optimizer-N``.
    """

    def __init__(
        self,
        *,
        policy: str = "warn",
        log_dir: str | Path = "nantrap-run",
        options: dict[str, Any] | None = None,
    ) -> None:
        self.policy = policy
        self.log_dir = Path(log_dir)
        self.options = dict(options or {})
        self.index = ModuleIndex()
        self.entries: list[dict[str, Any]] = []  # optimizer, model, log_dir, note, built
        self._by_id: dict[int, dict[str, Any]] = {}
        self._schedulers: dict[int, list[Any]] = {}
        self._scalers: list[Any] = []
        self._last_scaled: tuple[torch.Tensor, Any] | None = None
        self._undo: list[Callable[[], None]] = []
        self._closed = False

    # -- install / remove -------------------------------------------------------------
    def install(self) -> AutoGuard:
        if self._undo:
            raise RuntimeError("AutoGuard is already installed")
        self.index.install()
        self._undo.append(self.index.remove)
        auto = self
        self._wrap(torch.optim.Optimizer, "__init__", lambda orig: _after(orig, auto._adopt))
        self._wrap(
            torch.optim.lr_scheduler.LRScheduler,
            "__init__",
            lambda orig: _after(orig, auto._scheduler_made),
        )
        self._wrap(torch.Tensor, "backward", lambda orig: _before(orig, auto._backward))
        self._wrap(torch.amp.GradScaler, "__init__", lambda orig: _after(orig, auto._scaler_made))
        self._wrap(torch.amp.GradScaler, "scale", lambda orig: _returns(orig, auto._scaled_loss))
        return self

    def _wrap(self, owner: type, name: str, make: Callable[[Callable], Callable]) -> None:
        original = owner.__dict__[name]
        setattr(owner, name, functools.wraps(original)(make(original)))
        self._undo.append(lambda: setattr(owner, name, original))

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> AutoGuard:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- patched entry points ---------------------------------------------------------
    def _adopt(self, opt, *args, **kwargs) -> None:
        if id(opt) in self._by_id:
            return
        entry = {
            "optimizer": opt,
            "model": None,
            "built": False,
            "note": None,
            "log_dir": None,
            "ours": False,
        }
        self._by_id[id(opt)] = entry
        self.entries.append(entry)
        for name in _ROUTED:
            setattr(opt, name, types.MethodType(self._trigger(name), opt))

    def _trigger(self, name: str):
        auto = self

        def first_use(opt, *args, **kwargs):
            auto._build(opt)
            return getattr(type(opt), name)(opt, *args, **kwargs)

        first_use.__name__ = name
        first_use._nantrap_trigger = True  # type: ignore[attr-defined]
        return first_use

    def _scheduler_made(self, scheduler, optimizer=None, *args, **kwargs) -> None:
        opt = getattr(scheduler, "optimizer", None)
        if opt is None:
            return
        self._schedulers.setdefault(id(opt), []).append(scheduler)
        entry = self._by_id.get(id(opt))
        if entry is not None and entry["ours"]:
            opt.guard.track(scheduler)

    def _scaler_made(self, scaler, *args, **kwargs) -> None:
        self._scalers.append(scaler)

    def _scaled_loss(self, result, scaler, outputs, *args, **kwargs) -> None:
        if isinstance(result, torch.Tensor) and result.numel() == 1:
            self._last_scaled = (result, scaler)

    def _backward(self, tensor, *args, **kwargs) -> None:
        if tensor.numel() != 1:
            return
        loss = tensor.detach()
        scaled, self._last_scaled = self._last_scaled, None
        if scaled is not None and scaled[0] is tensor and scaled[1]._scale is not None:
            loss = loss / scaled[1]._scale  # the loss itself, not GradScaler's scaled copy
        for entry in self.entries:
            if entry["ours"]:
                entry["optimizer"].guard.observe(loss=loss)

    # -- building a guard -------------------------------------------------------------
    def _build(self, opt) -> None:
        entry = self._by_id.get(id(opt))
        if entry is None or entry["built"] or self._closed:
            return
        entry["built"] = True
        _drop_triggers(opt)  # a scheduler's wrapper around one is re-pointed by the guard
        name = type(opt).__name__
        if getattr(opt, "_nantrap_guard", None) is not None:
            entry["note"] = f"{name}: already guarded by the script"
            return
        model, held, total = self.index.model_of(opt)
        n = sum(1 for e in self.entries if e["ours"])
        log_dir = self.log_dir if n == 0 else self.log_dir / f"optimizer-{n + 1}"
        if model is None:
            entry["note"] = (
                f"{name}: no nn.Module owns its parameters; guarded without a model "
                "(no input checks or op localization)"
            )
        elif held < total:
            entry["note"] = (
                f"{name}: {type(model).__name__} holds {held} of its {total} parameters; "
                "the others are checked but not localized"
            )
        from nantrap.torch import guard

        if _is_ddp(model):  # rank-aware incidents, a folder per rank
            from nantrap.torch.distributed import guard_ddp as guard
        try:
            guard(
                opt,
                model,
                policy=self.policy,
                log_dir=str(log_dir),
                scheduler=self._schedulers.get(id(opt)),
                scaler=self._scaler(),
                **self.options,
            )
        except Exception as exc:  # never break the user's run: leave it unguarded
            entry["note"] = f"{name}: not guarded ({type(exc).__name__}: {exc})"
            log.warning("nantrap: %s", entry["note"])
            return
        entry.update(model=model, log_dir=log_dir, ours=True)

    def _scaler(self):
        """The script's GradScaler, when it made exactly one that is enabled."""
        enabled = [s for s in self._scalers if s.is_enabled()]
        return enabled[0] if len(enabled) == 1 else None

    # -- the attachment protocol of nantrap.run --------------------------------------
    def describe(self) -> list[str]:
        out = []
        for e in self.entries:
            if e["ours"]:
                model = type(e["model"]).__name__ if e["model"] is not None else "no model"
                out.append(f"{type(e['optimizer']).__name__} of {model} -> {e['log_dir']}")
        return out

    def close(self, status: str) -> list[str]:
        """Uninstall, close every guard (it writes its end record); notes for the user."""
        self.remove()
        self._closed = True
        for e in self.entries:
            opt = e["optimizer"]
            _drop_triggers(opt)
            guard = opt.__dict__.get("_nantrap_guard")
            if e["ours"] and guard is not None:
                guard.close("stopped" if guard.stopped else _guard_status(status))
        notes = [e["note"] for e in self.entries if e["note"]]
        if not any(e["ours"] for e in self.entries):
            notes.append("pytorch: the script created no optimizer that could be guarded")
        return notes


def _is_ddp(model) -> bool:
    import torch.distributed as dist

    return (
        isinstance(model, nn.parallel.DistributedDataParallel)
        and dist.is_available()
        and dist.is_initialized()
    )


def _returns(original: Callable, then: Callable) -> Callable:
    def call(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        then(result, self, *args, **kwargs)
        return result

    return call


def _drop_triggers(opt) -> None:
    """Remove our first-use methods from the instance (not an LR scheduler's wrapper)."""
    for name in _ROUTED:
        found = opt.__dict__.get(name)
        if getattr(found, "_nantrap_trigger", False) and not hasattr(found, "_wrapped_by_lr_sched"):
            del opt.__dict__[name]


def _after(original: Callable, then: Callable) -> Callable:
    def call(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        then(self, *args, **kwargs)
        return result

    return call


def _before(original: Callable, first: Callable) -> Callable:
    def call(self, *args, **kwargs):
        first(self, *args, **kwargs)
        return original(self, *args, **kwargs)

    return call


def _guard_status(run_status: str) -> str:
    """The guard's end status for how the script ended (a sys.exit is a normal end)."""
    return {"ok": "ok", "exit": "ok", "interrupted": "stopped"}.get(run_status, "error")


def attach(config) -> AutoGuard:
    """``nantrap run``'s entry point: install for the run described by ``config``."""
    return AutoGuard(
        policy=config.policy, log_dir=config.log_dir, options=config.guard_options
    ).install()
