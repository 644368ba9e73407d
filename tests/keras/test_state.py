"""Snapshots of Keras training state restore bit-exactly (XLA, dropout, BatchNorm, Adam)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from nantrap.errors import ConfigError  # noqa: E402
from nantrap.keras.state import VariableState, keras_state_variables  # noqa: E402


def _model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    return model


def test_restore_is_bit_exact_and_training_continues_identically():
    model = _model()
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    fit = dict(batch_size=16, epochs=1, verbose=0, shuffle=False)
    model.fit(x, y, **fit)
    state = VariableState(keras_state_variables(model))
    names = set(state.names)
    for suffix in (
        "/iteration",
        "/learning_rate",
        "seed_generator_state",
        "moving_mean",
        "kernel_velocity",
    ):
        assert any(n.endswith(suffix) for n in names), suffix
    before = state.capture()
    model.fit(x, y, **fit)
    first = state.capture()
    assert state.differing(before, first)
    state.restore(before)
    assert VariableState.equal(state.capture(), before)
    model.fit(x, y, **fit)  # the same batches, the same dropout masks, the same Adam steps
    assert VariableState.equal(state.capture(), first)


def test_restore_refuses_a_state_of_another_model_before_touching_anything():
    model = _model()
    model.fit(np.zeros((8, 8), "float32"), np.zeros(8, "int32"), verbose=0)
    state = VariableState(keras_state_variables(model))
    good = state.capture()
    bad = {"names": good["names"][:-1], "values": good["values"][:-1]}
    with pytest.raises(ConfigError, match="does not match"):
        state.restore(bad)
    shapes = {"names": good["names"], "values": [v[..., None] for v in good["values"]]}
    with pytest.raises(ConfigError, match="shape"):
        state.restore(shapes)
    assert VariableState.equal(state.capture(), good)
