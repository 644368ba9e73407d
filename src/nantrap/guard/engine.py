"""The framework-neutral guard loop: classify one step's measurements, explain an incident
from the history, act by policy, and record everything.

A framework edge (``nantrap.torch.guard``, ``nantrap.keras``) measures each step on the
device, fetches the numbers once as an :class:`Observation`, and drives this engine:

    problem = engine.classify(obs)
    if problem is None:            ... apply the update; engine.after_update(obs, ...)
    else:                          ... localize; d = engine.explain(...)
                                   decision = engine.act(d, state_corrupt=...)
                                   ... carry out decision.action (skip: drop the update)

Snapshots are captured by the edge (``engine.snapshot_due()`` / ``engine.take_snapshot``)
and restored through the ``restore`` callable the edge passes in.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from nantrap.errors import ConfigError, NanTrapError
from nantrap.findings import Category, Diagnosis, Phase
from nantrap.guard.config import GuardConfig
from nantrap.guard.divergence import RUNAWAY_STEPS, diagnose_divergence, diagnose_spike
from nantrap.guard.events import EventLog
from nantrap.guard.history import History, Spike
from nantrap.guard.incidents import loss_scale_collapse, unlocalized
from nantrap.guard.policy import Action, Decision, Policy
from nantrap.guard.sinks import make_sinks
from nantrap.guard.snapshots import Snapshot, SnapshotRing

__all__ = ["GuardEngine", "Observation", "Problem"]

logger = logging.getLogger("nantrap")
_RESERVED = frozenset({"type", "schema_version", "step", "rank"})


@dataclass(frozen=True)
class Observation:
    """One step's measurements as host numbers (fetched from the device once).

    ``loss`` is nan when the edge does not know it (loop form without a loss); then
    ``has_loss`` is False. ``param_norm`` is the weights' total norm BEFORE this step's
    update (= after the previous one). ``update_ratio`` is the previous update's sampled
    ``|dw| / |w|`` (nan when not sampled). ``weights_finite``: whether every weight is
    finite, measured apart from the norm (a finite norm can overflow); None where an edge
    only has the norm. ``buffers_finite``: False when the step made a floating buffer
    (BatchNorm's running stats) non-finite.
    """

    loss: float = math.nan
    has_loss: bool = False
    grad_norm: float = math.nan
    param_norm: float = math.nan
    inputs_finite: bool = True
    update_ratio: float = math.nan
    loss_scale: float = math.nan
    weights_finite: bool | None = None
    buffers_finite: bool = True

    @property
    def grads_finite(self) -> bool:
        return math.isfinite(self.grad_norm)

    @property
    def loss_finite(self) -> bool:
        return not self.has_loss or math.isfinite(self.loss)

    @property
    def params_finite(self) -> bool:
        if self.weights_finite is not None:
            return self.weights_finite
        return math.isfinite(self.param_norm)


class Problem(str, Enum):
    """What is wrong with a step, most fundamental first."""

    CORRUPT_STATE = "corrupt-state"  # weights non-finite before the update
    BAD_INPUT = "bad-input"  # the model's input is non-finite
    NONFINITE = "non-finite"  # loss, gradients or the step's buffers non-finite
    SPIKE = "spike"  # finite loss far above its running statistics

    def __str__(self) -> str:
        return self.value


class GuardEngine:
    """State and decisions of one guarded run.

    ``restore(state)`` puts a captured snapshot state back (weights, optimizer, RNG...);
    ``lrs()`` returns the current per-group learning rates; ``scale_lr(f)`` multiplies them
    (and whatever schedules them) by ``f``.
    """

    def __init__(
        self,
        config: GuardConfig,
        *,
        framework: str,
        restore: Callable[[Any], None],
        lrs: Callable[[], Sequence[float]],
        scale_lr: Callable[[float], None],
        rank: int = 0,
        world_size: int = 1,
    ):
        self.config = config
        self.framework = framework
        self.lrs = lrs
        self.scale_lr = scale_lr
        self.world_size = world_size
        self.history = History(config.history, config.ema_beta)
        self.policy = Policy(
            config.policy, lr_decay=config.lr_decay, max_retries=config.max_retries
        )
        self.ring = SnapshotRing(config.snapshot_every, config.snapshot_keep, restore=restore)
        self.log = EventLog(
            config.log_dir,
            rank=rank,
            sinks=make_sinks(tensorboard=config.tensorboard, wandb=config.wandb, rank=rank),
        )
        self.diagnoses: list[Diagnosis] = []
        self.step = 0  # training iterations so far, updated or not (rolled back with the state)
        self.incidents = 0
        self.stopped = False
        self.initial_loss_scale: float | None = None
        self._scale_warned = False
        self._last_restored = -1
        self.ended = False
        self._last_spike = -2
        self._last_warned: tuple[str, int] | None = None
        self.repeats = 0  # warn-policy incidents not recorded again (same code, next step)
        self.context: dict[str, Any] = {}  # the training loop's context (annotate)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, *, model: str | None, optimizer: str | None, argv: Sequence[str] = ()) -> None:
        self.log.run(
            framework=self.framework,
            policy=self.config.policy,
            model=model,
            optimizer=optimizer,
            lr=self.lrs(),
            world_size=self.world_size,
            argv=argv,
        )

    def end(self, status: str | None = None) -> None:
        if status is None:
            status = "stopped" if self.stopped else "ok"
        self.ended = True
        self.log.end(self.step, status)

    def annotate(self, **fields: Any) -> None:
        """Tell the guard where the training loop is (``epoch=2, batch=17``, a micro-batch,
        a rank...). The fields stay until changed (``None`` removes one) and are written as
        a ``context`` record beside every diagnosis of a step, which the report shows on the
        incident's card. A callable value is called only when such a record is written (so
        a costly value, e.g. one that syncs with the device, is computed on incidents only).
        """
        for key, value in fields.items():
            if key in _RESERVED:
                raise ConfigError(
                    f"annotate({key}=...): {key!r} is set by the guard; "
                    f"reserved: {', '.join(sorted(_RESERVED))}"
                )
            if value is None:
                self.context.pop(key, None)
            else:
                self.context[key] = value

    def _record_context(self, step: int) -> None:
        if not self.context:
            return
        values = {}
        for key, value in self.context.items():
            if callable(value):
                try:
                    value = value()
                except Exception as err:  # context is a courtesy: never break the run
                    logger.warning("nantrap: context field %r failed: %r", key, err)
                    continue
            values[key] = value
        self.log.emit("context", step=step, rank=self.log.rank, **values)

    # -- per step ----------------------------------------------------------------------

    def lr(self) -> float:
        lrs = self.lrs()
        return float(lrs[0]) if lrs else math.nan

    def snapshot_due(self) -> bool:
        """A snapshot is due at this step and the run looks healthy (no snapshot is taken
        of weights that are already running away)."""
        return self.ring.due(self.step) and not self.history.weights_growing()

    def take_snapshot(self, state: Any) -> Snapshot:
        snap = self.ring.take(self.step, state, lr_scale=self.policy.lr_scale)
        if self.step > self._last_restored:
            self.policy.progressed()
        return snap

    def forget_snapshots(self) -> int:
        """Drop every snapshot (the state they hold was replaced); returns how many."""
        return self.ring.discard_after(-1)

    def classify(self, obs: Observation) -> Problem | Spike | None:
        """The step's most fundamental problem, a Spike, or None when it is clean."""
        if not obs.params_finite:
            return Problem.CORRUPT_STATE
        if not obs.inputs_finite:
            return Problem.BAD_INPUT
        if not (obs.loss_finite and obs.grads_finite and obs.buffers_finite):
            return Problem.NONFINITE
        if obs.has_loss and self.config.on_spike != "ignore":
            return self.history.spike(
                obs.loss,
                sigma=self.config.spike_sigma,
                ratio=self.config.spike_ratio,
                warmup=self.config.spike_warmup,
            )
        return None

    def after_update(self, obs: Observation, *, ranges: dict | None = None) -> Diagnosis | None:
        """Record a step whose update was applied (or let through by ``warn``).

        Returns an NT301 incident when the weights have been growing geometrically while
        the loss or gradient grew too (divergence before any NaN); the edge passes it to
        :meth:`act`.
        """
        self._check_loss_scale(obs)
        if math.isfinite(obs.update_ratio):
            self.history.observe_ratio(self.step - 1, obs.update_ratio)
        self.history.observe(
            self.step,
            loss=obs.loss if obs.has_loss else math.nan,
            grad_norm=obs.grad_norm,
            param_norm=obs.param_norm,
            lr=self.lr(),
        )
        if self.step % self.config.log_every == 0 or ranges:
            self.record_step(obs, ranges=ranges)
        self.step += 1
        weights_rising = self.history.weights_growing()
        loss_rising = self.history.rising("loss")[0] >= RUNAWAY_STEPS
        if weights_rising or loss_rising:
            div = diagnose_divergence(
                self.history,
                step=self.step - 1,
                lr=self.lr(),
                lr_decay=self.config.lr_decay,
                trigger="weights growing geometrically"
                if weights_rising
                else "loss growing geometrically",
            )
            signals = div.evidence["signals"] if div is not None else []
            runaway = {"loss_runaway", "weight_norm_runaway"} & set(signals)
            if runaway or ("weight_norm" in signals and len(signals) >= 2):
                return div
        return None

    def idle_step(self) -> None:
        """An iteration ended without an update and without an incident's action (a
        GradScaler found inf gradients and skipped it): ``step`` counts iterations."""
        self.step += 1

    def record_step(self, obs: Observation, *, ranges: dict | None = None) -> None:
        self.log.step(
            self.step,
            loss=obs.loss if obs.has_loss else None,
            grad_norm=obs.grad_norm,
            update_ratio=obs.update_ratio if math.isfinite(obs.update_ratio) else None,
            lr=self.lr(),
            ranges=ranges,
        )

    def _check_loss_scale(self, obs: Observation) -> None:
        self.check_loss_scale(obs.loss_scale)

    def check_loss_scale(self, scale: float) -> bool:
        """Watch a GradScaler-style loss scale; NT201 once when it falls below the floor.
        True when this call reported it."""
        if not math.isfinite(scale):
            return False
        if self.initial_loss_scale is None:
            self.initial_loss_scale = scale
        if scale < self.config.min_loss_scale and not self._scale_warned:
            self._scale_warned = True
            self.warn(
                loss_scale_collapse(
                    self.step,
                    scale,
                    initial=self.initial_loss_scale,
                    floor=self.config.min_loss_scale,
                )
            )
            return True
        return False

    # -- incidents ---------------------------------------------------------------------

    def explain(
        self,
        *,
        what: str,
        localized: Diagnosis | None = None,
        reason: str = "",
        phase: Phase | None = None,
        force_divergence: bool = False,
    ) -> Diagnosis:
        """The incident's Diagnosis: NT301 when the history shows divergence (with the
        localized op, if any, as evidence), else the localized one, else NT903."""
        div = diagnose_divergence(
            self.history,
            step=self.step,
            lr=self.lr(),
            lr_decay=self.config.lr_decay,
            phase=phase or Phase.UPDATE,
            trigger=what,
            force=force_divergence,
        )
        # a localized op error is only put down to divergence when the history is clear
        if div is not None and (
            localized is None
            or force_divergence
            or localized.category in (Category.OVERFLOW, Category.COVERAGE)
            or (localized.category is Category.DOMAIN and len(div.evidence["signals"]) >= 2)
        ):
            if localized is not None:
                loc = dataclasses.replace(
                    div.location,
                    op=localized.op,
                    neutral_op=localized.neutral_op,
                    module=localized.module,
                    path=localized.location.path,
                    line=localized.location.line,
                    source_line=localized.location.source_line,
                )
                ev = dict(div.evidence)
                ev["first_nonfinite"] = {
                    "code": localized.code,
                    "message": localized.message,
                    "phase": str(localized.phase) if localized.phase else None,
                }
                div = dataclasses.replace(div, location=loc, evidence=ev)
            return div
        if localized is not None:
            return localized
        return unlocalized(self.step, what, reason or "no trace available", phase=phase)

    def act(
        self,
        diagnosis: Diagnosis,
        *,
        state_corrupt: bool = False,
        obs: Observation | None = None,
        update_applied: bool = False,
    ) -> Decision:
        """Decide by policy, restore state on rollback/stop, record; raises under ``raise``.

        ``state_corrupt``: the weights are already non-finite (skip cannot help); snapshots
        taken at this step are dropped as unverified. ``obs``: the step's measurements,
        written as its step record. ``update_applied``: the incident was found after the
        step's update (divergence before NaN): ``skip`` has nothing to drop and warns.
        """
        step = self.step if diagnosis.step is None else diagnosis.step
        self.incidents += 1
        if state_corrupt:
            self.ring.discard_after(step - 1)
        decision = self.policy.decide(
            state_corrupt=state_corrupt,
            can_rollback=len(self.ring) > 0,
            bad_data=diagnosis.category is Category.BAD_DATA and diagnosis.code == "NT401",
        )
        if update_applied and decision.action is Action.SKIP:
            decision = Decision(Action.WARN, detail="the update was already applied")
        if decision.action is Action.WARN:
            # under warn a broken run repeats the same incident every step: record it once
            repeat = self._last_warned == (diagnosis.code, step - 1)
            self._last_warned = (diagnosis.code, step)
            if repeat:
                self.repeats += 1
                return decision
        if obs is not None:
            self.record_step(obs)
        lr_before = self.lr()
        to_step = None
        if decision.action in (Action.ROLLBACK, Action.STOP) and len(self.ring):
            snap = self.ring.restore_latest()
            factor = self.policy.lr_scale / snap.lr_scale
            if factor != 1.0:
                self.scale_lr(factor)
            self.step = to_step = snap.step
            self._last_restored = snap.step
            self.history.truncate(snap.step)
        if decision.action is Action.STOP:
            self.stopped = True
        if decision.action is Action.SKIP:
            self.step += 1
        diagnosis = self._ranked(dataclasses.replace(diagnosis, action=decision.action.past))
        self.diagnoses.append(diagnosis)
        self.log.diagnosis(diagnosis)
        self._record_context(step)
        self.log.action(
            step,
            decision.action,
            to_step=to_step,
            lr_before=lr_before,
            lr_after=self.lr(),
            retries=decision.retries,
            detail=decision.detail,
        )
        if decision.action is Action.RAISE:
            self.end("error")
            raise NanTrapError(diagnosis)
        if decision.action is Action.STOP:
            self.end("stopped")
        return decision

    def handle_spike(self, spike: Spike, *, applied: bool = False) -> Decision | None:
        """NT302 by ``on_spike``: warn (returns None: apply the update), skip, or policy.

        A spike in a history that shows divergence (two signals or more) is the NT301
        incident instead, handled by the policy before the update. Consecutive spikes are
        reported once. ``applied``: the update already went through (a compiled step that
        judged the spike by an older ceiling); it can then be warned about, not skipped.
        """
        div = diagnose_divergence(
            self.history,
            step=self.step,
            lr=self.lr(),
            lr_decay=self.config.lr_decay,
            phase=Phase.UPDATE,
            trigger=f"loss spike to {spike.loss:.4g} ({spike.ratio:.3g}x its running mean)",
        )
        if div is not None and len(div.evidence["signals"]) >= 2:
            return self.act(div)
        repeated = self._last_spike == self.step - 1
        self._last_spike = self.step
        diagnosis = diagnose_spike(spike, step=self.step, sigma=self.config.spike_sigma)
        mode = self.config.on_spike
        if applied and mode == "skip":
            mode = "warn"
        if repeated and mode == "warn":
            return None
        if mode == "policy":
            return self.act(dataclasses.replace(diagnosis, incident=True), update_applied=applied)
        if mode == "skip":
            diagnosis = dataclasses.replace(diagnosis, action=Action.SKIP.past)
            self.warn(diagnosis)
            self.log.action(self.step, Action.SKIP, detail="loss spike (on_spike='skip')")
            self.step += 1
            return Decision(Action.SKIP, detail="loss spike")
        self.warn(diagnosis)
        return None

    def warn(self, diagnosis: Diagnosis) -> None:
        """Record an early warning (not an incident)."""
        diagnosis = self._ranked(diagnosis)
        self.diagnoses.append(diagnosis)
        self.log.diagnosis(diagnosis)
        self._record_context(self.step if diagnosis.step is None else diagnosis.step)

    def _ranked(self, diagnosis: Diagnosis) -> Diagnosis:
        """In a multi-process run, say which rank saw it."""
        if self.world_size == 1 or diagnosis.location.rank is not None:
            return diagnosis
        location = dataclasses.replace(diagnosis.location, rank=self.log.rank)
        return dataclasses.replace(diagnosis, location=location)

    # -- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.state_dict(),
            "step": self.step,
            "incidents": self.incidents,
            "repeats": self.repeats,
            "stopped": self.stopped,
            "initial_loss_scale": self.initial_loss_scale,
            "scale_warned": self._scale_warned,
            "last_restored": self._last_restored,
            "history": self.history.state_dict(),
            "policy": self.policy.state_dict(),
            "ring": self.ring.state_dict(),
            "log": self.log.state_dict(),
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "context": {k: v for k, v in self.context.items() if not callable(v)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.config = GuardConfig.from_state_dict(state["config"])
        self.step = int(state["step"])
        self.incidents = int(state["incidents"])
        self.repeats = int(state.get("repeats", 0))
        self.stopped = bool(state["stopped"])
        self.initial_loss_scale = state["initial_loss_scale"]
        self._scale_warned = bool(state["scale_warned"])
        self._last_restored = int(state["last_restored"])
        self.history.load_state_dict(state["history"])
        self.policy.load_state_dict(state["policy"])
        self.ring.load_state_dict(state["ring"])
        self.log.load_state_dict(state["log"])
        self.diagnoses = [Diagnosis.from_dict(d) for d in state["diagnoses"]]
        # callables given to annotate (not serializable) stay as they are
        live = {k: v for k, v in self.context.items() if callable(v)}
        self.context = {**state.get("context", {}), **live}
