"""Wires the guard into a Keras model on the torch backend for the length of one ``fit``.

The torch backend runs Keras' train step eagerly, so the gate is plain Python: the model's
optimizer instance gets an ``apply`` that measures the batch loss and the gradient norm in
one fused device read, and drops the update when either is non-finite (or the loss is over
the spike ceiling). The weight norm after the update stays on the device until the
callback reads it with Keras' own per-batch log read. For one ``fit`` the model also gets:

- ``compute_loss``: remembers the batch loss tensor (Keras logs carry the epoch's mean);
- ``train_step``: keeps the pre-step seed-generator states, metric values and the model's
  other non-trainable state (BatchNorm statistics), and puts them back when the update was
  dropped (a NaN never reaches the epoch mean or the moving statistics);
- ``train_function``: keeps a reference to the batch (no copy) for an exact replay.

Everything is removed again by ``uninstall``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from nantrap.keras._patches import ModelPatches
from nantrap.keras.reading import ProbeReading, StepRun
from nantrap.keras.state import is_seed_state, step_state
from nantrap.torch._snapshot import capture_rng, restore_rng

__all__ = ["TorchInstrument", "TorchProbe"]


class TorchProbe:
    """The eager gate around a Keras optimizer's ``apply`` and the step's numbers."""

    def __init__(self, optimizer: Any):
        self.optimizer = optimizer
        self.loss: torch.Tensor | None = None  # set by the instrument while a step runs
        self.applied = True
        self._ceiling = math.inf
        self._host: tuple[float, float] = (math.nan, math.nan)
        self._param_sq: torch.Tensor | None = None
        self._scale = math.nan
        self._steps = 0
        self._original: Any = None
        self.dropped: tuple[list[Any], Any] | None = None  # the last gated update

    @property
    def installed(self) -> bool:
        return "apply" in vars(self.optimizer)

    def install(self) -> None:
        self._original = self.optimizer.apply
        object.__setattr__(self.optimizer, "apply", self._apply)

    def uninstall(self) -> None:
        vars(self.optimizer).pop("apply", None)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The optimizer as the user made it (for an eager replay)."""
        patched = vars(self.optimizer).pop("apply", None)
        try:
            yield
        finally:
            if patched is not None:
                object.__setattr__(self.optimizer, "apply", patched)

    def apply_dropped(self) -> None:
        """Apply the update the gate dropped last (a ``warn`` decision lets it through)."""
        if self.dropped is not None:
            grads, variables = self.dropped
            self.dropped = None
            with torch.no_grad():
                self._original(grads, variables)

    def set_ceiling(self, value: float) -> None:
        """Losses above ``value`` are gated like non-finite ones (``inf``: off)."""
        self._ceiling = value

    def read(self) -> ProbeReading:
        """The last step's numbers (reads the weight norm: one small device read)."""
        loss, gsq = self._host
        psq = math.nan if self._param_sq is None else float(self._param_sq)
        return ProbeReading(
            loss=loss,
            grad_norm=math.sqrt(gsq) if gsq >= 0 else math.nan,
            param_norm=math.sqrt(psq) if psq >= 0 else math.nan,
            applied=self.applied,
            loss_scale=self._scale,
            steps=self._steps,
        )

    def _apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        grads = list(grads)
        variables = (
            list(trainable_variables)
            if trainable_variables is not None
            else list(self.optimizer._trainable_variables)
        )
        scale = getattr(self.optimizer, "dynamic_scale", None)
        loss = self.loss
        device = loss.device if isinstance(loss, torch.Tensor) else None
        with torch.no_grad():
            gsq = _sum_squares(grads, device)
            loss32 = (
                loss.detach().float().reshape(-1)[0]
                if isinstance(loss, torch.Tensor)
                else torch.tensor(math.nan, device=gsq.device)
            )
            numbers = [loss32, gsq]
            if scale is not None:
                numbers.append(scale.value.detach().float().reshape(()).to(gsq.device))
            host = torch.stack(numbers).tolist()  # NB: the one read the gate needs
        loss_v, gsq_v = host[0], host[1]
        self._scale = host[2] if scale is not None else math.nan
        self._host = (loss_v, gsq_v)
        self._steps += 1
        ok = scale is not None or math.isfinite(gsq_v)
        if loss is not None:
            ok = ok and math.isfinite(loss_v) and loss_v <= self._ceiling
        result = None
        self.applied = ok
        self.dropped = None if self.applied else (grads, trainable_variables)
        if self.applied:
            result = self._original(grads, trainable_variables)
        with torch.no_grad():
            self._param_sq = _sum_squares([v.value for v in variables], device)
        return result


