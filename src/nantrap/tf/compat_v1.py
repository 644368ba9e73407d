"""The guard for TF1-style graphs run through ``tf.compat.v1.Session`` (the seed's world).

:func:`guard_session` wraps a session. Each ``run`` that executes the training op also
fetches, in the same call, the loss, the gradient norm (from the optimizer's ``Apply*`` ops)
and the weight norm after the update. On a non-finite value (or an ``InvalidArgumentError``
such as ``Nan in summary histogram for: weight_1``) the guard rebuilds the state before the
failing step from its last snapshot and the feeds since, evaluates every tensor of the
training graph on the failing feed (no update), names the first op in topological order
whose output is non-finite while its inputs are finite, diagnoses it with the shared rules,
and acts by policy. With the history of losses and weight norms, a blown-up update reads
"update diverged at step N: learning rate too high" (NT301) instead of a histogram error.
"""

from __future__ import annotations

import linecache
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from nantrap.errors import ConfigError
from nantrap.findings import Diagnosis, Phase
from nantrap.guard.config import GuardConfig
from nantrap.guard.diagnose import OpRecord, diagnose
from nantrap.guard.engine import GuardEngine, Observation
from nantrap.guard.health import worth_snapshot
from nantrap.guard.history import Spike
from nantrap.guard.policy import Action
from nantrap.tf._stats import is_finite, tensor_stats
from nantrap.tf.trace import _FrameFilter, neutral_op

__all__ = ["SessionGuard", "guard_session"]

tf1 = tf.compat.v1

# the gradient input of the optimizer update ops, by op_def argument name
_GRAD_ARGS = ("grad", "delta")
_STATEFUL_PREFIXES = ("Apply", "ResourceApply", "ResourceSparseApply", "SparseApply", "Assign")
_NOT_VALUES = frozenset({"VariableV2", "VarHandleOp", "Const", "NoOp"})
_GRADIENTS = re.compile(r"^gradients(_\d+)?/")


def guard_session(
    sess: Any,
    *,
    loss: Any,
    train_op: Any,
    policy: str = "rollback",
    log_dir: Any = None,
    learning_rate: Any = None,
    **options: Any,
) -> SessionGuard:
    """Guard ``sess.run(train_op, feed_dict=...)`` calls; returns a session-like object.

    >>> sess = nantrap.tf.guard_session(tf1.Session(), loss=cross_entropy,  # doctest: +SKIP
    ...                                 train_op=train_step, policy="rollback")
    >>> sess.run(init)                                                       # doctest: +SKIP
    >>> for xs, ys in batches:                                              # doctest: +SKIP
    ...     sess.run(train_step, feed_dict={x: xs, y_: ys})

    ``learning_rate``: a ``tf.Variable`` holding the LR, so that a rollback can lower it
    (a Python float baked into the graph cannot be changed; it is still reported).
    Other options are the guard's (:class:`~nantrap.guard.config.GuardConfig`).
    """
    config = GuardConfig.from_options(policy=policy, log_dir=log_dir, **options)
    return SessionGuard(
        sess, loss=loss, train_op=train_op, config=config, learning_rate=learning_rate
    )


