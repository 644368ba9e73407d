"""The Keras 3 edge of nantrap: :class:`NanTrap`, the training guard as a ``fit`` callback.

Importing ``nantrap.keras`` does not import Keras; ``nantrap.keras.NanTrap`` does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NanTrap"]


def __getattr__(name: str) -> Any:
    if name == "NanTrap":
        from nantrap.keras.callback import NanTrap

        return NanTrap
    raise AttributeError(f"module 'nantrap.keras' has no attribute {name!r}")
