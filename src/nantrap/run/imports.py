"""Call a function right after a module is imported, without importing it ourselves.

``nantrap run`` must not import torch (seconds, and the wrong thing for a Keras script) just
to patch it; it waits until the script imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType

__all__ = ["ImportWatch"]


class ImportWatch(importlib.abc.MetaPathFinder):
    """``callback(module)`` once, after ``name`` is executed (now, if it already was).

    Installed at the front of ``sys.meta_path`` by ``start()``; ``stop()`` removes it.
    """

    def __init__(self, name: str, callback: Callable[[ModuleType], None]):
        self.name = name
        self.callback = callback
        self._busy = False
        self.fired = False

    def start(self) -> None:
        if self.name in sys.modules:
            self._fire(sys.modules[self.name])
            return
        sys.meta_path.insert(0, self)

    def stop(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _ThenCall(spec.loader, self._fire)
        return spec

    def _fire(self, module: ModuleType) -> None:
        self.stop()
        if not self.fired:
            self.fired = True
            self.callback(module)


class _ThenCall(importlib.abc.Loader):
    """A loader that runs the real one, then a callback; everything else is delegated."""

    def __init__(self, loader, then: Callable[[ModuleType], None]):
        self._loader = loader
        self._then = then

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._then(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)
