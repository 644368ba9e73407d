"""In-graph, per-step measurements of a TensorFlow training step, fused into one small
variable that the host reads once per step (or once per execution of several steps); and
the gate that drops a non-finite update.

Works inside ``tf.function`` and under XLA (``jit_compile=True``): only fixed-shape
reductions, a ``tf.cond`` around the optimizer update and one row written into a
float64[rows, 6] variable (float64: the step count stays exact for 2**53 steps). The cost is
two reductions over the parameters and gradients, no activation is scanned.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from nantrap.errors import ConfigError
from nantrap.keras.reading import ProbeReading

__all__ = [
    "FIELDS",
    "OptimizerPatch",
    "Probe",
    "ProbeReading",
    "check_strategy",
    "replicas",
    "sum_squares",
    "write_row",
]

FIELDS = ("loss", "grad_norm", "param_norm", "applied", "loss_scale", "steps")


def sum_squares(tensors: Sequence[Any]) -> tf.Tensor:
    """Sum of squares of every element, in float32 (NaN/Inf propagate)."""
    parts = [
        tf.reduce_sum(tf.square(tf.cast(t, tf.float32)))
        for t in tensors
        if t is not None and t.dtype.is_floating
    ]
    return tf.add_n(parts) if parts else tf.constant(0.0)


def write_row(variable: Any, row: Any, value: Any) -> None:
    """In the graph: ``variable[row] = value`` (also for mirrored variables, which have no
    scatter)."""
    full = tf.convert_to_tensor(variable)
    variable.assign(tf.tensor_scatter_nd_update(full, [[row]], [tf.cast(value, full.dtype)]))


class Probe:
    """The measurement variable, a loss ceiling (in-graph spike gate) and the guarded update.

    ``guarded_apply`` is called where the optimizer update would be, inside the user's
    (possibly compiled) step; ``read()`` is called on the host after the step.

    With ``rows`` > 1 (Keras ``steps_per_execution``) the variable is a ring of one row per
    step: step ``i`` (counting every probe call) writes row ``i % rows``, so the host can
    read the steps of a whole execution at once with :meth:`read_new`.
    """

    def __init__(self, rows: int = 1) -> None:
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ConfigError(f"Probe(rows={rows!r}): use a positive int")
        self.rows = rows
        # under tf.distribute: mirrored, every replica writes the same (all-reduced) numbers
        self.values = tf.Variable(
            tf.fill([rows, len(FIELDS)], tf.constant(math.nan, tf.float64)),
            trainable=False,
            name="nantrap_probe",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        self.ceiling = tf.Variable(
            math.inf,
            trainable=False,
            name="nantrap_loss_ceiling",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        self._ceiling = math.inf  # host copy: no device read per step
        self._seen = 0  # probe calls already handed out by read_new

    def calls(self) -> tf.Tensor:
        """In the graph: how many steps the probe has recorded (float64)."""
        steps = self.values[:, FIELDS.index("steps")]
        return tf.reduce_max(tf.where(tf.math.is_finite(steps), steps, tf.zeros_like(steps)))

    def row(self) -> tf.Tensor:
        """In the graph: the row the next recorded step writes."""
        return self._row(self.calls())

    def _row(self, calls: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.math.floormod(tf.cast(calls, tf.int64), self.rows), tf.int32)

    def guarded_apply(
        self,
        apply: Callable[[], Any],
        grads: Sequence[Any],
        variables: Sequence[Any],
        *,
        loss: Any = None,
        gate: bool = True,
        loss_scale: Any = None,
        apply_where: Callable[[Callable[[], Any], tf.Tensor], Any] | None = None,
    ) -> tf.Tensor:
        """Run ``apply()`` only if the gradients (and ``loss``) are finite and the loss is
        under the ceiling (when ``gate``); record the step; return whether it was applied.

        With ``loss_scale`` (a loss-scale optimizer, which skips overflowing steps and
        lowers its scale by itself) non-finite gradients are left to it; only the loss and
        the ceiling gate the update.

        In a replica context of several replicas (``tf.distribute``) the loss (the replicas'
        shares of the global loss) and the squared gradient norms are summed across replicas
        first, so every replica takes the same decision and records the same numbers; the
        update then holds a cross-replica merge, which no ``tf.cond`` may contain, so
        ``apply_where(apply, ok)`` gates it (see :class:`OptimizerPatch`).
        """
        scale = tf.constant(math.nan) if loss_scale is None else tf.cast(loss_scale, tf.float32)
        gsq = sum_squares(grads)
        loss32 = tf.constant(math.nan) if loss is None else tf.cast(loss, tf.float32)
        ctx = tf.distribute.get_replica_context()
        replicated = ctx is not None and ctx.num_replicas_in_sync > 1
        if replicated:
            total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack([loss32, gsq]))
            loss32, gsq = tf.unstack(total)
        ok = tf.math.is_finite(gsq) if loss_scale is None else tf.constant(True)
        if loss is not None:
            ok = tf.logical_and(ok, tf.math.is_finite(loss32))
            ok = tf.logical_and(ok, loss32 <= self.ceiling)
        if gate and replicated:
            if apply_where is None:
                raise ConfigError(
                    "the in-graph gate under tf.distribute needs a Keras optimizer patch"
                )
            apply_where(apply, ok)
            applied = ok
        elif gate:

            def _apply() -> tf.Tensor:
                apply()
                return tf.constant(True)

            applied = tf.cond(ok, _apply, lambda: tf.constant(False))
        else:
            apply()
            applied = tf.constant(True)
        with tf.control_dependencies([applied]):
            psq = sum_squares([tf.convert_to_tensor(v) for v in variables])
        calls = self.calls()
        numbers = [loss32, tf.sqrt(gsq), tf.sqrt(psq), tf.cast(applied, tf.float32), scale]
        record = tf.concat([tf.cast(tf.stack(numbers), tf.float64), [calls + 1.0]], 0)
        row = self._row(calls)
        write_row(self.values, row, record)
        return applied

    def read(self) -> ProbeReading:
        """The latest recorded step (one device read)."""
        return max(self._rows(), key=lambda r: r.steps)

    def read_new(self, values: Any = None) -> list[ProbeReading]:
        """Every step recorded since the last ``read_new``, oldest first (one device read,
        none when ``values``, the ring as the step returned it, is given).

        At most ``rows`` steps: an execution longer than the ring loses its oldest steps.
        """
        new = sorted((r for r in self._rows(values) if r.steps > self._seen), key=lambda r: r.steps)
        if new:
            self._seen = new[-1].steps
        return new

    def _rows(self, values: Any = None) -> list[ProbeReading]:
        values = self.values if values is None else values
        return [
            ProbeReading(
                loss=float(v[0]),
                grad_norm=float(v[1]),
                param_norm=float(v[2]),
                applied=bool(v[3] > 0.5),
                loss_scale=float(v[4]),
                steps=int(v[5]) if math.isfinite(v[5]) else 0,
            )
            for v in np.asarray(values, dtype=np.float64)
        ]

    def set_ceiling(self, value: float) -> None:
        """Losses above ``value`` are gated like non-finite ones (``inf``: off)."""
        if value != self._ceiling:
            self.ceiling.assign(value)
            self._ceiling = value


class OptimizerPatch:
    """Routes a Keras optimizer's ``apply`` (hence ``apply_gradients``) through
    :meth:`Probe.guarded_apply`, on this optimizer instance only, until ``uninstall``.

    ``loss`` returns the step's loss tensor while the step is traced (or None).

    Under ``tf.distribute`` with several replicas the optimizer's per-variable update (which
    runs in the cross-replica context of a merge) is gated by a ``tf.cond`` there, and a
    dropped step's ``iterations`` increment is taken back; optimizers that also change
    state elsewhere in ``apply`` (weight decay, EMA, gradient accumulation) are refused.
    """

    def __init__(
        self,
        optimizer: Any,
        probe: Probe,
        *,
        gate: bool = True,
        loss: Callable[[], Any] | None = None,
    ):
        self.optimizer = optimizer
        self.probe = probe
        self.gate = gate
        self.loss = loss or (lambda: None)
        self.applied: Any = None  # the last traced "applied" flag
        self._original: Any = None
        self._ok: Any = None  # while a replicated update is traced: the gate's decision

    @property
    def installed(self) -> bool:
        return "apply" in vars(self.optimizer)

    def install(self, variables: Sequence[Any] = ()) -> None:
        """Patch ``apply``; build the optimizer first (its slots cannot be created inside
        the gate's ``tf.cond``)."""
        replicated = self.gate and replicas() > 1
        if replicated:
            check_replicated_optimizer(self.optimizer)  # before anything is patched
        if not self.optimizer.built:
            self.optimizer.build(list(variables))
        self._original = self.optimizer.apply
        object.__setattr__(self.optimizer, "apply", self._apply)
        if replicated:
            self._gate_merged_update()

    def _gate_merged_update(self) -> None:
        """Route the optimizer's cross-replica update through :meth:`_merged_update`."""
        if _MERGED_UPDATE not in vars(self.optimizer):
            check_replicated_optimizer(self.optimizer)
            object.__setattr__(self.optimizer, _MERGED_UPDATE, self._merged_update)

    def uninstall(self) -> None:
        for name in ("apply", _MERGED_UPDATE):
            vars(self.optimizer).pop(name, None)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The optimizer as the user made it (for an eager replay)."""
        names = ("apply", _MERGED_UPDATE)
        patched = {n: vars(self.optimizer).pop(n) for n in names if n in vars(self.optimizer)}
        try:
            yield
        finally:
            for name, fn in patched.items():
                object.__setattr__(self.optimizer, name, fn)

    def _apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        grads = list(grads)
        variables = (
            list(trainable_variables)
            if trainable_variables is not None
            else list(self.optimizer._trainable_variables)
        )
        original = self._original
        self.applied = self.probe.guarded_apply(
            lambda: original(grads, trainable_variables),
            grads,
            variables,
            loss=self.loss(),
            gate=self.gate,
            loss_scale=getattr(self.optimizer, "dynamic_scale", None),
            apply_where=self._apply_where,
        )
        return self.applied

    def _apply_where(self, apply: Callable[[], Any], ok: tf.Tensor) -> None:
        """Replica context: the optimizer's ``apply`` with its merged update gated by ``ok``
        (the same on every replica); a dropped step does not count in ``iterations``."""
        self._gate_merged_update()  # also when installed outside the strategy's scope
        self._ok = ok
        try:
            apply()
        finally:
            self._ok = None
        iterations = self.optimizer.iterations
        iterations.assign_sub(tf.cast(tf.logical_not(ok), iterations.dtype))

    def _merged_update(self, distribution: Any, grads_and_vars: Any, learning_rate: Any) -> Any:
        """Cross-replica context: Keras' per-variable update, under the gate's ``tf.cond``."""
        update = getattr(type(self.optimizer), _MERGED_UPDATE)
        if self._ok is None:
            return update(self.optimizer, distribution, grads_and_vars, learning_rate)

        def _update() -> tf.Tensor:
            update(self.optimizer, distribution, grads_and_vars, learning_rate)
            return tf.constant(True)

        return tf.cond(self._ok, _update, lambda: tf.constant(False))


_MERGED_UPDATE = "_distributed_tf_update_step"  # Keras 3 TF optimizers, in merge_call


def replicas() -> int:
    """How many replicas the current ``tf.distribute`` strategy runs in sync (1: none)."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def check_strategy(strategy: Any) -> None:
    """Refuse a ``tf.distribute`` strategy the guard was not built for, naming it."""
    if type(strategy).__name__ == "_DefaultDistributionStrategy" or isinstance(
        strategy, (tf.distribute.MirroredStrategy, tf.distribute.OneDeviceStrategy)
    ):
        return
    raise ConfigError(
        f"NanTrap supports tf.distribute.MirroredStrategy (the replicas of one host) and "
        f"OneDeviceStrategy; this model was built under {type(strategy).__name__}"
    )


def check_replicated_optimizer(optimizer: Any) -> None:
    """Refuse, with a clear error, what the replicated gate cannot drop exactly."""
    name = type(optimizer).__name__
    if not hasattr(type(optimizer), _MERGED_UPDATE):
        raise ConfigError(
            f"NanTrap under tf.distribute needs a Keras 3 TensorFlow optimizer; {name} has "
            f"no {_MERGED_UPDATE}"
        )
    unsupported = {
        "weight_decay": getattr(optimizer, "weight_decay", None),
        "use_ema": getattr(optimizer, "use_ema", False),
        "gradient_accumulation_steps": getattr(optimizer, "gradient_accumulation_steps", None),
        "loss scaling (LossScaleOptimizer)": hasattr(optimizer, "inner_optimizer"),
    }
    used = [k for k, v in unsupported.items() if v]
    if used:
        raise ConfigError(
            f"NanTrap under tf.distribute cannot gate {name} with {', '.join(used)}: these "
            f"change state outside the update it drops; use policy='warn', or one replica"
        )
