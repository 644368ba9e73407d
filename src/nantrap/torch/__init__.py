"""The PyTorch edge of nantrap: the training guard, op-level localization, repro bundles.

    import nantrap.torch as nt
    opt = nt.guard(torch.optim.AdamW(model.parameters(), lr=1e-3), model,
                   policy="rollback", log_dir="runs/nantrap")

Importing this module imports torch; ``import nantrap`` alone does not.
"""

from __future__ import annotations

from typing import Any

from nantrap.torch.guard import TorchGuard, guard, unguard

__all__ = [
    "ArmedTrace",
    "EarlyWarnings",
    "TorchGuard",
    "guard",
    "load_bundle",
    "localize",
    "replay",
    "save_bundle",
    "unguard",
]

_LAZY = {
    "localize": "nantrap.torch.localize",
    "ArmedTrace": "nantrap.torch.localize",
    "EarlyWarnings": "nantrap.torch.early_warnings",
    "save_bundle": "nantrap.torch.bundle",
    "load_bundle": "nantrap.torch.bundle",
    "replay": "nantrap.torch.bundle",
}


def __getattr__(name: str) -> Any:
    """Localization, early warnings and bundles load on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nantrap.torch' has no attribute {name!r}")
