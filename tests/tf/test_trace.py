"""The eager op tracer on real Keras train steps: the first bad op, its layer, its line."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from nantrap.findings import Phase  # noqa: E402
from nantrap.tf.trace import OpTrace, neutral_op  # noqa: E402


def hand_ce(y, p):
    return -tf.reduce_mean(tf.reduce_sum(y * tf.math.log(p), axis=-1))


def sqrt_norm_loss(y, z):
    return tf.reduce_mean(tf.square(y - z)) + tf.sqrt(tf.reduce_sum((z - tf.stop_gradient(z)) ** 2))


def _model(loss, activation="softmax", jit_compile=False):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, activation=activation, name="head"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, jit_compile=jit_compile)
    return model


def _batch(scale=1.0):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(16, 4)).astype("float32") * scale)
    y = tf.constant(np.eye(3, dtype="float32")[np.arange(16) % 3])
    return x, y


def test_softmax_underflow_then_log_is_named_at_the_log_with_its_layer_and_line():
    model = _model(hand_ce)
    model.get_layer("hidden").kernel.assign(model.get_layer("hidden").kernel * 300.0)
    x, y = _batch()
    with OpTrace(model, inputs=(x, y)) as tr:
        model.train_step((x, y))
    ev = tr.origin()
    assert (ev.op, ev.neutral_op, ev.phase) == ("Log", "log", Phase.FORWARD)
    assert ev.path == __file__ and "tf.math.log(p)" in ev.source_line
    assert ev.bad_inputs() == [] and not ev.finite
    stats = ev.input_stats(0)
    assert stats.zeros > 0 and stats.min == 0.0 and stats.finite
    producer = tr.source_of(ev.inputs[0])
    assert (producer.op, producer.module, producer.layer_index) == (
        "Softmax",
        "head",
        "model.layers[1]",
    )
    assert producer.output_stats().zeros == stats.zeros
    # the model's weights are untouched by tracing itself: only the replayed update changed them
    assert tr.events[-1].index == len(tr.events) - 1


def test_backward_only_fault_is_named_in_the_gradient_of_sqrt():
    model = _model(sqrt_norm_loss, activation=None)
    x, y = _batch()
    with OpTrace(model, inputs=(x, y)) as tr:
        logs = model.train_step((x, y))
    assert np.isfinite(float(logs["loss"]))  # the forward pass is clean
    ev = tr.origin()
    assert ev.phase is Phase.BACKWARD
    assert (ev.op, neutral_op(ev.op), tr.forward_of(ev).op) == ("SqrtGrad", "sqrt", "Sqrt")
    assert ev.module == tr.forward_of(ev).module
    assert "tf.sqrt(" in ev.source_line
    assert tr.forward_of(ev).input_stats(0).zeros == 1


def test_nan_in_the_batch_is_a_data_leaf_not_an_op():
    model = _model("categorical_crossentropy")
    x, y = _batch()
    x = tf.tensor_scatter_nd_update(x, [[3, 1]], [float("nan")])
    with OpTrace(model, inputs=(x, y)) as tr:
        model.train_step((x, y))
    ev = tr.origin()
    assert ev.op == "MatMul" and ev.module == "hidden"
    assert tr.root_leaf(ev) == (0, "input 0")
    assert ev.input_stats(0).nan == 1


def test_intentional_minus_inf_mask_is_not_an_incident():
    class Masked(keras.layers.Layer):
        def call(self, z):
            mask = tf.constant([0.0, 0.0, -np.inf])
            return tf.nn.softmax(z + mask)

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), Masked()])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x, y = _batch()
    with OpTrace(model, inputs=(x, y)) as tr:
        logs = model.train_step((x, y))
    assert np.isfinite(float(logs["loss"]))
    assert tr.origin() is None
    assert any(not e.finite for e in tr.events)  # the -inf was seen, and not blamed


def test_functions_and_xla_run_op_by_op_inside_the_trace():
    model = _model(hand_ce, jit_compile=True)

    @tf.function(jit_compile=True)
    def step(x):
        return tf.math.log(model(x))

    x, _ = _batch(scale=0.0)
    with OpTrace(model) as tr:
        step(x)
    assert "Log" in [e.op for e in tr.events]
    assert not tf.config.functions_run_eagerly()


def test_nan_weight_is_a_parameter_leaf_and_diagnosed_as_nt403():
    from nantrap.tf.localize import localize

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    model.compile(optimizer="sgd", loss="mse")
    kernel = model.get_layer("fc").kernel
    value = kernel.numpy()
    value[1, 2] = np.nan
    kernel.assign(value)
    x, y = tf.ones((2, 4)), tf.zeros((2, 3))
    d = localize(lambda: model.train_step((x, y)), model, inputs=(x, y), step=3)
    assert (d.code, d.module, d.step) == ("NT403", "fc", 3)
    assert d.evidence["tensor"].endswith("fc/kernel") and d.evidence["stats"]["nan"] == 1
