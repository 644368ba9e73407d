"""Guard every ``torch.optim.Optimizer`` an unchanged script creates (``nantrap run``).

While installed, ``Optimizer.__init__`` is wrapped so that each new optimizer's ``step`` and
``zero_grad`` go through a guard (``nantrap.torch.guard``) built on first use. The script keeps
its own optimizer object, so ``isinstance`` checks, LR schedulers and ``GradScaler.step(opt)``
see exactly what they expect; the guard's own calls into the optimizer it wraps reach the real
methods (a per-call re-entrancy check tells them apart).

The model is not passed to an optimizer, so ``ModuleIndex`` finds it: module- and
parameter-registration hooks record which module owns each parameter and each module's
parents, and the outermost module holding the most of the optimizer's parameters is the model.
"""

from __future__ import annotations

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
    """Patches ``torch.optim.Optimizer`` while installed; one guard per optimizer created.

    ``factory(optimizer, model, policy=..., log_dir=..., **options)`` builds a guard
    (``nantrap.torch.guard`` by default). The first optimizer logs to ``log_dir``, later ones
    to ``log_dir/optimizer-N``.
    """

    def __init__(
        self,
        *,
        policy: str = "warn",
        log_dir: str | Path = "nantrap-run",
        options: dict[str, Any] | None = None,
        factory: Callable[..., Any] | None = None,
    ) -> None:
        self.policy = policy
        self.log_dir = Path(log_dir)
        self.options = dict(options or {})
        self.factory = factory
        self.index = ModuleIndex()
        self.entries: list[dict[str, Any]] = []  # optimizer, guard, model, log_dir, note
        self._by_id: dict[int, dict[str, Any]] = {}
        self._inside: set[tuple[int, str]] = set()
        self._building = False
        self._original_init = None

    # -- install / remove -------------------------------------------------------------
    def install(self) -> AutoGuard:
        if self._original_init is not None:
            raise RuntimeError("AutoGuard is already installed")
        self.index.install()
        original = torch.optim.Optimizer.__init__
        auto = self

        def __init__(opt, *args, **kwargs):
            original(opt, *args, **kwargs)
            auto._adopt(opt)

        __init__.__wrapped__ = original  # type: ignore[attr-defined]
        self._original_init = original
        torch.optim.Optimizer.__init__ = __init__  # type: ignore[method-assign]
        return self

    def remove(self) -> None:
        if self._original_init is not None:
            torch.optim.Optimizer.__init__ = self._original_init  # type: ignore[method-assign]
            self._original_init = None
        self.index.remove()

    def __enter__(self) -> AutoGuard:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- routing ----------------------------------------------------------------------
    def _adopt(self, opt: torch.optim.Optimizer) -> None:
        if self._building or id(opt) in self._by_id:
            return  # an optimizer the guard builds for itself, or a subclass's 2nd init
        entry = {"optimizer": opt, "guard": None, "model": None, "built": False, "note": None}
        self._by_id[id(opt)] = entry
        self.entries.append(entry)
        for name in _ROUTED:
            setattr(opt, name, types.MethodType(self._router(name), opt))

    def _router(self, name: str):
        auto = self

        def routed(opt, *args, **kwargs):
            return auto._call(opt, name, args, kwargs)

        routed.__name__ = name
        return routed

    def _call(self, opt, name: str, args, kwargs):
        key = (id(opt), name)
        real = getattr(type(opt), name)
        if key in self._inside:  # the guard calling into the optimizer it wraps
            return real(opt, *args, **kwargs)
        guard = self.guard_of(opt)
        if guard is None:
            return real(opt, *args, **kwargs)
        self._inside.add(key)
        try:
            return getattr(guard, name)(*args, **kwargs)
        finally:
            self._inside.discard(key)

    def guard_of(self, opt: torch.optim.Optimizer):
        """The guard of an adopted optimizer, built on first use (None if it cannot be)."""
        entry = self._by_id.get(id(opt))
        if entry is None or entry["optimizer"] is not opt:
            return None
        if not entry["built"]:
            entry["built"] = True
            self._build(entry)
        return entry["guard"]

    def _build(self, entry: dict[str, Any]) -> None:
        opt = entry["optimizer"]
        model, held, total = self.index.model_of(opt)
        n = sum(1 for e in self.entries if e["guard"] is not None)
        log_dir = self.log_dir if n == 0 else self.log_dir / f"optimizer-{n + 1}"
        name = type(opt).__name__
        if model is None:
            entry["note"] = (
                f"{name}: no nn.Module owns its parameters; guarded without a model "
                "(no input checks or op localization)"
            )
        elif held < total:
            entry["note"] = (
                f"{name}: {type(model).__name__} holds {held} of its {total} parameters; "
                "the rest are checked but not localized"
            )
        factory = self.factory
        if factory is None:
            from nantrap.torch import guard as factory
        self._building = True
        try:
            entry["guard"] = factory(
                opt, model, policy=self.policy, log_dir=str(log_dir), **self.options
            )
        except Exception as exc:  # never break the user's run: leave it unguarded
            entry["note"] = f"{name}: not guarded ({type(exc).__name__}: {exc})"
            log.warning("nantrap: %s", entry["note"])
        finally:
            self._building = False
        entry["model"], entry["log_dir"] = model, log_dir
        if entry["note"] and entry["guard"] is not None:
            log.info("nantrap: %s", entry["note"])

    # -- the attachment protocol of nantrap.run --------------------------------------
    def describe(self) -> list[str]:
        out = []
        for e in self.entries:
            if e["guard"] is None:
                continue
            model = type(e["model"]).__name__ if e["model"] is not None else "no model"
            out.append(f"{type(e['optimizer']).__name__} of {model} -> {e['log_dir']}")
        return out

    def close(self, status: str) -> list[str]:
        """Uninstall, close every guard (it writes its end record); notes for the user."""
        self.remove()
        notes = [e["note"] for e in self.entries if e["note"]]
        for e in self.entries:
            guard = e["guard"]
            closer = getattr(guard, "close", None)
            if callable(closer):
                try:
                    closer(status=_guard_status(status))
                except TypeError:
                    closer()
        if not any(e["guard"] is not None for e in self.entries):
            notes.append("pytorch: the script created no optimizer that could be guarded")
        return notes


def _guard_status(run_status: str) -> str:
    return {"ok": "ok", "exit": "stopped", "interrupted": "stopped"}.get(run_status, "error")


def attach(config) -> AutoGuard:
    """``nantrap run``'s entry point: install for the run described by ``config``."""
    return AutoGuard(
        policy=config.policy, log_dir=config.log_dir, options=config.guard_options
    ).install()