class SessionGuard:
    """A ``tf.compat.v1.Session`` that guards its training runs; everything else is passed
    through to the wrapped session. See :func:`guard_session`."""

    def __init__(
        self,
        sess: Any,
        *,
        loss: Any,
        train_op: Any,
        config: GuardConfig,
        learning_rate: Any = None,
    ):
        graph = sess.graph
        if graph.finalized:
            raise ConfigError(
                "guard_session needs a graph that is not finalized (it adds its check ops); "
                "wrap the session before MonitoredSession/Supervisor finalize it"
            )
        self.sess = sess
        self.graph = graph
        self.loss = graph.as_graph_element(loss)
        self.train_op = train_op if isinstance(train_op, tf.Operation) else train_op.op
        self.config = config
        with graph.as_default():
            self.variables = list(tf1.global_variables())
            trainable = list(tf1.trainable_variables())
            updates = _update_ops(self.train_op)
            grads = [g for op in updates if (g := _grad_input(op)) is not None]
            self._has_grads = bool(grads)
            with tf1.name_scope("nantrap"):
                self._grad_sq = _sum_squares(grads)
                with tf1.control_dependencies([self.train_op]):
                    self._post_sq = _sum_squares([tf.identity(v) for v in trainable])
                self._plain_sq = _sum_squares([tf.identity(v) for v in trainable])
                self._placeholders = [
                    tf1.placeholder(v.dtype.base_dtype, v.shape) for v in self.variables
                ]
                self._assign = tf.group(
                    *[
                        tf1.assign(v, p)
                        for v, p in zip(self.variables, self._placeholders, strict=True)
                    ]
                )
            self._lr_tensor = _learning_rate(updates) if learning_rate is None else learning_rate
            self._lr_var = learning_rate if isinstance(learning_rate, tf.Variable) else None
            if self._lr_var is not None:
                self._lr_ph = tf1.placeholder(self._lr_var.dtype.base_dtype, [])
                self._lr_assign = tf1.assign(self._lr_var, self._lr_ph)
        self._ancestors = _ancestors(self.train_op, self.loss.op)
        self.engine = GuardEngine(
            config,
            framework="tensorflow.compat.v1",
            restore=self._restore,
            lrs=self._lrs,
            scale_lr=self._scale_lr,
        )
        self._feeds: list[Any] = []  # feeds since the latest snapshot
        self._param_norm = math.nan
        self._started = False
        self._closed = False
        self._frames = _FrameFilter()
        self._muted = False
        self._in_spike = False

    # -- session protocol -------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        return getattr(self.sess, name)

    def __enter__(self) -> SessionGuard:
        self.sess.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close_guard("error" if exc[0] is not None else None)
        self.sess.__exit__(*exc)

    @property
    def diagnoses(self) -> list[Diagnosis]:
        return list(self.engine.diagnoses)

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.engine.log.records)

    @property
    def stopped(self) -> bool:
        return self.engine.stopped

    def close(self) -> None:
        self.close_guard(None)
        self.sess.close()

    def close_guard(self, status: str | None = None) -> None:
        """End the event log (the session stays open)."""
        if self._started and not self._closed:
            self._closed = True
            records = self.engine.log.records
            if not records or records[-1].get("type") != "end":
                self.engine.end(status)
            self.engine.log.close()

    def run(
        self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None
    ) -> Any:
        """``Session.run``; a run that executes the training op is checked and guarded."""
        if not self._trains(fetches):
            return self.sess.run(fetches, feed_dict, options, run_metadata)
        if not self._started:
            self._start()
        extra = {"loss": self.loss, "grad_sq": self._grad_sq, "post_sq": self._post_sq}
        error = None
        try:
            result, numbers = self.sess.run((fetches, extra), feed_dict, options, run_metadata)
        except tf.errors.InvalidArgumentError as err:  # check_numerics, summary histograms
            error, result = err, None
            numbers = {
                "loss": math.nan,
                "grad_sq": math.nan,
                "post_sq": self.sess.run(self._plain_sq),
            }
        self._feeds.append(feed_dict)
        self._judge(numbers, feed_dict, error)
        return result

    # -- the guard ----------------------------------------------------------------------
    def _start(self) -> None:
        self._started = True
        self.engine.start(
            model="tf.compat.v1 graph", optimizer=self._optimizer_name(), argv=list(sys.argv)
        )
        self._param_norm = math.sqrt(float(self.sess.run(self._plain_sq)))
        self.engine.take_snapshot(self._capture())
        self._feeds = []

    def _judge(self, numbers: dict[str, Any], feed: Any, error: Exception | None) -> None:
        loss = float(numbers["loss"])
        grad_norm = math.sqrt(float(numbers["grad_sq"])) if self._has_grads else 0.0
        post = math.sqrt(float(numbers["post_sq"]))
        obs = Observation(
            loss=loss, has_loss=True, grad_norm=grad_norm, param_norm=self._param_norm
        )
        problem = self.engine.classify(obs)
        corrupt = not math.isfinite(post)
        if error is None and problem is None and not corrupt:
            self.engine.after_update(obs)
            self._param_norm = post
            self._in_spike = False
            if self.engine.snapshot_due() and worth_snapshot(self.engine.history):
                self.engine.take_snapshot(self._capture())
                self._feeds = []
            return
        if self._muted:
            return  # warned once; the weights stay non-finite under policy="warn"
        if isinstance(problem, Spike) and error is None and not corrupt:
            if not self._in_spike:  # the update was applied: a warning, once per run of spikes
                self.engine.handle_spike(problem)
            self._in_spike = True
            self.engine.after_update(obs)
            self._param_norm = post
            return
        self._incident(obs, feed, error, corrupt)

    def _incident(
        self, obs: Observation, feed: Any, error: Exception | None, corrupt: bool
    ) -> None:
        engine = self.engine
        if error is not None:
            what = f"{type(error).__name__}: {_error_text(error)}"
        elif not math.isfinite(obs.loss):
            what = "non-finite loss"
        elif not obs.grads_finite:
            what = "non-finite gradients"
        else:
            what = "update diverged (non-finite weights after the update)"
        rebuilt = self._rebuild_pre_step()
        localized = self._localize(feed) if rebuilt and self.config.localize else None
        diagnosis = engine.explain(
            what=what,
            localized=localized,
            phase=localized.phase if localized is not None else Phase.UPDATE,
            force_divergence=corrupt and obs.grads_finite and math.isfinite(obs.loss),
        )
        if error is not None:
            evidence = dict(diagnosis.evidence)
            evidence["tensorflow_error"] = _error_text(error)
            diagnosis = _replace(diagnosis, evidence=evidence)
        decision = engine.act(diagnosis, state_corrupt=not rebuilt)
        if decision.action in (Action.ROLLBACK, Action.STOP) or rebuilt:
            self._param_norm = math.sqrt(float(self.sess.run(self._plain_sq)))
        if decision.action is Action.ROLLBACK or decision.action is Action.STOP:
            self._feeds = []
        elif rebuilt:
            self._feeds.pop()  # the failing step was undone: it is not replayed again
        if decision.action is Action.WARN and rebuilt:
            self._redo(feed)  # warn lets the update through
            self._muted = not math.isfinite(float(self.sess.run(self._plain_sq)))

    def _rebuild_pre_step(self) -> bool:
        """Restore the latest snapshot and replay the feeds since, except the failing one:
        the state right before the failing step (bit-exact on CPU without random ops)."""
        snap = self.engine.ring.latest
        if snap is None:
            return False
        self._restore(snap.state)
        for feed in self._feeds[:-1]:
            self.sess.run(self.train_op, feed)
        return True

    def _redo(self, feed: Any) -> None:
        self.sess.run(self.train_op, feed)

    def _localize(self, feed: Any) -> Diagnosis | None:
        """Evaluate the training graph on ``feed`` (no update): the first bad op."""
        order = [op for op in self.graph.get_operations() if op in self._ancestors]
        tensors = [
            t
            for op in order
            if _is_value_op(op)
            for t in op.outputs
            if t.dtype.base_dtype.is_floating and self.graph.is_fetchable(t)
        ]
        values = dict(zip([t.name for t in tensors], self.sess.run(tensors, feed), strict=True))
        finite = {name: is_finite(np.asarray(v)) for name, v in values.items()}
        for op in order:
            if _is_leaf(op):
                continue
            outs = [t.name for t in op.outputs if t.name in values]
            if not outs or all(finite[n] for n in outs):
                continue
            bad = [t for t in op.inputs if t.name in values and not finite[t.name]]
            if all(_is_leaf(t.op) for t in bad):  # finite inputs, or bad data/weights enter
                return diagnose(self._record(op, values), step=self.engine.step)
        return None

    def _record(self, op: Any, values: dict[str, Any], depth: int = 2) -> OpRecord:
        name = op.name
        phase = Phase.FORWARD
        forward = None
        anchor = op
        if _GRADIENTS.match(name) and "_grad/" in name:
            phase = Phase.BACKWARD
            fwd_name = _GRADIENTS.sub("", name).split("_grad/")[0]
            try:
                anchor = self.graph.get_operation_by_name(fwd_name)
            except KeyError:
                anchor = op
            else:
                forward = self._record(anchor, values, depth=max(depth - 1, 0))
        elif op.type.startswith(_STATEFUL_PREFIXES):
            phase = Phase.UPDATE
        inputs = [t for t in op.inputs if t.name in values]
        producers = tuple(
            self._record(t.op, values, depth - 1)
            if depth > 0 and not _is_leaf(t.op) and t.op.type not in _NOT_VALUES
            else None
            for t in inputs
        )
        leaves = tuple(
            None if p is not None else _leaf_name(t) for t, p in zip(inputs, producers, strict=True)
        )
        path, line, text = self._source(anchor)
        return OpRecord(
            op=op.type,
            neutral_op=neutral_op(op.type),
            phase=phase,
            module=anchor.name.rsplit("/", 1)[0] if "/" in anchor.name else None,
            path=path,
            line=line,
            source_line=text,
            dtype=op.outputs[0].dtype.base_dtype.name if op.outputs else None,
            inputs=tuple(tensor_stats(values[t.name]) for t in inputs),
            outputs=tuple(tensor_stats(values[t.name]) for t in op.outputs if t.name in values),
            scalars=tuple(
                float(np.asarray(values[t.name]).reshape(-1)[0])
                for t in inputs
                if t.op.type == "Const" and np.size(values[t.name]) == 1
            ),
            producers=producers,
            leaves=leaves,
            node=f"{anchor.type} gradient" if forward is not None else None,
            forward=forward,
        )

    def _source(self, op: Any) -> tuple[str | None, int | None, str | None]:
        for frame in reversed(op.traceback or ()):
            if self._frames.is_user(frame.filename):
                text = linecache.getline(frame.filename, frame.lineno).strip()
                return frame.filename, frame.lineno, text or None
        return None, None, None

    # -- state ----------------------------------------------------------------------------
    def _capture(self) -> list[np.ndarray]:
        return [np.array(v) for v in self.sess.run(self.variables)]

    def _restore(self, state: Sequence[np.ndarray]) -> None:
        self.sess.run(self._assign, dict(zip(self._placeholders, state, strict=True)))

    def _lrs(self) -> list[float]:
        if self._lr_tensor is None:
            return [math.nan]
        try:
            return [float(self.sess.run(self._lr_tensor))]
        except tf.errors.InvalidArgumentError:  # fed by a placeholder: unknown here
            return [math.nan]

    def _scale_lr(self, factor: float) -> None:
        if self._lr_var is not None:
            self.sess.run(self._lr_assign, {self._lr_ph: self._lrs()[0] * factor})

    def _trains(self, fetches: Any) -> bool:
        for item in tf.nest.flatten(fetches):
            element = self.graph.as_graph_element(item) if isinstance(item, str) else item
            op = element if isinstance(element, tf.Operation) else getattr(element, "op", None)
            if op is self.train_op:
                return True
        return False

    def _optimizer_name(self) -> str | None:
        ops = _update_ops(self.train_op)
        return ops[0].type if ops else None


