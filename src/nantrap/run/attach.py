"""The framework attachers ``nantrap run`` knows, one line each, by the module that triggers them.

An attacher module defines ``attach(config: RunConfig) -> Attachment``; the attachment has
``close(status: str) -> list[str]`` (notes for the user) and ``notes() -> list[str]``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

__all__ = ["Attacher", "all_attachers", "register_attacher"]


@dataclass(frozen=True)
class Attacher:
    framework: str  # what users call it
    trigger: str  # the module whose import attaches it
    module: str  # the nantrap module with ``attach(config)``

    def available(self) -> bool:
        """Whether this nantrap has the attacher module (it is optional per framework)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


_ATTACHERS: dict[str, Attacher] = {}


def register_attacher(framework: str, trigger: str, module: str) -> Attacher:
    """Add an attacher; refuses a second one for the same framework or trigger."""
    entry = Attacher(framework, trigger, module)
    if framework in _ATTACHERS or any(a.trigger == trigger for a in _ATTACHERS.values()):
        raise ValueError(f"an attacher for {framework!r} ({trigger}) is registered twice")
    _ATTACHERS[framework] = entry
    return entry


def all_attachers() -> list[Attacher]:
    return list(_ATTACHERS.values())


register_attacher("pytorch", "torch", "nantrap.torch.autoguard")
register_attacher("keras", "keras", "nantrap.keras.autoguard")
register_attacher("tf.compat.v1", "tensorflow", "nantrap.tf.autoguard")
