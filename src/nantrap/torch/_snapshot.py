"""Capture and restore everything a training step changes, bit-exactly.

Two granularities:

- :class:`StepState`: what one forward pass changes besides the weights: model buffers
  (BatchNorm running stats) and the torch RNG. Taken at the start of every step into
  preallocated device buffers (no host sync), restored when a step is skipped or
  replayed.
- :func:`capture` / :func:`restore`: a full snapshot in host memory (weights, buffers,
  optimizer state and hyper-parameters, schedulers, GradScaler, every RNG) for the
  rollback ring. Restores copy into the existing tensors, so identities (and anything
  holding them: fused optimizers, CUDA graphs, DDP buckets) survive.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["StepState", "capture", "capture_rng", "restore", "restore_rng"]


def capture_rng(*, host: bool = True) -> dict[str, Any]:
    """The torch CPU/CUDA generator states; python ``random`` and numpy too if ``host``."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():  # (never true without a CUDA device)
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if host:
        rng["python"] = random.getstate()
        rng["numpy"] = np.random.get_state()
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng:
        torch.cuda.set_rng_state_all(rng["cuda"])
    if "python" in rng:
        random.setstate(rng["python"])
    if "numpy" in rng:
        import numpy as np

        np.random.set_state(rng["numpy"])


class StepState:
    """Buffers and RNG at the start of a step, kept on the device."""

    def __init__(self, model: torch.nn.Module | None):
        self.model = model
        self.names: list[str] = []
        self.buffers: list[torch.Tensor] = []
        self.backup: list[torch.Tensor] = []
        self.rng: dict[str, Any] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the model's buffers (call when the model's structure may have changed)."""
        if self.model is None:
            return
        named = [(n, b) for n, b in self.model.named_buffers() if b is not None]
        if [id(b) for _, b in named] != [id(b) for b in self.buffers]:
            self.names = [n for n, _ in named]
            self.buffers = [b for _, b in named]
            self.backup = [b.detach().clone() for b in self.buffers]

    def save(self, *, host_rng: bool = False) -> None:
        if self.buffers:
            with torch.no_grad():
                torch._foreach_copy_(self.backup, self.buffers)
        self.rng = capture_rng(host=host_rng)

    def restore_buffers(self) -> None:
        if self.buffers:
            with torch.no_grad():
                torch._foreach_copy_(self.buffers, self.backup)

    def restore_rng(self) -> None:
        if self.rng is not None:
            restore_rng(self.rng)

    def buffer_dict(self) -> dict[str, torch.Tensor]:
        """The saved buffers as host tensors, by name."""
        return {
            n: b.detach().to("cpu", copy=True) for n, b in zip(self.names, self.backup, strict=True)
        }


def _host(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return (value.detach().to("cpu", copy=True), value.device)
    return copy.deepcopy(value)


def _device(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], torch.Tensor):
        return value[0].to(value[1], copy=True)
    return copy.deepcopy(value)


def capture(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    *,
    buffers: dict[str, torch.Tensor] | None = None,
    rng: dict[str, Any] | None = None,
    tracked: Sequence[Any] = (),
    scaler: Any = None,
) -> dict[str, Any]:
    """A host copy of the training state before a step.

    ``params``: the optimizer's parameters in a fixed order; ``buffers``: model buffers as
    they were at the start of the step; ``rng``: generator states from the start of the
    step (default: now); ``tracked``: schedulers and other objects with ``state_dict``.
    """
    state_of = optimizer.state
    opt_state = []
    for p in params:
        st = state_of.get(p)
        opt_state.append(None if st is None else {k: _host(v) for k, v in st.items()})
    groups = [
        {k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups
    ]
    snap: dict[str, Any] = {
        "params": [p.detach().to("cpu", copy=True) for p in params],
        "buffers": buffers or {},
        "optimizer": opt_state,
        "groups": groups,
        "tracked": [copy.deepcopy(obj.state_dict()) for obj in tracked],
        "rng": rng if rng is not None else capture_rng(),
    }
    if scaler is not None and getattr(scaler, "_scale", None) is not None:
        snap["scaler"] = {
            "scale": scaler._scale.detach().clone(),
            "growth": scaler._growth_tracker.detach().clone(),
        }
    return snap


def restore(
    snap: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    *,
    model: torch.nn.Module | None = None,
    tracked: Sequence[Any] = (),
    scaler: Any = None,
) -> None:
    """Put a :func:`capture` back, in place; raises if the parameters changed shape."""
    if len(snap["params"]) != len(params):
        raise ValueError(
            f"snapshot has {len(snap['params'])} parameters, the optimizer {len(params)}"
        )
    with torch.no_grad():
        for p, saved in zip(params, snap["params"], strict=True):
            p.copy_(saved)
        if model is not None and snap["buffers"]:
            live = dict(model.named_buffers())
            for name, saved in snap["buffers"].items():
                if live.get(name) is not None:
                    live[name].copy_(saved)
        for p, saved in zip(params, snap["optimizer"], strict=True):
            if saved is None:
                optimizer.state.pop(p, None)
                continue
            current = optimizer.state[p]
            for key in list(current):
                if key not in saved:
                    del current[key]
            for key, value in saved.items():
                old = current.get(key)
                if (
                    isinstance(old, torch.Tensor)
                    and isinstance(value, tuple)
                    and old.shape == value[0].shape
                    and old.dtype == value[0].dtype
                    and old.device == value[1]
                ):
                    old.copy_(value[0])
                else:
                    current[key] = _device(value)
    for group, saved in zip(optimizer.param_groups, snap["groups"], strict=True):
        group.update(copy.deepcopy(saved))
    # objects tracked after this snapshot was taken have nothing to go back to
    for obj, state in zip(tracked, snap["tracked"], strict=False):
        obj.load_state_dict(copy.deepcopy(state))
    if scaler is not None and "scaler" in snap and scaler._scale is not None:
        scaler._scale.copy_(snap["scaler"]["scale"])
        scaler._growth_tracker.copy_(snap["scaler"]["growth"])
    restore_rng(snap["rng"])