# --- graph helpers --------------------------------------------------------------------------


def _update_ops(train_op: Any) -> list[Any]:
    """The optimizer's ``Apply*`` ops under ``train_op`` (through NoOp/group nodes)."""
    found, seen, stack = [], set(), [train_op]
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        if op.type.startswith(("Apply", "ResourceApply", "ResourceSparseApply", "SparseApply")):
            found.append(op)
            continue
        stack.extend(op.control_inputs)
        stack.extend(t.op for t in op.inputs)
    return found


def _grad_input(op: Any) -> Any:
    names = [a.name for a in op.op_def.input_arg]
    for arg in _GRAD_ARGS:
        if arg in names:
            return op.inputs[names.index(arg)]
    return None


def _learning_rate(updates: Sequence[Any]) -> Any:
    for op in updates:
        names = [a.name for a in op.op_def.input_arg]
        for arg in ("alpha", "lr"):
            if arg in names:
                return op.inputs[names.index(arg)]
    return None


def _ancestors(*roots: Any) -> set[Any]:
    seen: set[Any] = set()
    stack = list(roots)
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return seen


def _is_value_op(op: Any) -> bool:
    return (
        op.type not in _NOT_VALUES
        and not op.type.startswith(_STATEFUL_PREFIXES)
        and getattr(op, "_control_flow_context", None) is None
    )


