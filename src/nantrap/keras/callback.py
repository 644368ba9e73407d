"""``NanTrap``: the training guard as a Keras 3 callback, on the TensorFlow or torch backend.

Each batch the probe measures the batch loss, the gradient norm and the weight norm after
the update, and drops an update whose loss or gradients are non-finite before it reaches the
weights: inside the compiled step on TensorFlow (XLA included), around the optimizer's
``apply`` on torch. The callback reads those numbers once per batch (Keras already syncs
for its logs) and hands them to :class:`~nantrap.keras.guard.KerasGuard`: spikes and
divergence from the history, localization by an eager op-by-op replay of the failing batch
(TensorFlow's op tracer, or the PyTorch guard's on torch), the policy, snapshots,
``events.jsonl``.
"""

from __future__ import annotations

import logging
from typing import Any

import keras

from nantrap.errors import ConfigError
from nantrap.findings import Diagnosis
from nantrap.guard.config import GuardConfig
from nantrap.guard.engine import GuardEngine
from nantrap.guard.policy import Action
from nantrap.keras.guard import KerasGuard, check_shares

__all__ = ["NanTrap"]

BACKENDS = ("tensorflow", "torch")

logger = logging.getLogger("nantrap")


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
        warning_budget: the share of training time sampled early-warning replays may use
            (TensorFlow; on torch a sampled training step itself is watched, no replay).
        **options: any :class:`~nantrap.guard.config.GuardConfig` field (``lr_decay``,
            ``max_retries``, ``snapshot_every``, ``snapshot_keep``, ``log_every``,
            ``on_spike``, ``spike_sigma``, ``early_warnings`` (sampling interval, 0: off),
            ``ratio_every``, ``localize``...).

    After ``fit``: ``diagnoses`` (every incident and warning), ``events`` (the log records)
    and ``engine`` (history, policy state).

    ``compile(steps_per_execution=N)``: every step is judged, in order, under its true step
    number, with its own batch and dropout seeds for the replay. The gate still acts in the
    graph per step (a dropped step's successors run from the weights without it); the
    policy acts after the execution: ``rollback``/``stop`` go back to a snapshot (taken at
    execution ends only) and discard the rest of the execution, ``raise`` leaves the
    weights of the execution's end. The loss ceiling (``on_spike="skip"``) is updated once
    per execution, the update ratio is not sampled, and a replay runs on the weights of the
    execution's end (exact when the later steps were dropped too).

    ``tf.distribute`` (``MirroredStrategy``): the loss and gradient norms are summed across
    replicas, every replica takes the same decision, and the update is dropped inside the
    optimizer's cross-replica merge; a replay runs on one device over the whole global batch
    (forward and gradients; dropout masks are not reproduced). Optimizers with weight
    decay, EMA, gradient accumulation or loss scaling are refused with a ConfigError.
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
        self._guard_options = dict(
            saturation=saturation, clipped=clipped, warning_budget=warning_budget
        )
        check_shares(**self._guard_options)
        self.guard: KerasGuard | None = None
        self.instrument: Any = None

    @property
    def engine(self) -> GuardEngine | None:
        return self.guard.engine if self.guard is not None else None

    @property
    def diagnoses(self) -> list[Diagnosis]:
        return list(self.guard.engine.diagnoses) if self.guard is not None else []

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.guard.engine.log.records) if self.guard is not None else []

    def on_train_begin(self, logs: dict | None = None) -> None:
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            raise ConfigError("NanTrap needs a compiled model: call model.compile(optimizer=...)")
        backend = keras.backend.backend()
        if backend not in BACKENDS:
            raise ConfigError(
                f"NanTrap supports Keras on the TensorFlow and torch backends; this Keras "
                f"runs on {backend!r}"
            )
        if backend == "tensorflow":
            from nantrap.keras._instrument import Instrument
            from nantrap.tf.guard import TFBackend

            # warn: gated too where the dropped update can be applied after the diagnosis
            gate = self.config.policy != "warn" or Instrument.reapplies(model)
            self.instrument = Instrument(
                model, gate=gate, on_error=lambda: self._close("error")
            ).install()
            tracer: Any = TFBackend(model, every=self.config.early_warnings, **self._guard_options)
        else:
            from nantrap.keras._torch_backend import TorchBackend
            from nantrap.keras._torch_instrument import TorchInstrument

            # always gated (warn too: the dropped update is applied after the diagnosis)
            self.instrument = TorchInstrument(
                model, on_error=lambda: self._close("error")
            ).install()
            options = dict(self._guard_options)
            options.pop("warning_budget")  # sampled in the step itself: no replay to budget
            tracer = TorchBackend(model, every=self.config.early_warnings, **options)
        self.guard = KerasGuard(
            self.config,
            backend=tracer,
            model=model,
            optimizer=optimizer,
            framework="keras",
            extra_state=lambda: list(getattr(model, "metrics_variables", ())),
            on_rebuild=self.instrument.rebuild,
        )
        self.guard.start()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Judge each step of the execution that just ended, in order, with its own batch:
        Keras calls this once per ``steps_per_execution`` steps. A rollback or stop ends the
        execution's judging (the steps after it ran from the state it replaced)."""
        inst, guard = self.instrument, self.guard
        steps = inst.steps()
        decision = None
        try:
            for k, run in enumerate(steps):
                last = k == len(steps) - 1
                decision = guard.after_step(
                    run.reading,
                    has_loss=inst.has_loss,
                    replay=run.replay,
                    sample=run.sample,
                    inputs=run.batch,
                    apply_dropped=run.apply_dropped,
                    boundary=last,  # the device holds the state at the execution's end
                    ratio=len(steps) == 1,  # weight copies one execution apart: no ratio
                )
                if decision is not None and decision.action in (Action.ROLLBACK, Action.STOP):
                    if not last:
                        logger.info(
                            "nantrap: %d later step(s) of the execution dropped by the %s",
                            len(steps) - 1 - k,
                            decision.action.value,
                        )
                    break
        except BaseException:
            self._close("error")
            raise
        inst.probe.set_ceiling(guard.ceiling())  # the in-graph spike gate of the next steps
        if decision is not None and decision.action is Action.STOP:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        self._close(None)

    def _close(self, status: str | None) -> None:
        if self.instrument is not None:
            self.instrument.uninstall()
        if self.guard is not None:
            self.guard.close(status)
