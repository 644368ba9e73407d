"""Attach :class:`nantrap.keras.NanTrap` to every ``keras.Model.fit`` an unchanged script
calls (``nantrap run``): ``fit`` is wrapped while installed, and a call without a NanTrap of
its own gets one. The first ``fit`` logs to ``log_dir``, later ones to ``log_dir/fit-N``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import keras

from nantrap.keras.callback import NanTrap

__all__ = ["KerasAutoGuard", "attach"]

_CALLBACKS_POSITION = 5  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)


class KerasAutoGuard:
    """Wraps ``keras.Model.fit`` while installed; one NanTrap per ``fit`` call."""

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
        self.traps: list[tuple[str, NanTrap, Path]] = []  # model class, trap, folder
        self._original = None

    def install(self) -> KerasAutoGuard:
        original = keras.Model.fit
        auto = self

        @functools.wraps(original)
        def fit(model, *args, **kwargs):
            args, kwargs = auto._with_trap(model, list(args), dict(kwargs))
            return original(model, *args, **kwargs)

        self._original = original
        keras.Model.fit = fit
        return self

    def remove(self) -> None:
        if self._original is not None:
            keras.Model.fit = self._original
            self._original = None

    def _with_trap(self, model, args: list, kwargs: dict) -> tuple[list, dict]:
        positional = len(args) > _CALLBACKS_POSITION
        given = args[_CALLBACKS_POSITION] if positional else kwargs.get("callbacks")
        callbacks = list(given or [])
        if not any(isinstance(c, NanTrap) for c in callbacks):
            n = len(self.traps)
            folder = self.log_dir if n == 0 else self.log_dir / f"fit-{n + 1}"
            trap = NanTrap(self.policy, log_dir=folder, **self.options)
            self.traps.append((type(model).__name__, trap, folder))
            callbacks.append(trap)
        if positional:
            args[_CALLBACKS_POSITION] = callbacks
        else:
            kwargs["callbacks"] = callbacks
        return args, kwargs

    # -- the attachment protocol of nantrap.run --------------------------------------
    def describe(self) -> list[str]:
        return [f"fit of {name} -> {folder}" for name, _, folder in self.traps]

    def close(self, status: str) -> list[str]:
        self.remove()
        return []


def attach(config) -> KerasAutoGuard:
    """``nantrap run``'s entry point: install for the run described by ``config``."""
    return KerasAutoGuard(
        policy=config.policy, log_dir=config.log_dir, options=config.guard_options
    ).install()
