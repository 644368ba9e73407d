"""guard_step on a custom GradientTape loop, compiled with XLA."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import nantrap.tf as ntf  # noqa: E402
from nantrap.errors import ConfigError, NanTrapError  # noqa: E402
from nantrap.findings import Phase  # noqa: E402

BAD = 3


def _setup():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    return model, keras.optimizers.Adam(1e-2)


def _batches():
    rng = np.random.default_rng(0)
    out = []
    for i in range(6):
        x = rng.normal(size=(8, 4)).astype("float32")
        y = rng.normal(size=(8, 1)).astype("float32")
        w = rng.uniform(0.5, 2.0, size=(8, 1)).astype("float32")
        if i == BAD:
            w[:] = 0.0  # sample weights of 0: log(w) = -inf
        out.append(tuple(tf.constant(a) for a in (x, y, w)))
    return out


def _loop(guard, model, optimizer):
    @guard
    @tf.function(jit_compile=True)
    def train_step(x, y, w):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = tf.reduce_mean(tf.square(y - pred) * tf.math.log(1.0 + w) - tf.math.log(w))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    losses = []
    for batch in _batches():
        losses.append(float(train_step(*batch)))
        if guard.stopped:
            break
    return losses


def test_skip_names_the_log_and_keeps_training():
    model, opt = _setup()
    with ntf.guard_step(model, opt, policy="skip") as guard:
        losses = _loop(guard, model, opt)
    (d,) = guard.diagnoses
    assert (d.code, d.neutral_op, d.phase, d.step, d.action) == (
        "NT103",
        "log",
        Phase.FORWARD,
        BAD,
        "skipped",
    )
    assert "tf.math.log(w)" in d.location.source_line
    assert d.evidence["inputs"][0]["zeros"] == 8
    assert not np.isfinite(losses[BAD]) and np.isfinite(losses[-1])
    assert int(opt.iterations.numpy()) == len(losses) - 1
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert guard.events[-1]["type"] == "end"
    assert "apply" not in vars(opt)


def test_raise_and_bad_options():
    model, opt = _setup()
    guard = ntf.guard_step(model, opt, policy="raise")
    with pytest.raises(NanTrapError, match="NT103"):
        _loop(guard, model, opt)
    assert "apply" not in vars(opt)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    with pytest.raises(ConfigError, match="policy"):
        ntf.guard_step(model, opt, policy="explode")
    with pytest.raises(ConfigError, match="Keras 3 optimizer"):
        ntf.guard_step(model, object())
