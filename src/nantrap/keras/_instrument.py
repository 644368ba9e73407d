"""Wires the in-graph probe into a compiled Keras model for the length of one ``fit``.

For one ``fit`` the model's instance gets (and loses again on ``uninstall``):

- ``optimizer.apply``: the update runs inside :meth:`Probe.guarded_apply` (gate + numbers);
- ``compute_loss``: remembers the batch loss tensor for the gate (Keras logs carry only the
  epoch's running mean);
- ``train_step``: keeps the pre-step seed-generator states, metric values and other
  non-trainable state (BatchNorm statistics) in the graph, and puts them back when the update
  was dropped (a NaN never reaches the epoch mean or the moving statistics);
- ``train_function``: takes the batch from the iterator on the host and hands it to Keras'
  own compiled step, keeping a reference (no copy) for an exact replay of a failing step.

Nothing else of the model or the user's code changes; XLA (``jit_compile=True``) works since
the compiled step only sees fixed-shape reductions, a ``tf.cond`` and small assigns.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from nantrap.keras.state import is_seed_state, step_state
from nantrap.tf.probe import OptimizerPatch, Probe

__all__ = ["Instrument"]

_PATCHED = ("train_step", "compute_loss")
SAMPLE_ROWS = 16  # rows of the batch an early-warning sample traces


class Instrument:
    """The probe and the patches of one model; see the module docstring."""

    def __init__(self, model: Any, *, gate: bool = True):
        self.model = model
        self.optimizer = model.optimizer
        self.gate = gate
        self.probe = Probe()
        self.patch = OptimizerPatch(model.optimizer, self.probe, gate=gate, loss=lambda: self._loss)
        self.last_batch: Any = None
        self.has_loss = False
        self._loss: Any = None
        self._installed = False
        self._orig_function: Any = None
        self.seed_vars = [v for v in model.variables if is_seed_state(v)]
        self.seed_prev = [
            tf.Variable(tf.convert_to_tensor(v), trainable=False) for v in self.seed_vars
        ]
        self.metric_vars = [*getattr(model, "metrics_variables", ()), *step_state(model)]

    # install / uninstall ------------------------------------------------------------
    def install(self) -> Instrument:
        model = self.model
        self.patch.install(model.trainable_variables)
        object.__setattr__(model, "train_step", self._train_step)
        object.__setattr__(model, "compute_loss", self._compute_loss(model.compute_loss))
        self._installed = True
        self.rebuild()
        return self

    def rebuild(self) -> None:
        """Recompile Keras' train function over the patched step (after an LR schedule
        change, for instance)."""
        self.model.make_train_function(force=True)
        self._orig_function = self.model.train_function
        self.model.train_function = self._train_function

    def uninstall(self) -> None:
        if not self._installed:
            return
        self._installed = False
        for name in _PATCHED:
            vars(self.model).pop(name, None)
        self.patch.uninstall()
        self.model.train_function = None  # the next fit compiles an unpatched step

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The model and optimizer as the user made them (for an eager replay)."""
        saved = {n: vars(self.model).pop(n) for n in _PATCHED if n in vars(self.model)}
        try:
            with self.patch.paused():
                yield
        finally:
            for name, fn in saved.items():
                object.__setattr__(self.model, name, fn)

    def replay(self, data: Any) -> Any:
        """The failing batch's train step, eagerly, with the dropout masks it had."""
        self.restore_seeds()
        with self.paused():
            return self.model.train_step(data)

    def sample(self, data: Any) -> Any:
        """What the early warnings trace: the forward pass and loss of the first
        ``SAMPLE_ROWS`` rows of the batch (no gradient, no update); returns the loss."""
        from keras.src.trainers.data_adapters.data_adapter_utils import (
            unpack_x_y_sample_weight,
        )

        x, y, sample_weight = unpack_x_y_sample_weight(_head(data, SAMPLE_ROWS))
        self.restore_seeds()
        with self.paused():
            y_pred = self.model(x, training=True)
            return self.model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )

    def restore_seeds(self) -> None:
        """Put the seed generators back to where they were before the last step."""
        for v, prev in zip(self.seed_vars, self.seed_prev, strict=True):
            v.assign(prev)

    # the patched pieces ---------------------------------------------------------------
    def _train_function(self, iterator: Any) -> Any:
        n = max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1)
        batch = list(itertools.islice(iterator, n))
        if not batch:
            raise StopIteration
        self.last_batch = batch[-1]
        return self._orig_function(iter(batch))

    def _train_step(self, data: Any) -> Any:
        for v, prev in zip(self.seed_vars, self.seed_prev, strict=True):
            prev.assign(v)
        before = [tf.identity(v) for v in self.metric_vars]
        self._loss = None
        self.patch.applied = None
        logs = type(self.model).train_step(self.model, data)
        applied = self.patch.applied
        if applied is None or not self.metric_vars:
            return logs

        def _undo() -> tf.Tensor:
            for v, value in zip(self.metric_vars, before, strict=True):
                v.assign(value)
            return tf.constant(False)

        restored = tf.cond(applied, lambda: tf.constant(True), _undo)
        if isinstance(logs, dict) and hasattr(self.model, "get_metrics_result"):
            with tf.control_dependencies([restored]):
                fresh = self.model.get_metrics_result()
            if set(fresh) == set(logs):
                return fresh
        return logs

    def _compute_loss(self, compute_loss: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            loss = compute_loss(*args, **kwargs)
            self._loss = loss
            self.has_loss = True
            return loss

        return wrapped


def _head(data: Any, rows: int) -> Any:
    """The first ``rows`` rows of every batched tensor in ``data``."""

    def cut(t: Any) -> Any:
        shape = getattr(t, "shape", None)
        return t[:rows] if shape is not None and shape.rank else t

    return tf.nest.map_structure(cut, data)
