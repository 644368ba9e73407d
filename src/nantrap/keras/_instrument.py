"""Wires the in-graph probe into a compiled Keras model for the length of one ``fit``.

For one ``fit`` the model's instance gets (and loses again on ``uninstall``):

- ``optimizer.apply``: the update runs inside :meth:`Probe.guarded_apply` (gate + numbers);
- ``compute_loss``: remembers the batch loss tensor for the gate (Keras logs carry only the
  epoch's running mean);
- ``train_step``: keeps the pre-step seed-generator states, metric values and other
  non-trainable state (BatchNorm statistics) in the graph, and puts them back when the update
  was dropped (a NaN never reaches the epoch mean or the moving statistics);
- ``train_function``: takes the batches of one execution from the iterator on the host and
  hands them to Keras' own compiled step, keeping references (no copies) for the replay of
  a failing step.

With ``steps_per_execution=N`` the probe and the seed states are rings of N rows, one per
step of the execution, and the N compiled steps run in one graph call (Keras' own loop over
the N batches, traced once): the host reads the N steps' numbers at once after the
execution, and each step is judged with its own batch and seed states. The replay of step k
runs on the weights of the execution's end: the same as before step k when the later steps
were dropped too, otherwise up to N-1 updates later.

Under ``tf.distribute.MirroredStrategy`` the probe and the rings are mirrored variables, the
gate's decision is the same on every replica (see :mod:`nantrap.tf.probe`), and replays run
on one device over the whole global batch.

Nothing else of the model or the user's code changes; XLA (``jit_compile=True``) works since
the compiled step only sees fixed-shape reductions, a ``tf.cond`` and small assigns.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from nantrap.keras._patches import ModelPatches
from nantrap.keras.reading import StepRun
from nantrap.keras.state import is_seed_state, step_state
from nantrap.tf.probe import OptimizerPatch, Probe, check_strategy, replicas, write_row

__all__ = ["Instrument"]

SAMPLE_ROWS = 16  # rows of the batch an early-warning sample traces
PROBE_KEY = "__nantrap_probe__"  # the probe ring, returned by the step itself (then removed)


class Instrument(ModelPatches):
    """The probe and the patches of one model; see the module docstring."""

    def __init__(
        self, model: Any, *, gate: bool = True, on_error: Callable[[], None] | None = None
    ):
        super().__init__(model, on_error=on_error)
        self.gate = gate
        self.rows = max(int(getattr(model, "steps_per_execution", 1) or 1), 1)
        self.strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        check_strategy(self.strategy)
        with self.strategy.scope():  # under tf.distribute: mirrored probe and seed rings
            self.replicas = replicas()
            self.probe = Probe(self.rows)
            self.seed_vars = [v for v in model.variables if is_seed_state(v)]
            self.seed_prev = [  # per step of an execution: the seed states before it
                tf.Variable(
                    tf.stack([tf.convert_to_tensor(v)] * self.rows),
                    trainable=False,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                )
                for v in self.seed_vars
            ]
        self.patch = OptimizerPatch(model.optimizer, self.probe, gate=gate, loss=lambda: self._loss)
        self.optimizer_patch = self.patch
        self.batches: list[Any] = []  # the last execution's batches, in step order
        self._loss: Any = None
        self._execution: Any = None
        # one step per call on one replica: the step returns the probe ring with its logs,
        # so reading it costs no device op of its own
        self.inline = self.rows == 1 and self.replicas == 1
        self._returned: Any = None
        self.metric_vars = [*getattr(model, "metrics_variables", ()), *step_state(model)]

    # install ----------------------------------------------------------------------------
    def _install_optimizer(self) -> None:
        with self.strategy.scope():
            self.patch.install(self.model.trainable_variables)

    def rebuild(self) -> None:
        super().rebuild()
        self._execution = self._orig_function
        if self.rows > 1 and not self.model.run_eagerly:
            # the N steps of an execution in one graph call, as Keras' own loop would be
            run = self._orig_function
            self._execution = tf.function(lambda batches: run(iter(batches)), reduce_retracing=True)

    @staticmethod
    def reapplies(model: Any) -> bool:
        """Whether a dropped update can be applied again after the host's decision (one
        step per execution, one replica): then a ``warn`` run is gated too, and localized
        from the weights before the bad update."""
        rows = max(int(getattr(model, "steps_per_execution", 1) or 1), 1)
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        return rows == 1 and strategy.num_replicas_in_sync == 1

    def steps(self) -> list[StepRun]:
        """Each step since the last call (every step of the last execution), in order, with
        the replays of that step's batch and seeds (none when the step cannot be matched to
        its batch)."""
        returned, self._returned = self._returned, None
        readings = self.probe.read_new(returned)
        if len(readings) != len(self.batches):
            return [StepRun(r) for r in readings]
        out = []
        reapply = self.rows == 1 and self.replicas == 1
        for reading, batch in zip(readings, self.batches, strict=True):
            row = self.row(reading.steps)
            data = JoinedBatch(batch) if self.replicas > 1 else batch
            replay = functools.partial(self._run, self.replay, data, row)
            out.append(
                StepRun(
                    reading,
                    data,
                    replay=replay,
                    sample=functools.partial(self._run, self.sample, data, row),
                    apply_dropped=replay if reapply else None,  # the replay applies it
                )
            )
        return out

    @staticmethod
    def _run(fn: Callable[[Any, int], Any], data: Any, row: int) -> Any:
        return fn(data.value() if isinstance(data, JoinedBatch) else data, row)

    def row(self, steps: int) -> int:
        """The ring row of the step the probe counted as ``steps`` (``ProbeReading.steps``)."""
        return (steps - 1) % self.rows

    def replay(self, data: Any, row: int = 0) -> Any:
        """The failing batch's train step, eagerly, with the dropout masks it had (the seed
        states of ring ``row``). Under ``tf.distribute``: its forward pass and gradients over
        the whole batch on one device (the update, a cross-replica merge, cannot run here;
        the guard drops or restores it anyway)."""
        self.restore_seeds(row)
        with self.paused():
            if self.replicas == 1:
                return self.model.train_step(data)
            x, y, sample_weight = _unpack(data)
            with tf.GradientTape() as tape:
                y_pred = self.model(x, training=True)
                loss = self.model.compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
            tape.gradient(loss, self.model.trainable_variables)
            return loss

    def sample(self, data: Any, row: int = 0) -> Any:
        """What the early warnings trace: the forward pass and loss of the first
        ``SAMPLE_ROWS`` rows of the batch (no gradient, no update); returns the loss."""
        x, y, sample_weight = _unpack(_head(data, SAMPLE_ROWS))
        self.restore_seeds(row)
        with self.paused():
            y_pred = self.model(x, training=True)
            return self.model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )

    def restore_seeds(self, row: int = 0) -> None:
        """Put the seed generators back to where they were before the step of ``row``."""
        for v, prev in zip(self.seed_vars, self.seed_prev, strict=True):
            v.assign(prev[row])

    # the patched pieces ---------------------------------------------------------------
    def _train_function(self, iterator: Any) -> Any:
        n = min(max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1), self.rows)
        batches = list(itertools.islice(iterator, n))
        if not batches:
            raise StopIteration
        self.batches = batches
        if len(batches) > 1:
            return self._execution(tuple(batches))
        logs = self._orig_function(iter(batches))
        if isinstance(logs, dict) and PROBE_KEY in logs:
            logs = dict(logs)
            self._returned = logs.pop(PROBE_KEY).numpy()
        return logs

    def _train_step(self, data: Any) -> Any:
        if self.seed_vars:
            row = self.probe.row()
            for v, prev in zip(self.seed_vars, self.seed_prev, strict=True):
                write_row(prev, row, tf.convert_to_tensor(v))
        before = [tf.identity(v) for v in self.metric_vars]
        self._loss = None
        self.patch.applied = None
        logs = type(self.model).train_step(self.model, data)
        applied = self.patch.applied
        if applied is None or not self.metric_vars:
            return self._with_probe(logs)

        def _undo() -> tf.Tensor:
            for v, value in zip(self.metric_vars, before, strict=True):
                v.assign(value)
            return tf.constant(False)

        restored = tf.cond(applied, lambda: tf.constant(True), _undo)
        if isinstance(logs, dict) and hasattr(self.model, "get_metrics_result"):
            with tf.control_dependencies([restored]):
                fresh = self.model.get_metrics_result()
            if set(fresh) == set(logs):
                return self._with_probe(fresh)
        return self._with_probe(logs)

    def _with_probe(self, logs: Any) -> Any:
        """``logs`` and the probe ring after this step's write (see ``inline``)."""
        if not (self.inline and isinstance(logs, dict)):
            return logs
        return {**logs, PROBE_KEY: self.probe.values.read_value()}

    def _remember_loss(self, loss: Any) -> None:
        self._loss = loss


