"""The TensorFlow training guard: drives the framework-neutral
:class:`~nantrap.guard.engine.GuardEngine` from the probe's per-step numbers.

:class:`TFGuard` is shared by the Keras callback (``nantrap.keras.NanTrap``) and by
:func:`guard_step`, the decorator for custom ``tf.GradientTape`` loops. Per step it reads
the probe (one small host read), classifies the step, and on an incident replays the step
eagerly under :class:`~nantrap.tf.trace.OpTrace` (state is captured before and restored
after, bit-exactly), diagnoses the first bad op and acts by policy. Sampled replays of
clean steps give the early warnings (saturation, clip trap) within a time budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nantrap.errors import ConfigError
from nantrap.findings import Diagnosis, Phase
from nantrap.guard.config import GuardConfig
from nantrap.guard.engine import GuardEngine, Observation, Problem
from nantrap.guard.history import Spike
from nantrap.guard.policy import Action, Decision
from nantrap.tf._health import worth_snapshot
from nantrap.tf.early_warnings import early_warnings, layer_ranges
from nantrap.tf.localize import explain
from nantrap.tf.probe import OptimizerPatch, Probe, ProbeReading
from nantrap.tf.snapshot import VariableState, keras_state_variables
from nantrap.tf.trace import OpTrace

__all__ = ["StepGuard", "TFGuard", "guard_step"]


class TFGuard:
    """One guarded TF/Keras run: the engine, the snapshots and the per-step decisions.

    Args:
        config: the guard options.
        model: the Keras model (or any object with ``variables``/``trainable_variables``).
        optimizer: a Keras optimizer.
        framework: written to ``events.jsonl`` (``keras`` or ``tensorflow``).
        extra_state: returns the variables put back after a replay but not part of snapshots
            (metrics; asked at each replay, since Keras builds compiled metrics lazily).
        on_rebuild: called when a compiled step must be retraced (a scaled LR schedule).
    """

    def __init__(
        self,
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
    ):
        check_shares(saturation=saturation, clipped=clipped, warning_budget=warning_budget)
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.saturation = float(saturation)
        self.clipped = float(clipped)
        self.warning_budget = float(warning_budget)
        self.on_rebuild = on_rebuild
        self.state = VariableState(keras_state_variables(model, optimizer))
        self._trainable = list(model.trainable_variables)
        self._flatten: Callable[[], Any] | None = None
        self._lr: float | None = None
        self._lr_step = 0
        self._extra_state = extra_state or (lambda: ())
        self.engine = GuardEngine(
            config,
            framework=framework,
            restore=self._restore,
            lrs=self._lrs,
            scale_lr=self._scale_lr,
        )
        self._param_norm = math.nan
        self._ratio_ref: list[np.ndarray] | None = None
        self._ratio_norm = math.nan
        self._next_warning = config.early_warnings
        self._warned: set[tuple[str, str | None, str | None]] = set()
        self._step_time = math.nan
        self._last_end = math.nan
        self._muted = False
        self._in_spike = False
        self.scale_skips = 0  # steps a loss-scale optimizer skipped on its own
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.engine.start(
            model=type(self.model).__name__,
            optimizer=type(self.optimizer).__name__,
            argv=list(sys.argv),
        )
        self._param_norm = _norm(self._trainable)
        self.engine.take_snapshot(self.state.capture())
        self._last_end = time.perf_counter()

    def close(self, status: str | None = None) -> None:
        """Write the ``end`` record (once) and close the log."""
        if self._closed:
            return
        self._closed = True
        records = self.engine.log.records
        if not records or records[-1].get("type") != "end":
            self.engine.end(status)
        self.engine.log.close()

    @property
    def stopped(self) -> bool:
        return self.engine.stopped

    # -- per step -------------------------------------------------------------------------
    def after_step(
        self,
        reading: ProbeReading,
        *,
        has_loss: bool,
        loss: float | None = None,
        replay: Callable[[], Any] | None = None,
        inputs: Any = None,
        sample: Callable[[], Any] | None = None,
    ) -> Decision | None:
        """Judge one finished step. ``replay()`` re-runs it eagerly (no patches) for
        localization; ``sample()`` (default: ``replay``) is the cheaper run the early
        warnings trace, returning the loss; ``inputs`` names the batch's tensors."""
        now = time.perf_counter()
        elapsed, self._last_end = now - self._last_end, now
        loss_value = reading.loss if loss is None else float(loss)
        grad_norm = reading.grad_norm
        if math.isfinite(reading.loss_scale) and reading.loss_scale > 0:
            grad_norm /= reading.loss_scale  # a loss-scale optimizer: its gradients are scaled
            if not math.isfinite(grad_norm) and (not has_loss or math.isfinite(loss_value)):
                self.scale_skips += 1  # it skipped this overflowing step and lowered its scale
                return None
        obs = Observation(
            loss=loss_value if has_loss else math.nan,
            has_loss=has_loss,
            grad_norm=grad_norm,
            param_norm=self._param_norm,
            loss_scale=reading.loss_scale,
        )
        problem = self.engine.classify(obs)
        corrupt_after = reading.applied and not math.isfinite(reading.param_norm)
        if self._muted:
            if problem is Problem.CORRUPT_STATE or corrupt_after:
                return None
            self._muted = False
        if problem is None and not corrupt_after:
            self._in_spike = False
            self._clean_step(obs, reading.param_norm, elapsed, sample or replay, inputs)
            return None
        if isinstance(problem, Spike):
            return self._spike(problem, obs, reading)
        return self._incident(problem, obs, reading, corrupt_after, replay, inputs)

    def _clean_step(
        self,
        obs: Observation,
        param_norm: float,
        elapsed: float,
        replay: Callable[[], Any] | None,
        inputs: Any,
    ) -> None:
        engine = self.engine
        self._step_time = (
            elapsed if math.isnan(self._step_time) else 0.9 * self._step_time + 0.1 * elapsed
        )
        obs = dataclasses.replace(obs, update_ratio=self._update_ratio(engine.step))
        ranges = self._early_warnings(engine.step, replay, inputs)
        engine.after_update(obs, ranges=ranges or None)
        self._param_norm = param_norm
        if engine.snapshot_due() and worth_snapshot(engine.history):
            engine.take_snapshot(self.state.capture())

    def _spike(self, spike: Spike, obs: Observation, reading: ProbeReading) -> Decision | None:
        if self._in_spike and self.config.on_spike == "warn":
            decision = None  # one warning per run of consecutive spikes
        else:
            decision = self.engine.handle_spike(spike)
        self._in_spike = True
        if decision is None:
            if reading.applied:
                self.engine.after_update(obs)
                self._param_norm = reading.param_norm
            return None
        self._carry_out(decision)
        return decision

    def _incident(
        self,
        problem: Any,
        obs: Observation,
        reading: ProbeReading,
        corrupt_after: bool,
        replay: Callable[[], Any] | None,
        inputs: Any,
    ) -> Decision:
        engine = self.engine
        state_corrupt = problem is Problem.CORRUPT_STATE or corrupt_after
        if problem is Problem.CORRUPT_STATE:
            what = "non-finite weights before the update"
        elif corrupt_after:
            what = "non-finite weights after the update"
        elif obs.has_loss and not math.isfinite(obs.loss):
            what = "non-finite loss"
        else:
            what = "non-finite gradients"
        update_overflow = corrupt_after and reading.grads_finite
        localized = None
        if self.config.localize and replay is not None and not update_overflow:
            trace = self.replay(replay, inputs)
            localized = explain(trace, step=engine.step) if trace is not None else None
        diagnosis = engine.explain(
            what=what,
            localized=localized,
            phase=localized.phase if localized is not None else Phase.UPDATE,
            force_divergence=update_overflow,
            reason="the eager replay of the step ran finite" if replay is not None else "",
        )
        decision = engine.act(diagnosis, state_corrupt=state_corrupt)
        if decision.action is Action.WARN and state_corrupt:
            self._muted = True  # one warning, not one per step of a dead run
        self._carry_out(decision)
        return decision

    def _carry_out(self, decision: Decision) -> None:
        if decision.action in (Action.ROLLBACK, Action.STOP):
            self._param_norm = _norm(self._trainable)
            self._ratio_ref = None

    # -- replays ----------------------------------------------------------------------------
    def replay(self, run: Callable[[], Any], inputs: Any = None) -> OpTrace:
        """Run ``run()`` eagerly under the op tracer; every variable is put back after.
        ``trace.result`` is what ``run()`` returned."""
        state = VariableState([*self.state.variables, *self._extra_state()])
        saved = state.capture()
        try:
            with OpTrace(self.model, inputs=inputs) as trace:
                trace.result = run()
        finally:
            state.restore(saved)
        return trace

    def _early_warnings(
        self, step: int, replay: Callable[[], Any] | None, inputs: Any
    ) -> dict[str, dict[str, float]]:
        every = self.config.early_warnings
        if every <= 0 or replay is None or step < self._next_warning:
            return {}
        start = time.perf_counter()
        trace = self.replay(replay, inputs)
        cost = time.perf_counter() - start
        loss = _loss_tensor(trace.result)
        for d in early_warnings(
            trace, step=step, saturation=self.saturation, clipped=self.clipped, loss=loss
        ):
            key = (d.code, d.module, d.op)
            if key not in self._warned:
                self._warned.add(key)
                self.engine.warn(d)
        step_time = self._step_time if math.isfinite(self._step_time) else cost
        budget = max(self.warning_budget, 1e-6) * max(step_time, 1e-9)
        self._next_warning = step + max(every, math.ceil(cost / budget))
        return layer_ranges(trace)

    # -- measurements -----------------------------------------------------------------------
    def _update_ratio(self, step: int) -> float:
        """|dw| / |w| of the update just applied, measured every ``ratio_every`` steps from
        two host copies of the weights (one fused read each)."""
        every = self.config.ratio_every
        if every <= 0:
            return math.nan
        ratio = math.nan
        if self._ratio_ref is not None:
            delta = float(np.linalg.norm(self._flat_weights() - self._ratio_ref))
            ratio = delta / self._ratio_norm if self._ratio_norm > 0 else math.nan
            self._ratio_ref = None
        if step % every == 0:
            self._ratio_ref = self._flat_weights()
            self._ratio_norm = float(np.linalg.norm(self._ratio_ref))
        return ratio

    def _flat_weights(self) -> np.ndarray:
        """Every trainable weight in one float32 vector: one device read, not one per tensor."""
        if self._flatten is None:
            weights = list(self._trainable)
            self._flatten = tf.function(
                lambda: tf.concat([tf.reshape(tf.cast(w, tf.float32), [-1]) for w in weights], 0)
            )
        return self._flatten().numpy()

    def ceiling(self) -> float:
        """The loss above which a step is a spike (``inf`` before the warm-up is over)."""
        ema, cfg = self.engine.history.loss_ema, self.config
        if cfg.on_spike not in ("skip", "policy") or ema.count < max(cfg.spike_warmup, 2):
            return math.inf
        return ema.mean + max(cfg.spike_sigma * ema.std, (cfg.spike_ratio - 1.0) * abs(ema.mean))

    def _restore(self, state: Any) -> None:
        self.state.restore(state)
        self._lr = None

    # -- learning rate ----------------------------------------------------------------------
    def _lrs(self) -> list[float]:
        """The LR, read from the device every ``ratio_every`` steps (and after every change
        the guard makes); a schedule's value may lag that many steps in the history."""
        step = self.engine.step if hasattr(self, "engine") else 0
        if self._lr is None or step - self._lr_step >= max(self.config.ratio_every, 1):
            self._lr = float(np.asarray(self.optimizer.learning_rate))
            self._lr_step = step
        return [self._lr]

    def _scale_lr(self, factor: float) -> None:
        self._lr = None
        opt = self.optimizer
        schedule = getattr(opt, "_learning_rate", None)
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            opt._learning_rate = ScaledSchedule(schedule, factor)
            if self.on_rebuild is not None:
                self.on_rebuild()
        else:
            opt.learning_rate = float(np.asarray(opt.learning_rate)) * factor


def check_shares(**shares: Any) -> None:
    """Refuse a share option outside [0, 1] with a clear error."""
    for name, value in shares.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"guard option {name}={value!r}: use a number in [0, 1]")


class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule times a constant: how a rollback lowers a scheduled learning rate."""

    def __init__(self, schedule: Any, factor: float):
        if isinstance(schedule, ScaledSchedule):
            factor *= schedule.factor
            schedule = schedule.schedule
        self.schedule = schedule
        self.factor = factor

    def __call__(self, step: Any) -> Any:
        return self.schedule(step) * self.factor

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "factor": self.factor,
        }


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
        self.guard = TFGuard(
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


def _norm(variables: Any) -> float:
    return math.sqrt(sum(float(np.sum(np.asarray(v, dtype=np.float64) ** 2)) for v in variables))
