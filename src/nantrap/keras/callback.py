"""``NanTrap``: the training guard as a Keras 3 callback (TensorFlow backend).

Each batch, inside the compiled step (XLA included), the probe measures the batch loss, the
gradient norm and the weight norm after the update, and drops an update whose loss or
gradients are non-finite before it reaches the weights. The callback reads those numbers
once per batch (Keras already syncs for its logs) and hands them to
:class:`~nantrap.tf.guard.TFGuard`: spikes and divergence from the history, localization by
an eager op-by-op replay of the failing batch, the policy, snapshots, ``events.jsonl``.
"""

from __future__ import annotations

from typing import Any

import keras

from nantrap.errors import ConfigError
from nantrap.findings import Diagnosis
from nantrap.guard.config import GuardConfig
from nantrap.guard.engine import GuardEngine
from nantrap.guard.policy import Action
from nantrap.keras._instrument import Instrument
from nantrap.keras.guard import KerasGuard, check_shares
from nantrap.tf.guard import make_guard

__all__ = ["NanTrap"]

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
        self.guard = make_guard(
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
        inst, guard = self.instrument, self.guard
        inst.probe.set_ceiling(guard.ceiling())
        data = inst.last_batch
        try:
            decision = guard.after_step(
                inst.probe.read(),
                has_loss=inst.has_loss,
                replay=None if data is None else lambda: self._replay(data),
                sample=None if data is None else lambda: self._sample(data),
                inputs=data,
            )
        except BaseException:
            self._close("error")
            raise
        if decision is not None and decision.action is Action.STOP:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        self._close(None)

    def _replay(self, data: Any) -> None:
        """The failing batch's train step, eagerly, with the dropout masks it had."""
        self.instrument.restore_seeds()
        with self.instrument.paused():
            self.model.train_step(data)

    def _sample(self, data: Any) -> Any:
        """What the early warnings trace: the forward pass and loss of the first
        ``SAMPLE_ROWS`` rows of the batch (no gradient, no update); returns the loss."""
        from keras.src.trainers.data_adapters.data_adapter_utils import (
            unpack_x_y_sample_weight,
        )

        x, y, sample_weight = unpack_x_y_sample_weight(_head(data, SAMPLE_ROWS))
        self.instrument.restore_seeds()
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


def _head(data: Any, rows: int) -> Any:
    """The first ``rows`` rows of every batched tensor in ``data``."""
    import tensorflow as tf

    def cut(t: Any) -> Any:
        shape = getattr(t, "shape", None)
        return t[:rows] if shape is not None and shape.rank else t

    return tf.nest.map_structure(cut, data)
