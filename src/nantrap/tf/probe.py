"""In-graph, per-step measurements of a TensorFlow training step, fused into one small
variable that the host reads once per step; and the gate that drops a non-finite update.

Works inside ``tf.function`` and under XLA (``jit_compile=True``): only fixed-shape
reductions, a ``tf.cond`` around the optimizer update and one assign to a float32[6]
variable. The cost is two reductions over the parameters and gradients, no activation is
scanned.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from nantrap.keras.reading import ProbeReading

__all__ = ["FIELDS", "OptimizerPatch", "Probe", "ProbeReading", "sum_squares"]

FIELDS = ("loss", "grad_norm", "param_norm", "applied", "loss_scale", "steps")


def sum_squares(tensors: Sequence[Any]) -> tf.Tensor:
    """Sum of squares of every element, in float32 (NaN/Inf propagate)."""
    parts = [
        tf.reduce_sum(tf.square(tf.cast(t, tf.float32)))
        for t in tensors
        if t is not None and t.dtype.is_floating
    ]
    return tf.add_n(parts) if parts else tf.constant(0.0)


class Probe:
    """The measurement variable, a loss ceiling (in-graph spike gate) and the guarded update.

    ``guarded_apply`` is called where the optimizer update would be, inside the user's
    (possibly compiled) step; ``read()`` is called on the host after the step.
    """

    def __init__(self) -> None:
        self.values = tf.Variable(
            tf.fill([len(FIELDS)], math.nan), trainable=False, name="nantrap_probe"
        )
        self.ceiling = tf.Variable(math.inf, trainable=False, name="nantrap_loss_ceiling")
        self._ceiling = math.inf  # host copy: no device read per step

    def guarded_apply(
        self,
        apply: Callable[[], Any],
        grads: Sequence[Any],
        variables: Sequence[Any],
        *,
        loss: Any = None,
        gate: bool = True,
        loss_scale: Any = None,
    ) -> tf.Tensor:
        """Run ``apply()`` only if the gradients (and ``loss``) are finite and the loss is
        under the ceiling (when ``gate``); record the step; return whether it was applied.

        With ``loss_scale`` (a loss-scale optimizer, which skips overflowing steps and
        lowers its scale by itself) non-finite gradients are left to it; only the loss and
        the ceiling gate the update.
        """
        scale = tf.constant(math.nan) if loss_scale is None else tf.cast(loss_scale, tf.float32)
        gsq = sum_squares(grads)
        ok = tf.math.is_finite(gsq) if loss_scale is None else tf.constant(True)
        loss32 = tf.constant(math.nan) if loss is None else tf.cast(loss, tf.float32)
        if loss is not None:
            ok = tf.logical_and(ok, tf.math.is_finite(loss32))
            ok = tf.logical_and(ok, loss32 <= self.ceiling)
        if gate:

            def _apply() -> tf.Tensor:
                apply()
                return tf.constant(True)

            applied = tf.cond(ok, _apply, lambda: tf.constant(False))
        else:
            apply()
            applied = tf.constant(True)
        with tf.control_dependencies([applied]):
            psq = sum_squares([tf.convert_to_tensor(v) for v in variables])
        steps = self.values[5]
        steps = tf.where(tf.math.is_finite(steps), steps, 0.0) + 1.0
        self.values.assign(
            tf.stack(
                [loss32, tf.sqrt(gsq), tf.sqrt(psq), tf.cast(applied, tf.float32), scale, steps]
            )
        )
        return applied

    def read(self) -> ProbeReading:
        v = np.asarray(self.values.numpy(), dtype=np.float64)
        return ProbeReading(
            loss=float(v[0]),
            grad_norm=float(v[1]),
            param_norm=float(v[2]),
            applied=bool(v[3] > 0.5),
            loss_scale=float(v[4]),
            steps=int(v[5]) if math.isfinite(v[5]) else 0,
        )

    def set_ceiling(self, value: float) -> None:
        """Losses above ``value`` are gated like non-finite ones (``inf``: off)."""
        if value != self._ceiling:
            self.ceiling.assign(value)
            self._ceiling = value


class OptimizerPatch:
    """Routes a Keras optimizer's ``apply`` (hence ``apply_gradients``) through
    :meth:`Probe.guarded_apply`, on this optimizer instance only, until ``uninstall``.

    ``loss`` returns the step's loss tensor while the step is traced (or None).
    """

    def __init__(
        self,
        optimizer: Any,
        probe: Probe,
        *,
        gate: bool = True,
        loss: Callable[[], Any] | None = None,
    ):
        self.optimizer = optimizer
        self.probe = probe
        self.gate = gate
        self.loss = loss or (lambda: None)
        self.applied: Any = None  # the last traced "applied" flag
        self._original: Any = None

    @property
    def installed(self) -> bool:
        return "apply" in vars(self.optimizer)

    def install(self, variables: Sequence[Any] = ()) -> None:
        """Patch ``apply``; build the optimizer first (its slots cannot be created inside
        the gate's ``tf.cond``)."""
        if not self.optimizer.built:
            self.optimizer.build(list(variables))
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

    def _apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        grads = list(grads)
        variables = (
            list(trainable_variables)
            if trainable_variables is not None
            else list(self.optimizer._trainable_variables)
        )
        original = self._original
        self.applied = self.probe.guarded_apply(
            lambda: original(grads, trainable_variables),
            grads,
            variables,
            loss=self.loss(),
            gate=self.gate,
            loss_scale=getattr(self.optimizer, "dynamic_scale", None),
        )
        return self.applied