def _is_leaf(op: Any) -> bool:
    """Ops that bring data or weights into the step: their values are inputs, not results."""
    if op.type in ("Placeholder", "PlaceholderWithDefault", "ReadVariableOp"):
        return True
    return op.type == "Identity" and bool(op.inputs) and op.inputs[0].op.type == "VariableV2"


def _leaf_name(t: Any) -> str:
    op = t.op
    if op.type.startswith("Placeholder"):
        return f"input {op.name}"
    if op.type == "ReadVariableOp":
        return f"parameter {op.inputs[0].op.name}"
    if op.type == "Identity" and op.inputs and op.inputs[0].op.type == "VariableV2":
        return f"parameter {op.inputs[0].op.name}"
    return "tensor"


def _error_text(error: Any) -> str:
    """The line of a TF error that says what happened ("Nan in summary histogram for: W")."""
    lines = [ln.strip() for ln in str(getattr(error, "message", error)).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("File ", "[[", "Stack trace"))]
    for ln in lines:
        if re.search(r"\b(nan|inf|infinity)\b", ln, re.IGNORECASE):
            return ln
    return next((ln for ln in lines if ln != "Graph execution error:"), type(error).__name__)


def _sum_squares(tensors: Sequence[Any]) -> Any:
    parts = [tf.reduce_sum(tf.square(tf.cast(t, tf.float32))) for t in tensors]
    return tf.add_n(parts) if parts else tf.constant(0.0)


def _replace(diagnosis: Diagnosis, **changes: Any) -> Diagnosis:
    import dataclasses

    return dataclasses.replace(diagnosis, **changes)