def _unpack(data: Any) -> tuple[Any, Any, Any]:
    from keras.src.trainers.data_adapters.data_adapter_utils import unpack_x_y_sample_weight

    return unpack_x_y_sample_weight(data)


class JoinedBatch:
    """A ``tf.distribute`` batch (per-replica shards) as one global batch, shards in replica
    order, joined on first use: by a replay, or by the op trace naming its tensors (for
    ``tf.nest`` it is a nest of the joined tensors), so steps without a replay copy nothing.
    """

    def __init__(self, batch: Any):
        self.batch = batch
        self._joined: Any = None

    def value(self) -> Any:
        if self._joined is None:
            self._joined = tf.nest.map_structure(_join, self.batch)
        return self._joined

    def __tf_flatten__(self) -> tuple[None, tuple[Any, ...]]:
        return None, tuple(tf.nest.flatten(self.value()))

    @classmethod
    def __tf_unflatten__(cls, metadata: None, components: tuple[Any, ...]) -> Any:
        return components


def _join(value: Any) -> Any:
    if not isinstance(value, tf.distribute.DistributedValues):
        return value
    parts = value.values
    return tf.concat(parts, 0) if parts[0].shape.rank else parts[0]


def _head(data: Any, rows: int) -> Any:
    """The first ``rows`` rows of every batched tensor in ``data``."""

    def cut(t: Any) -> Any:
        shape = getattr(t, "shape", None)
        return t[:rows] if shape is not None and shape.rank else t

    return tf.nest.map_structure(cut, data)
