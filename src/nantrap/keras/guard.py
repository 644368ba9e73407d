"""The Keras training guard, whatever the backend: drives the framework-neutral
:class:`~nantrap.guard.engine.GuardEngine` from a probe's per-step numbers.

:class:`KerasGuard` is shared by ``nantrap.keras.NanTrap`` (TensorFlow and torch backends)
and by ``nantrap.tf.guard_step``. Per step it classifies the probe's reading; on an incident
it replays the step op by op through its :class:`Backend` (state is captured before and
restored after, bit-exactly), diagnoses the first bad op and acts by policy. What differs
between backends (the op tracer, the early-warning sampler, a fused weight read) is the
:class:`Backend`; the rest is here once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import keras
import numpy as np

from nantrap.errors import ConfigError
from nantrap.findings import Diagnosis, Phase
from nantrap.guard.config import GuardConfig
from nantrap.guard.engine import GuardEngine, Observation, Problem
from nantrap.guard.health import worth_snapshot
from nantrap.guard.history import Spike
from nantrap.guard.policy import Action, Decision
from nantrap.keras.reading import ProbeReading
from nantrap.keras.state import VariableState, keras_state_variables

__all__ = ["Backend", "KerasGuard", "ScaledSchedule", "Warnings", "check_shares"]

Warnings = tuple[list[Diagnosis], dict[str, dict[str, float]]]  # early warnings, layer ranges


class Backend(Protocol):
    """What one Keras backend gives the guard."""

    def tracing(self, inputs: Any) -> contextlib.AbstractContextManager[Any]:
        """An op-level trace of what runs inside ``with`` (eagerly); ``inputs`` names data."""

    def explain(self, trace: Any, result: Any, *, step: int) -> Diagnosis | None:
        """The diagnosis of the first bad op in ``trace`` (``result``: what the replay
        returned), or None when the replay ran finite."""

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
        """Called once per step: the early warnings and layer ranges of this step (a
        sampled one), ``([], {})`` otherwise. ``replay(run, inputs)`` traces ``run()``
        with every variable put back after."""

    def flat_weights(self, variables: Sequence[Any]) -> np.ndarray:
        """Every weight in one float32 host vector (one fused device read)."""

    def capture_rng(self) -> Any:
        """Random-generator state outside Keras variables that a snapshot must keep (the
        torch generators behind unseeded dropout), or None."""

    def restore_rng(self, state: Any) -> None:
        """Put back what :meth:`capture_rng` returned."""

    def close(self) -> None:
        """Remove whatever the backend installed."""


class KerasGuard:
    """One guarded Keras run: the engine, the snapshots and the per-step decisions.

    Args:
        config: the guard options.
        backend: the op tracer and early-warning sampler of the Keras backend in use.
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
        backend: Backend,
        model: Any,
        optimizer: Any,
        framework: str,
        extra_state: Callable[[], Sequence[Any]] | None = None,
        on_rebuild: Callable[[], None] | None = None,
    ):
        self.config = config
        self.backend = backend
        self.model = model
        self.optimizer = optimizer
        self.on_rebuild = on_rebuild
        self.state = VariableState(keras_state_variables(model, optimizer))
        self._trainable = list(model.trainable_variables)
        self._lr: float | None = None
        self._lr_step = 0
        self._extra_state = extra_state or (lambda: ())
        self.engine = GuardEngine(
            config,
            framework=framework,
            restore=self.restore,
            lrs=self._lrs,
            scale_lr=self._scale_lr,
        )
        self._param_norm = math.nan
        self._ratio_ref: np.ndarray | None = None
        self._ratio_norm = math.nan
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
        self.engine.take_snapshot(self.capture())
        self._last_end = time.perf_counter()

    def close(self, status: str | None = None) -> None:
        """Write the ``end`` record (once), close the log and the backend."""
        if self._closed:
            return
        self._closed = True
        self.backend.close()
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
        boundary: bool = True,
        ratio: bool = True,
        apply_dropped: Callable[[], Any] | None = None,
    ) -> Decision | None:
        """Judge one finished step. ``replay()`` re-runs it eagerly (no patches) for
        localization; ``sample()`` (default: ``replay``) is the cheaper run a sampled
        early warning traces, returning the loss; ``inputs`` names the batch's tensors.

        For one step of a multi-step execution: ``boundary=False`` when the device already
        holds a later step's state (no snapshot now), ``ratio=False`` when host copies of
        the weights would be an execution apart (no update-ratio sample). ``apply_dropped()``
        applies an update the gate dropped when the decision lets it through (``warn``)."""
        now = time.perf_counter()
        elapsed, self._last_end = now - self._last_end, now
        loss_value = reading.loss if loss is None else float(loss)
        grad_norm = reading.grad_norm
        if math.isfinite(reading.loss_scale) and reading.loss_scale > 0:
            grad_norm /= reading.loss_scale  # a loss-scale optimizer: its gradients are scaled
            if not math.isfinite(grad_norm) and (not has_loss or math.isfinite(loss_value)):
                self.scale_skips += 1  # it skipped this overflowing step and lowered its scale
                self._end_step(clean=False, sample=None, inputs=inputs)
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
        clean = problem is None and not corrupt_after
        if clean:
            self._step_time = (
                elapsed if math.isnan(self._step_time) else 0.9 * self._step_time + 0.1 * elapsed
            )
        ranges = self._end_step(clean=clean, sample=sample or replay, inputs=inputs)
        if self._muted:
            if problem is Problem.CORRUPT_STATE or corrupt_after:
                return None
            self._muted = False
        if not ratio:
            self._ratio_ref = None
        if clean:
            self._in_spike = False
            self._clean_step(obs, reading.param_norm, ranges, boundary=boundary, ratio=ratio)
            return None
        if isinstance(problem, Spike):
            return self._spike(problem, obs, reading)
        decision = self._incident(problem, obs, reading, corrupt_after, replay, inputs)
        if decision.action is Action.WARN and not reading.applied and apply_dropped is not None:
            apply_dropped()  # the user asked for the update to go through
            self._param_norm = _norm(self._trainable)
            self._muted = True  # one warning, not one per step of the run it corrupts
        return decision

    def _end_step(
        self, *, clean: bool, sample: Callable[[], Any] | None, inputs: Any
    ) -> dict[str, dict[str, float]]:
        """The backend's early warnings of this step, logged once per site; the ranges."""
        found, ranges = self.backend.end_step(
            self.engine.step,
            clean=clean and self.config.early_warnings > 0,
            sample=sample,
            inputs=inputs,
            step_time=self._step_time,
            replay=self.replay,
        )
        for d in found:
            key = (d.code, d.module, d.op)
            if key not in self._warned:
                self._warned.add(key)
                self.engine.warn(d)
        return ranges

    def _clean_step(
        self,
        obs: Observation,
        param_norm: float,
        ranges: dict[str, dict[str, float]],
        *,
        boundary: bool,
        ratio: bool,
    ) -> None:
        engine = self.engine
        if ratio:
            obs = dataclasses.replace(obs, update_ratio=self._update_ratio(engine.step))
        engine.after_update(obs, ranges=ranges or None)
        self._param_norm = param_norm
        if boundary and engine.snapshot_due() and worth_snapshot(engine.history):
            engine.take_snapshot(self.capture())

    def _spike(self, spike: Spike, obs: Observation, reading: ProbeReading) -> Decision | None:
        if self._in_spike and self.config.on_spike == "warn":
            decision = None  # one warning per run of consecutive spikes
        else:
            decision = self.engine.handle_spike(spike, applied=reading.applied)
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
            localized = self.backend.explain(trace, trace.result, step=engine.step)
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
    def replay(self, run: Callable[[], Any], inputs: Any = None) -> Any:
        """Run ``run()`` eagerly under the backend's op tracer; every variable is put back
        after. ``trace.result`` is what ``run()`` returned."""
        state = VariableState([*self.state.variables, *self._extra_state()])
        saved = state.capture()
        try:
            with self.backend.tracing(inputs) as trace:
                trace.result = run()
        finally:
            state.restore(saved)
        return trace

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
        return self.backend.flat_weights(self._trainable)

    def ceiling(self) -> float:
        """The loss above which a step is a spike (``inf`` before the warm-up is over)."""
        ema, cfg = self.engine.history.loss_ema, self.config
        if cfg.on_spike not in ("skip", "policy") or ema.count < max(cfg.spike_warmup, 2):
            return math.inf
        return ema.mean + max(cfg.spike_sigma * ema.std, (cfg.spike_ratio - 1.0) * abs(ema.mean))

    def capture(self) -> dict[str, Any]:
        """A snapshot: every variable of the run (host copies) and the backend's RNG."""
        state = self.state.capture()
        rng = self.backend.capture_rng()
        if rng is not None:
            state["rng"] = rng
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Put a :meth:`capture` back, bit-exactly."""
        self.state.restore(state)
        if "rng" in state:
            self.backend.restore_rng(state["rng"])
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


def _norm(variables: Any) -> float:
    return math.sqrt(sum(float(np.sum(np.asarray(v, dtype=np.float64) ** 2)) for v in variables))
