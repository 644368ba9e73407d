"""The probe's ring of per-step rows (Keras ``steps_per_execution``): one host read returns
every step since the last one, in order, also when the steps ran under XLA."""

from __future__ import annotations

import math

import pytest

tf = pytest.importorskip("tensorflow")

from nantrap.errors import ConfigError  # noqa: E402
from nantrap.tf.probe import Probe  # noqa: E402


def stepper(probe, w):
    @tf.function(jit_compile=True)
    def step(loss):
        grads = [tf.fill([2], loss)]
        return probe.guarded_apply(lambda: w.assign_sub(grads[0]), grads, [w], loss=loss)

    return step


def test_read_new_returns_each_step_of_an_execution_in_order():
    probe, w = Probe(rows=4), tf.Variable([1.0, 1.0])
    step = stepper(probe, w)
    assert probe.read_new() == []
    for loss in (0.5, math.nan, 0.25):
        step(tf.constant(loss))
    first = probe.read_new()
    assert [r.steps for r in first] == [1, 2, 3]
    assert [r.applied for r in first] == [True, False, True]  # the NaN step was gated
    assert first[0].loss == 0.5 and math.isnan(first[1].loss) and first[2].loss == 0.25
    assert w.numpy().tolist() == [0.25, 0.25]
    for loss in (1.0, 2.0, 3.0, 4.0, 5.0):  # more steps than rows: the oldest is lost
        step(tf.constant(loss))
    assert [(r.steps, r.loss) for r in probe.read_new()] == [(5, 2.0), (6, 3.0), (7, 4.0), (8, 5.0)]
    assert probe.read().steps == 8 and probe.read_new() == []


def test_rows_must_be_a_positive_int():
    for rows in (0, -1, 2.0, True):
        with pytest.raises(ConfigError, match="rows"):
            Probe(rows=rows)


def test_the_step_count_stays_exact_past_float32_integers():
    probe, w = Probe(rows=2), tf.Variable([1.0, 1.0])
    start = 2**24 + 1  # float32 would count 2**24 + 1 + 1 as 2**24 + 2 ... and then stop
    values = probe.values.numpy()
    values[0, -1] = start
    probe.values.assign(values)
    probe.read_new()
    step = stepper(probe, w)
    for loss in (1.0, 2.0, 3.0):
        step(tf.constant(loss))
    new = probe.read_new()
    assert [(r.steps, r.loss) for r in new] == [(start + 2, 2.0), (start + 3, 3.0)]
