"""``NanTrap``: the training guard as a Keras 3 callback (TensorFlow backend).

Each batch, inside the compiled step (XLA included), the probe measures the batch loss, the
gradient norm and the weight norm after the update, and drops an update whose loss or
gradients are non-finite before it reaches the weights. The callback reads those numbers
once per batch (Keras already syncs for its logs) and hands them to
:class:`~nantrap.tf.guard.TFGuard`: spikes and divergence from the history, localization by
an eager op-by-op replay of the failing batch, the policy, snapshots, ``events.jsonl``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import keras

from nantrap.errors import ConfigError
from nantrap.findings import Diagnosis
from nantrap.guard.config import GuardConfig
from nantrap.guard.engine import GuardEngine
from nantrap.guard.policy import Action, Decision
from nantrap.keras._instrument import Instrument
from nantrap.tf.guard import TFGuard, check_shares

if TYPE_CHECKING:
    from nantrap.tf.probe import ProbeReading

__all__ = ["NanTrap"]

logger = logging.getLogger("nantrap")

SAMPLE_ROWS = 16  # rows of the batch an early-warning sample traces


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
        self.guard: TFGuard | None = None
        self.instrument: Instrument | None = None

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
        if keras.backend.backend() != "tensorflow":
            raise ConfigError(
                f"NanTrap supports the TensorFlow backend; this Keras runs on "
                f"{keras.backend.backend()!r} (use nantrap.torch.guard for PyTorch loops)"
            )
        self.instrument = Instrument(model, gate=self.config.policy != "warn").install()
        self.guard = TFGuard(
            self.config,
            model=model,
            optimizer=optimizer,
            framework="keras",
            extra_state=lambda: list(getattr(model, "metrics_variables", ())),
            on_rebuild=self.instrument.rebuild,
            **self._guard_options,
        )
        self.guard.start()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Judge each step of the execution that just ended, in order, with its own batch:
        Keras calls this once per ``steps_per_execution`` steps. A rollback or stop ends the
        execution's judging (the steps after it ran from the state it replaced)."""
        inst, guard = self.instrument, self.guard
        readings = inst.probe.read_new()
        batches = inst.batches if len(inst.batches) == len(readings) else [None] * len(readings)
        decision = None
        try:
            for k, (reading, data) in enumerate(zip(readings, batches, strict=True)):
                decision = self._judge(reading, data, last=k == len(readings) - 1)
                if decision is not None and decision.action in (Action.ROLLBACK, Action.STOP):
                    if k < len(readings) - 1:
                        logger.info(
                            "nantrap: %d later step(s) of the execution dropped by the %s",
                            len(readings) - 1 - k,
                            decision.action.value,
                        )
                    break
        except BaseException:
            self._close("error")
            raise
        inst.probe.set_ceiling(guard.ceiling())  # the in-graph spike gate of the next steps
        if decision is not None and decision.action is Action.STOP:
            self.model.stop_training = True

    def _judge(self, reading: ProbeReading, data: Any, *, last: bool) -> Decision | None:
        """Hand one step's reading to the guard, with replays of that step's batch."""
        inst = self.instrument
        row = inst.row(reading.steps)
        if inst.replicas > 1 and data is not None:
            data = _whole_batch(data)  # replays run on one device, over the global batch
        with _execution_step(self.guard, reading, last=last, rows=inst.rows):
            return self.guard.after_step(
                reading,
                has_loss=inst.has_loss,
                replay=None if data is None else lambda: self._replay(data, row),
                sample=None if data is None else lambda: self._sample(data, row),
                inputs=data,
            )

    def on_train_end(self, logs: dict | None = None) -> None:
        self._close(None)

    def _replay(self, data: Any, row: int = 0) -> None:
        """The failing batch's train step, eagerly, with the dropout masks it had (the seed
        states of ring ``row``)."""
        self.instrument.restore_seeds(row)
        with self.instrument.paused():
            if self.instrument.replicas == 1:
                self.model.train_step(data)
                return
            # tf.distribute: the forward pass and the gradients; the update (a cross-replica
            # merge) cannot run here, and the guard drops or restores it anyway
            import tensorflow as tf
            from keras.src.trainers.data_adapters.data_adapter_utils import (
                unpack_x_y_sample_weight,
            )

            x, y, sample_weight = unpack_x_y_sample_weight(data)
            with tf.GradientTape() as tape:
                y_pred = self.model(x, training=True)
                loss = self.model.compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
            tape.gradient(loss, self.model.trainable_variables)

    def _sample(self, data: Any, row: int = 0) -> Any:
        """What the early warnings trace: the forward pass and loss of the first
        ``SAMPLE_ROWS`` rows of the batch (no gradient, no update); returns the loss."""
        from keras.src.trainers.data_adapters.data_adapter_utils import (
            unpack_x_y_sample_weight,
        )

        x, y, sample_weight = unpack_x_y_sample_weight(_head(data, SAMPLE_ROWS))
        self.instrument.restore_seeds(row)
        with self.instrument.paused():
            y_pred = self.model(x, training=True)
            return self.model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )

    def _close(self, status: str | None) -> None:
        if self.instrument is not None:
            self.instrument.uninstall()
        if self.guard is not None:
            self.guard.close(status)


@contextlib.contextmanager
def _execution_step(
    guard: TFGuard, reading: ProbeReading, *, last: bool, rows: int
) -> Iterator[None]:
    """What the guard must not do while judging one step of an execution (the guard-side
    form would be ``after_step(..., boundary=last, ratio=rows == 1)`` and a spike check
    against ``reading.applied``):

    - with ``steps_per_execution`` > 1 the device holds the state at the END of the
      execution: a snapshot is taken only at its last step, and no update ratio is sampled
      (host copies of the weights one execution apart would measure several updates);
    - a step the device applied cannot be skipped: the in-graph loss ceiling is set once per
      execution, so a spike inside the execution that ends the warm-up got through, and the
      guard can only warn about it (and keep it in the history it judges later steps by).
    """
    with contextlib.ExitStack() as stack:
        if rows > 1:
            guard._ratio_ref = None
        if rows > 1 and not last:
            guard.engine.snapshot_due = lambda: False  # shadows the method for this step
            stack.callback(delattr, guard.engine, "snapshot_due")
        if reading.applied and guard.config.on_spike == "skip":
            config = guard.config
            guard.config = guard.engine.config = dataclasses.replace(config, on_spike="warn")
            stack.callback(_set_config, guard, config)
        yield


def _set_config(guard: TFGuard, config: GuardConfig) -> None:
    guard.config = guard.engine.config = config


def _whole_batch(data: Any) -> Any:
    """A ``tf.distribute`` batch (per-replica shards) as one batch, shards in replica order."""
    import tensorflow as tf

    def join(value: Any) -> Any:
        if not isinstance(value, tf.distribute.DistributedValues):
            return value
        parts = value.values
        return tf.concat(parts, 0) if parts[0].shape.rank else parts[0]

    return tf.nest.map_structure(join, data)


def _head(data: Any, rows: int) -> Any:
    """The first ``rows`` rows of every batched tensor in ``data``."""
    import tensorflow as tf

    def cut(t: Any) -> Any:
        shape = getattr(t, "shape", None)
        return t[:rows] if shape is not None and shape.rank else t

    return tf.nest.map_structure(cut, data)
