"""The torch side of :class:`~nantrap.keras.guard.KerasGuard` (Keras 3 on the torch
backend): the PyTorch guard's own op tracer and early warnings, told which Keras layer
runs each op.

Keras layers on the torch backend are ``torch.nn.Module``s that ``named_modules()`` does
not list (their weights live in the model's ``_torch_params``), so the tracer gets the
layers and the weights' Keras names explicitly.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from nantrap.findings import Diagnosis
from nantrap.keras._layers import layer_names
from nantrap.keras.guard import Warnings
from nantrap.torch._snapshot import capture_rng, restore_rng
from nantrap.torch.early_warnings import EarlyWarnings
from nantrap.torch.localize import explain
from nantrap.torch.trace import OpTrace

__all__ = ["TorchBackend"]


class TorchBackend:
    """Op-level replays and in-step early warnings for a Keras model on torch.

    Args:
        model: the Keras model (a ``torch.nn.Module`` on this backend).
        every: sample one training step in ``every`` for early warnings (0: never).
        saturation / clipped: shares of saturated activations / clipped elements that make
            an early warning.
    """

    def __init__(self, model: Any, *, every: int, saturation: float = 0.01, clipped: float = 0.05):
        self.model = model
        names = layer_names(model)
        self.modules = [("model", model), *((n.path, n.layer) for n in names)]
        self.indices = {n.path: n.index for n in names if n.index}
        self.leaf_names = {
            id(v.value): f"parameter {v.path}" for v in model.variables if hasattr(v, "value")
        }
        self.warnings = (
            EarlyWarnings(
                model,
                every=every,
                saturation=saturation,
                clip=min(clipped, 0.999),
                modules=self.modules,
            )
            if every > 0
            else None
        )

    @contextlib.contextmanager
    def tracing(self, inputs: Any) -> Iterator[OpTrace]:
        trace = OpTrace(self.model, modules=self.modules, leaf_names=self.leaf_names)
        held = self.warnings.held() if self.warnings is not None else contextlib.nullcontext()
        with held, trace:
            yield trace

    def explain(self, trace: OpTrace, result: Any, *, step: int) -> Diagnosis | None:
        found = explain(trace, result, self.model, step=step)
        if found is None:
            return None
        evidence = dict(found.evidence)
        index = self.indices.get(found.module or "")
        if index:
            evidence["layer"] = index
        return dataclasses.replace(found, evidence=evidence)

    def end_step(
        self,
        step: int,
        *,
        clean: bool,
        sample: Callable[[], Any] | None,
        inputs: Any,
        step_time: float,
        replay: Callable[[Callable[[], Any], Any], Any],
    ) -> Warnings:
        if self.warnings is None:
            return [], {}
        sampled = self.warnings.sampling
        found = self.warnings.end_step(step)
        if not (clean and sampled):
            return [], {}
        return found, dict(self.warnings.ranges)

    def flat_weights(self, variables: Sequence[Any]) -> np.ndarray:
        with torch.no_grad():
            flat = torch.cat([v.value.detach().reshape(-1).float() for v in variables])
        return flat.cpu().numpy()

    def capture_rng(self) -> dict[str, Any]:
        return capture_rng(host=False)  # unseeded Dropout on torch draws from these

    def restore_rng(self, state: dict[str, Any]) -> None:
        restore_rng(state)

    def close(self) -> None:
        if self.warnings is not None:
            self.warnings.close()
