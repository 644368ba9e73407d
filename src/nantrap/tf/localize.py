"""Localize a bad TensorFlow step: replay it eagerly under :class:`OpTrace` and diagnose the
first bad op on the path to the non-finite loss, gradient or update.

The replay runs with ``tf.function`` disabled, so a model compiled with ``jit_compile=True``
(XLA, where ``tf.debugging.enable_check_numerics`` cannot run) is replayed op by op without
XLA. The caller restores state around the replay (the Keras guard does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from nantrap.findings import Diagnosis
from nantrap.guard.diagnose import OpRecord, diagnose
from nantrap.tf._stats import tensor_stats
from nantrap.tf.trace import OpEvent, OpTrace

__all__ = ["localize", "record"]


def localize(
    run_step: Callable[[], object],
    model: Any = None,
    *,
    inputs: Any = None,
    step: int | None = None,
) -> Diagnosis | None:
    """Run ``run_step()`` eagerly under op tracing; the Diagnosis of the first bad op, or
    None if the step ran finite.

    ``run_step`` may include the optimizer update (a Keras ``train_step``): an op that
    overflows in the update is then named too. ``inputs`` (the batch) names data leaves.

    >>> localize(lambda: model.train_step((x, y)), model, inputs=(x, y), step=12)  # doctest: +SKIP
    """
    with OpTrace(model, inputs=inputs) as trace:
        run_step()
    return explain(trace, step=step)


def explain(trace: OpTrace, *, step: int | None = None) -> Diagnosis | None:
    """The Diagnosis of ``trace``'s first bad op (None if it has none)."""
    ev = trace.origin()
    if ev is None:
        return None
    found = diagnose(record(trace, ev), step=step)
    anchor = trace.forward_of(ev)
    evidence = dict(found.evidence)
    if anchor.layer_index:
        evidence["layer"] = anchor.layer_index
    evidence["framework_op"] = ev.op
    return dataclasses.replace(found, evidence=evidence)


def record(trace: OpTrace, ev: OpEvent, *, depth: int = 3) -> OpRecord:
    """The framework-neutral view of ``ev`` (producers ``depth`` levels up) for ``diagnose``."""
    producers = tuple(
        record(trace, trace.events[p], depth=depth - 1) if p is not None and depth > 0 else None
        for p in ev.producers
    )
    forward = None
    if ev.forward is not None:
        forward = record(trace, trace.events[ev.forward], depth=max(depth - 1, 1))
    scalars = tuple(
        float(t.numpy().reshape(-1)[0])
        for t, p in zip(ev.inputs, ev.producers, strict=True)
        if p is None and t.shape.num_elements() == 1
    )
    return OpRecord(
        op=ev.op,
        neutral_op=ev.neutral_op,
        phase=ev.phase,
        module=ev.module,
        path=ev.path,
        line=ev.line,
        source_line=ev.source_line,
        dtype=ev.dtype,
        inputs=tuple(tensor_stats(t) for t in ev.inputs),
        outputs=tuple(tensor_stats(t) for t in ev.outputs),
        scalars=scalars,
        producers=producers,
        leaves=ev.leaves,
        node=f"{trace.forward_of(ev).op} gradient" if ev.forward is not None else None,
        forward=forward,
    )