class TorchInstrument(ModelPatches):
    """The probe and the patches of one model; see the module docstring."""

    def __init__(self, model: Any, *, on_error: Any = None):
        super().__init__(model, on_error=on_error)
        self.probe = TorchProbe(model.optimizer)
        self.optimizer_patch = self.probe
        self.last_batch: Any = None
        self.seed_vars = [v for v in model.variables if is_seed_state(v)]
        self.seed_prev: list[torch.Tensor] = []
        self.rng_prev: dict[str, Any] | None = None
        self.step_state = step_state(model)

    def _install_optimizer(self) -> None:
        if not self.optimizer.built:
            self.optimizer.build(self.model.trainable_variables)
        self.probe.install()

    @contextlib.contextmanager
    def paused(self, names: tuple[str, ...] = ("train_step",)) -> Iterator[None]:
        """The model's step and optimizer as the user made them (loss still remembered)."""
        with super().paused(names):
            yield

    def restore_seeds(self) -> None:
        """Put the seed generators and torch's generators back to where they were before
        the last step (unseeded Dropout on torch draws from torch's generator)."""
        for v, prev in zip(self.seed_vars, self.seed_prev, strict=False):
            v.assign(prev)
        if self.rng_prev is not None:
            restore_rng(self.rng_prev)

    def steps(self) -> list[StepRun]:
        """The step that just ran (the torch backend runs one step per call)."""
        data = self.last_batch
        if data is None:
            return [StepRun(self.probe.read())]
        return [
            StepRun(
                self.probe.read(),
                data,
                replay=lambda: self.replay(data),
                apply_dropped=self.probe.apply_dropped,
            )
        ]

    # replays ------------------------------------------------------------------------------
    def replay(self, data: Any) -> Any:
        """The failing batch's train step, eagerly, with the dropout masks it had; returns
        its loss tensor (the tracer follows the NaN back from it and from the gradients)."""
        self.restore_seeds()
        self.probe.loss = None
        with self.paused():
            self.model.train_step(data)
        return self.probe.loss

    # the patched pieces ---------------------------------------------------------------
    def _train_function(self, data: Any) -> Any:
        self.last_batch = data[0] if isinstance(data, (list, tuple)) and len(data) == 1 else data
        return self._orig_function(data)

    def _train_step(self, data: Any) -> Any:
        self.rng_prev = capture_rng(host=False)
        with torch.no_grad():
            self.seed_prev = [v.value.detach().clone() for v in self.seed_vars]
            kept = [*getattr(self.model, "metrics_variables", ()), *self.step_state]
            before = [v.value.detach().clone() for v in kept]
        self.probe.loss = None
        self.probe.applied = True
        logs = type(self.model).train_step(self.model, data)
        if self.probe.applied or not kept:
            return logs
        for v, value in zip(kept, before, strict=True):
            v.assign(value)
        if isinstance(logs, dict) and hasattr(self.model, "get_metrics_result"):
            fresh = self.model.get_metrics_result()
            if set(fresh) == set(logs):
                return fresh
        return logs

    def _remember_loss(self, loss: Any) -> None:
        self.probe.loss = loss


def _sum_squares(tensors: list[Any], device: Any = None) -> torch.Tensor:
    """Sum of squares of every element, in float32 (NaN/Inf propagate): one fused norm."""
    floats = [t for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not floats:
        return torch.zeros((), device=device)
    norms = torch._foreach_norm(floats)
    return torch.stack([n.float() for n in norms]).square().sum()
