"""The TensorFlow edge of nantrap.

- :func:`guard_step`: guard a custom ``tf.GradientTape`` training step (a decorator);
- :func:`guard_session`: guard ``tf.compat.v1`` graphs run through a ``Session``;
- :func:`localize`: replay a step eagerly, op by op, and diagnose its first bad op;
- :class:`OpTrace`: the op-level tracer behind it.

Importing ``nantrap.tf`` does not import TensorFlow; the names above do, on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["OpTrace", "SessionGuard", "StepGuard", "guard_session", "guard_step", "localize"]

_WHERE = {
    "OpTrace": "nantrap.tf.trace",
    "StepGuard": "nantrap.tf.guard",
    "guard_step": "nantrap.tf.guard",
    "SessionGuard": "nantrap.tf.compat_v1",
    "guard_session": "nantrap.tf.compat_v1",
    "localize": "nantrap.tf.localize",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'nantrap.tf' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
