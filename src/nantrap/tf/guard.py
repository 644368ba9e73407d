"""The TensorFlow backend of the Keras guard, and the guard for custom ``tf.GradientTape``
training steps.

:class:`TFBackend` gives :class:`~nantrap.keras.guard.KerasGuard` its TensorFlow parts:
eager op-by-op replays under :class:`~nantrap.tf.trace.OpTrace` for localization, early
warnings from sampled replays within a time budget, and a fused weight read.
:func:`guard_step` decorates a custom step: the optimizer's update is gated in the graph by
the :class:`~nantrap.tf.probe.Probe`, and the guard judges each call.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nantrap.errors import ConfigError
from nantrap.findings import Diagnosis
from nantrap.guard.config import GuardConfig
from nantrap.keras.guard import KerasGuard, Warnings, check_shares
from nantrap.tf.early_warnings import early_warnings, layer_ranges
from nantrap.tf.localize import explain
from nantrap.tf.probe import OptimizerPatch, Probe
from nantrap.tf.trace import OpTrace

__all__ = ["StepGuard", "TFBackend", "guard_step", "make_guard"]


class TFBackend:
    """The TensorFlow side of :class:`~nantrap.keras.guard.KerasGuard`: eager op-by-op
    replays under :class:`~nantrap.tf.trace.OpTrace` (XLA steps replay without XLA), and
    early warnings from sampled replays within a share of the training time.

    Args:
        model: the Keras model (names layers in traces).
        every: sample a replay for early warnings at most every ``every`` steps (0: never).
        saturation / clipped: shares of saturated activations / clipped elements that make
            an early warning.
        warning_budget: the share of training time sampled replays may use.
    """

    def __init__(
        self,
        model: Any,
        *,
        every: int,
        saturation: float = 0.01,
        clipped: float = 0.05,
        warning_budget: float = 0.02,
    ):
        check_shares(saturation=saturation, clipped=clipped, warning_budget=warning_budget)
        self.model = model
        self.every = every
        self.saturation = float(saturation)
        self.clipped = float(clipped)
        self.warning_budget = float(warning_budget)
        self._next_warning = every
        self._flatten: Callable[[], Any] | None = None

    def tracing(self, inputs: Any) -> OpTrace:
        return OpTrace(self.model, inputs=inputs)

    def explain(self, trace: OpTrace, result: Any, *, step: int) -> Diagnosis | None:
        return explain(trace, step=step)

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
        if not clean or sample is None or step < self._next_warning:
            return [], {}
        start = time.perf_counter()
        trace = replay(sample, inputs)
        cost = time.perf_counter() - start
        found = early_warnings(
            trace,
            step=step,
            saturation=self.saturation,
            clipped=self.clipped,
            loss=_loss_tensor(trace.result),
        )
        step_time = step_time if math.isfinite(step_time) else cost
        budget = max(self.warning_budget, 1e-6) * max(step_time, 1e-9)
        self._next_warning = step + max(self.every, math.ceil(cost / budget))
        return found, layer_ranges(trace)

    def flat_weights(self, variables: Sequence[Any]) -> np.ndarray:
        if self._flatten is None:
            weights = list(variables)
            self._flatten = tf.function(
                lambda: tf.concat([tf.reshape(tf.cast(w, tf.float32), [-1]) for w in weights], 0)
            )
        return self._flatten().numpy()

    def capture_rng(self) -> None:
        return None  # Keras on TensorFlow draws from SeedGenerator variables, snapshotted

    def restore_rng(self, state: Any) -> None:
        return None

    def close(self) -> None:
        self._flatten = None


def make_guard(
    config: GuardConfig,
    *,
    model: Any,
    optimizer: Any,
    framework: str,
    saturation: float = 0.01,
    clipped: float = 0.05,
    warning_budget: float = 0.02,
    extra_state: Callable[[], Sequence[Any]] | None = None,
    on_rebuild: Callable[[], None] | None = None,
) -> KerasGuard:
    """A :class:`~nantrap.keras.guard.KerasGuard` over the TensorFlow backend."""
    backend = TFBackend(
        model,
        every=config.early_warnings,
        saturation=saturation,
        clipped=clipped,
        warning_budget=warning_budget,
    )
    return KerasGuard(
        config,
        backend=backend,
        model=model,
        optimizer=optimizer,
        framework=framework,
        extra_state=extra_state,
        on_rebuild=on_rebuild,
    )


# --- custom GradientTape loops ------------------------------------------------------------


class StepGuard:
    """The guard of a custom training step; made by :func:`guard_step`, used as a decorator.

    The decorated step runs as before (compiled or not) with the optimizer's update gated
    in the graph; after each call the guard judges the step, and on an incident replays it
    eagerly with the same arguments to name the first bad op. ``stopped`` turns True when
    the policy stops training (the loop should break). ``diagnoses`` and ``events`` hold
    what was found.
    """

    def __init__(self, model: Any, optimizer: Any, config: GuardConfig, **guard_options: Any):
        self.probe = Probe()
        self._loss: Any = None
        self.patch = OptimizerPatch(
            optimizer, self.probe, gate=config.policy != "warn", loss=lambda: self._loss
        )
        self.guard = make_guard(
            config, model=model, optimizer=optimizer, framework="tensorflow", **guard_options
        )
        self._started = False

    @property
    def diagnoses(self) -> list[Diagnosis]:
        return list(self.guard.engine.diagnoses)

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.guard.engine.log.records)

    @property
    def stopped(self) -> bool:
        return self.guard.stopped

    def __call__(self, step_fn: Callable[..., Any]) -> Callable[..., Any]:
        if not self.patch.installed:
            self.patch.install(self.guard.model.trainable_variables)

        @functools.wraps(step_fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not self._started:
                self.guard.start()
                self._started = True
            self.probe.set_ceiling(self.guard.ceiling())
            self._loss = None
            with _tape_targets(self._remember_loss):
                result = step_fn(*args, **kwargs)
            loss = _loss_of(result)

            def replay() -> None:
                with self.patch.paused():
                    step_fn(*args, **kwargs)

            try:
                self.guard.after_step(
                    self.probe.read(),
                    has_loss=loss is not None,
                    loss=loss,
                    replay=replay,
                    inputs=(args, kwargs),
                )
            except BaseException:
                self.close("error")
                raise
            return result

        guarded.guard = self  # type: ignore[attr-defined]
        return guarded

    def _remember_loss(self, target: Any) -> None:
        if self._loss is None and _is_scalar_float(target):
            self._loss = target

    def close(self, status: str | None = None) -> None:
        """Remove the optimizer patch and end the event log."""
        self.patch.uninstall()
        if self._started:
            self.guard.close(status)

    def __enter__(self) -> StepGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close("error" if exc[0] is not None else None)


def guard_step(
    model: Any,
    optimizer: Any,
    *,
    policy: str = "rollback",
    log_dir: Any = None,
    saturation: float = 0.01,
    clipped: float = 0.05,
    warning_budget: float = 0.02,
    **options: Any,
) -> StepGuard:
    """Guard a custom ``tf.GradientTape`` training step.

    >>> guard = nantrap.tf.guard_step(model, optimizer, policy="rollback")  # doctest: +SKIP
    >>> @guard
    ... @tf.function(jit_compile=True)
    ... def train_step(x, y):
    ...     with tf.GradientTape() as tape:
    ...         loss = loss_fn(y, model(x, training=True))
    ...     grads = tape.gradient(loss, model.trainable_variables)
    ...     optimizer.apply_gradients(zip(grads, model.trainable_variables))
    ...     return loss
    >>> for x, y in dataset:
    ...     train_step(x, y)
    ...     if guard.stopped:
    ...         break

    Decorate before the step's first call (its graph must be traced with the gate in it).
    The step should return the loss (a scalar, or a dict/tuple whose ``loss``/first item
    is); options are those of :class:`nantrap.keras.NanTrap`. ``guard.close()`` (or
    ``with guard:``) ends the event log.
    """
    config = GuardConfig.from_options(policy=policy, log_dir=log_dir, **options)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ConfigError(
            f"guard_step needs a Keras 3 optimizer (keras.optimizers.*), got "
            f"{type(optimizer).__name__}"
        )
    return StepGuard(
        model,
        optimizer,
        config,
        saturation=saturation,
        clipped=clipped,
        warning_budget=warning_budget,
    )


@contextlib.contextmanager
def _tape_targets(remember: Callable[[Any], None]) -> Iterator[None]:
    """While the guarded step runs (and is traced), hand each ``GradientTape.gradient``
    target to ``remember``: the first scalar one is the loss the gate checks."""
    original = tf.GradientTape.gradient

    @functools.wraps(original)
    def gradient(tape: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
        remember(target)
        return original(tape, target, *args, **kwargs)

    tf.GradientTape.gradient = gradient
    try:
        yield
    finally:
        tf.GradientTape.gradient = original


def _is_scalar_float(t: Any) -> bool:
    dtype = getattr(t, "dtype", None)
    shape = getattr(t, "shape", None)
    return (
        bool(getattr(dtype, "is_floating", False))
        and shape is not None
        and (shape.num_elements() == 1)
    )


def _loss_tensor(result: Any) -> Any:
    """The scalar loss tensor in a step's return value, or None."""
    if isinstance(result, dict):
        result = result.get("loss")
    elif isinstance(result, (tuple, list)) and result:
        result = result[0]
    return result if _is_scalar_float(result) else None


def _loss_of(result: Any) -> float | None:
    """The scalar loss in a step's return value, or None."""
    if isinstance(result, dict):
        result = result.get("loss")
    elif isinstance(result, (tuple, list)) and result:
        result = result[0]
    if result is None or not hasattr(result, "dtype") or not result.dtype.is_floating:
        return None
    if result.shape.num_elements() != 1:
        return None
    return float(np.asarray(result).reshape(-1)[0])
