"""``NanTrap``: the training guard as a Keras 3 callback (TensorFlow backend).

Each batch, inside the compiled step (XLA included), the probe measures the batch loss, the
gradient norm and the weight norm after the update, and drops an update whose loss or
gradients are non-finite before it reaches the weights. The callback reads those numbers
once per batch (Keras already syncs for its logs) and drives the framework-neutral
:class:`~nantrap.guard.engine.GuardEngine`: spikes and divergence from the history,
localization by an eager op-by-op replay of the failing batch, the policy, the snapshot
ring and ``events.jsonl``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import keras
import numpy as np

from nantrap.errors import ConfigError
from nantrap.findings import Diagnosis, Phase
from nantrap.guard.config import GuardConfig
from nantrap.guard.divergence import divergence_evidence
from nantrap.guard.engine import GuardEngine, Observation, Problem
from nantrap.guard.history import Spike
from nantrap.guard.policy import Action, Decision
from nantrap.keras._instrument import Instrument
from nantrap.tf.early_warnings import early_warnings, layer_ranges
from nantrap.tf.localize import explain
from nantrap.tf.snapshot import VariableState, keras_state_variables
from nantrap.tf.trace import OpTrace

__all__ = ["NanTrap"]


class NanTrap(keras.callbacks.Callback):
    """Catch, localize, explain and recover from NaN/Inf in ``model.fit``.

    >>> trap = nantrap.keras.NanTrap(policy="rollback", log_dir="runs/nantrap")  # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[trap])  # doctest: +SKIP

    Args:
        policy: ``raise`` (a :class:`nantrap.NanTrapError` with the diagnosis; weights stay
            finite), ``warn`` (log it; the update goes through), ``skip`` (drop the update),
            ``rollback`` (restore the last good snapshot, multiply the LR by ``lr_decay``;
            at most ``max_retries`` times in a row, then stop), ``stop`` (restore the last
            good snapshot and end ``fit``).
        log_dir: where ``events.jsonl`` goes (None: in memory, ``trap.events``).
        saturation / clipped: shares of saturated activations / clipped elements that make
            an early warning.
        warning_budget: the share of training time sampled early-warning replays may use.
        **options: any :class:`~nantrap.guard.config.GuardConfig` field (``lr_decay``,
            ``max_retries``, ``snapshot_every``, ``snapshot_keep``, ``log_every``,
            ``on_spike``, ``spike_sigma``, ``early_warnings`` (sampling interval, 0: off),
            ``ratio_every``, ``localize``...).

    After ``fit``: ``diagnoses`` (every incident and warning), ``events`` (the log records)
    and ``engine`` (history, policy state).
    """

    def __init__(
        self,
        policy: str = "rollback",
        log_dir: Any = None,
        *,
        saturation: float = 0.01,
        clipped: float = 0.05,
        warning_budget: float = 0.02,
        **options: Any,
    ):
        super().__init__()
        self.config = GuardConfig.from_options(policy=policy, log_dir=log_dir, **options)
        for name, value in (
            ("saturation", saturation),
            ("clipped", clipped),
            ("warning_budget", warning_budget),
        ):
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"NanTrap option {name}={value!r}: use a number in [0, 1]")
        self.saturation = float(saturation)
        self.clipped = float(clipped)
        self.warning_budget = float(warning_budget)
        self.engine: GuardEngine | None = None
        self.instrument: Instrument | None = None
        self._state: VariableState | None = None
        self._replay_state: VariableState | None = None
        self._param_norm = math.nan
        self._ratio_ref: list[np.ndarray] | None = None
        self._ratio_norm = math.nan
        self._next_warning = 0
        self._warned: set[tuple[str, str | None, str | None]] = set()
        self._step_time = math.nan
        self._last_end = math.nan
        self._muted = False

    # -- public views -------------------------------------------------------------------
    @property
    def diagnoses(self) -> list[Diagnosis]:
        return list(self.engine.diagnoses) if self.engine is not None else []

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.engine.log.records) if self.engine is not None else []

    # -- Keras hooks ----------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            raise ConfigError("NanTrap needs a compiled model: call model.compile(optimizer=...)")
        if keras.backend.backend() != "tensorflow":
            raise ConfigError(
                f"NanTrap supports the TensorFlow backend; this Keras runs on "
                f"{keras.backend.backend()!r} (use nantrap.torch.guard for PyTorch loops)"
            )
        gate = self.config.policy != "warn"
        self.instrument = Instrument(model, gate=gate).install()
        self._state = VariableState(keras_state_variables(model))
        self._replay_state = VariableState(
            list(self._state.variables) + list(getattr(model, "metrics_variables", ()))
        )
        self.engine = GuardEngine(
            self.config,
            framework="keras",
            restore=self._restore,
            lrs=self._lrs,
            scale_lr=self._scale_lr,
        )
        self.engine.start(
            model=type(model).__name__, optimizer=type(optimizer).__name__, argv=list(sys.argv)
        )
        self._param_norm = _norm(model.trainable_variables)
        self.engine.take_snapshot(self._state.capture())
        self._next_warning = self.config.early_warnings
        self._last_end = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        try:
            self._after_step()
        except BaseException:
            self._close("error")
            raise

    def on_train_end(self, logs: dict | None = None) -> None:
        self._close(None)

    # -- the per-step logic -------------------------------------------------------------
    def _after_step(self) -> None:
        now = time.perf_counter()
        elapsed, self._last_end = now - self._last_end, now
        engine, inst = self.engine, self.instrument
        reading = inst.probe.read()
        obs = Observation(
            loss=reading.loss if inst.has_loss else math.nan,
            has_loss=inst.has_loss,
            grad_norm=reading.grad_norm,
            param_norm=self._param_norm,
            update_ratio=math.nan,
            loss_scale=reading.loss_scale,
        )
        problem = engine.classify(obs)
        corrupt_after = reading.applied and not math.isfinite(reading.param_norm)
        if self._muted:
            if problem is Problem.CORRUPT_STATE or corrupt_after:
                return
            self._muted = False
        if problem is None and not corrupt_after:
            self._clean_step(obs, reading.param_norm, elapsed)
            return
        if isinstance(problem, Spike):
            self._spike(problem, obs, reading.applied, reading.param_norm)
            return
        self._incident(problem, obs, reading, corrupt_after)

    def _clean_step(self, obs: Observation, param_norm: float, elapsed: float) -> None:
        engine = self.engine
        self._step_time = (
            elapsed if math.isnan(self._step_time) else (0.9 * self._step_time + 0.1 * elapsed)
        )
        obs = _with(obs, update_ratio=self._update_ratio(engine.step))
        ranges = self._early_warnings(engine.step)
        engine.after_update(obs, ranges=ranges or None)
        self._param_norm = param_norm
        if engine.snapshot_due() and self._healthy():
            engine.take_snapshot(self._state.capture())
        if self.config.on_spike in ("skip", "policy"):
            self.instrument.probe.set_ceiling(self._ceiling())

    def _spike(self, spike: Spike, obs: Observation, applied: bool, param_norm: float) -> None:
        decision = self.engine.handle_spike(spike)
        if decision is None or (decision.action is Action.WARN and applied):
            if applied:
                self.engine.after_update(obs)
                self._param_norm = param_norm
            return
        self._carry_out(decision)

    def _incident(self, problem: Any, obs: Observation, reading: Any, corrupt_after: bool) -> None:
        engine = self.engine
        state_corrupt = problem is Problem.CORRUPT_STATE or corrupt_after
        if problem is Problem.CORRUPT_STATE:
            what = "non-finite weights before the update"
        elif corrupt_after:
            what = "non-finite weights after the update"
        elif not math.isfinite(obs.loss) and obs.has_loss:
            what = "non-finite loss"
        else:
            what = "non-finite gradients"
        localized = None
        if self.config.localize and not (corrupt_after and reading.grads_finite):
            localized = self._localize(engine.step)
        diagnosis = engine.explain(
            what=what,
            localized=localized,
            phase=localized.phase if localized is not None else Phase.UPDATE,
            force_divergence=corrupt_after and reading.grads_finite,
            reason="the eager replay of the batch ran finite" if self.config.localize else "",
        )
        decision = engine.act(diagnosis, state_corrupt=state_corrupt)
        if decision.action is Action.WARN and state_corrupt:
            self._muted = True
        self._carry_out(decision)

    def _carry_out(self, decision: Decision) -> None:
        if decision.action in (Action.ROLLBACK, Action.STOP):
            self._param_norm = _norm(self.model.trainable_variables)
            self._ratio_ref = None
        if decision.action is Action.STOP:
            self.model.stop_training = True

    # -- localization and early warnings ---------------------------------------------
    def _localize(self, step: int) -> Diagnosis | None:
        trace = self._replay(restore_seeds=True)
        return explain(trace, step=step) if trace is not None else None

    def _replay(self, *, restore_seeds: bool) -> OpTrace | None:
        """Run the last batch's train step eagerly under the tracer; state is put back."""
        inst = self.instrument
        data = inst.last_batch
        if data is None:
            return None
        saved = self._replay_state.capture()
        try:
            if restore_seeds:
                inst.restore_seeds()
            with inst.paused(), OpTrace(self.model, inputs=data) as trace:
                self.model.train_step(data)
        finally:
            self._replay_state.restore(saved)
        return trace

    def _early_warnings(self, step: int) -> dict[str, dict[str, float]]:
        every = self.config.early_warnings
        if every <= 0 or step < self._next_warning:
            return {}
        start = time.perf_counter()
        trace = self._replay(restore_seeds=True)
        cost = time.perf_counter() - start
        if trace is None:
            return {}
        for d in early_warnings(trace, step=step, saturation=self.saturation, clipped=self.clipped):
            key = (d.code, d.module, d.op)
            if key not in self._warned:
                self._warned.add(key)
                self.engine.warn(d)
        step_time = self._step_time if math.isfinite(self._step_time) else cost
        budget = max(self.warning_budget, 1e-6) * max(step_time, 1e-9)
        self._next_warning = step + max(every, math.ceil(cost / budget))
        return layer_ranges(trace)

    def _update_ratio(self, step: int) -> float:
        every = self.config.ratio_every
        if every <= 0:
            return math.nan
        ratio = math.nan
        if self._ratio_ref is not None:
            now = [np.asarray(v) for v in self.model.trainable_variables]
            delta = math.sqrt(
                sum(
                    float(np.sum((a.astype(np.float64) - b) ** 2))
                    for a, b in zip(now, self._ratio_ref, strict=True)
                )
            )
            ratio = delta / self._ratio_norm if self._ratio_norm > 0 else math.nan
            self._ratio_ref = None
        if step % every == 0:
            self._ratio_ref = [
                np.asarray(v, dtype=np.float64) for v in self.model.trainable_variables
            ]
            self._ratio_norm = math.sqrt(sum(float(np.sum(a**2)) for a in self._ratio_ref))
        return ratio

    def _healthy(self) -> bool:
        """Whether the state is worth a snapshot: not in the middle of a blow-up (loss well
        above its recent minimum while the gradient norm grows), so a rollback after a
        divergence lands before it started."""
        ev = divergence_evidence(self.engine.history, None)
        loss_up = ev.get("loss_last", 0.0) > 1.5 * max(ev.get("loss_min", math.inf), 1e-12)
        return not (loss_up and ev.get("grad_norm_growth", 0.0) >= 10.0)

    def _ceiling(self) -> float:
        ema, cfg = self.engine.history.loss_ema, self.config
        if ema.count < max(cfg.spike_warmup, 2):
            return math.inf
        return ema.mean + max(cfg.spike_sigma * ema.std, (cfg.spike_ratio - 1.0) * abs(ema.mean))

    # -- state callbacks for the engine ---------------------------------------------
    def _restore(self, state: Any) -> None:
        self._state.restore(state)

    def _lrs(self) -> list[float]:
        return [float(np.asarray(self.model.optimizer.learning_rate))]

    def _scale_lr(self, factor: float) -> None:
        opt = self.model.optimizer
        schedule = getattr(opt, "_learning_rate", None)
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            opt._learning_rate = _Scaled(schedule, factor)
            self.instrument.rebuild()
        else:
            opt.learning_rate = float(np.asarray(opt.learning_rate)) * factor

    def _close(self, status: str | None) -> None:
        if self.instrument is not None:
            self.instrument.uninstall()
        if (
            self.engine is not None
            and self.engine.log.records
            and (self.engine.log.records[-1].get("type") != "end")
        ):
            self.engine.end(status)
        if self.engine is not None:
            self.engine.log.close()


class _Scaled(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule times a constant: how a rollback lowers a scheduled learning rate."""

    def __init__(self, schedule: Any, factor: float):
        if isinstance(schedule, _Scaled):
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


def _with(obs: Observation, **changes: Any) -> Observation:
    import dataclasses

    return dataclasses.replace(obs, **changes)
