"""NanTrap in real model.fit runs: each policy and category with an injected fault."""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from nantrap.errors import NanTrapError  # noqa: E402
from nantrap.findings import Category, Phase  # noqa: E402
from nantrap.guard.events import read_events  # noqa: E402
from nantrap.keras import NanTrap  # noqa: E402


def hand_ce(y, p):
    return -tf.reduce_mean(tf.reduce_sum(y * tf.math.log(p), axis=-1))


def _line_of(text):
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if text in line)


def classifier(loss=hand_ce, *, lr=0.1, jit_compile=True, activation="softmax"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, activation=activation, name="head"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss, jit_compile=jit_compile)
    return model


def data(n=64, *, blow_up=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(n) % 3]
    if blow_up is not None:
        x[blow_up] *= 1000.0  # these rows drive the softmax to exact 0 -> log(0)
    return x, y


def weights_finite(model):
    return all(np.isfinite(w).all() for w in model.get_weights())


def test_skip_under_xla_drops_the_bad_update_and_names_log_of_softmax(tmp_path):
    model = classifier(jit_compile=True)
    x, y = data(blow_up=slice(40, 48))
    trap = NanTrap(policy="skip", log_dir=tmp_path)
    hist = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
    (d,) = trap.diagnoses
    assert (d.code, d.category, d.phase, d.step, d.action) == (
        "NT101",
        Category.DOMAIN,
        Phase.FORWARD,
        5,
        "skipped",
    )
    assert d.neutral_op == "log" and d.op == "Log" and d.module == "compile_loss/hand_ce"
    assert d.source == f"{__file__}:{_line_of('tf.math.log(p)')}"
    assert "softmax in head" in d.message
    assert d.evidence["producer"]["module"] == "head"
    assert d.evidence["inputs"][0]["zeros"] > 0
    assert weights_finite(model) and math.isfinite(hist.history["loss"][0])
    assert int(model.optimizer.iterations.numpy()) == 7  # 8 batches, one dropped
    events = read_events(tmp_path / "events.jsonl")
    assert next(e["type"] for e in events) == "run" and events[-1]["type"] == "end"
    assert events[0]["framework"] == "keras" and events[0]["policy"] == "skip"
    action = next(e for e in events if e["type"] == "action")
    assert action["action"] == "skip" and action["step"] == 5
    assert next(e for e in events if e["type"] == "diagnosis")["code"] == "NT101"
    assert model.train_function is None and "train_step" not in vars(model)  # unpatched


def test_raise_keeps_the_weights_of_the_last_good_step():
    model = classifier(jit_compile=False)
    x, y = data(blow_up=slice(16, 24))
    model.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0, shuffle=False)
    with pytest.raises(NanTrapError) as err:
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[NanTrap(policy="raise")],
        )
    assert err.value.diagnosis.code == "NT101" and err.value.diagnosis.step == 2
    assert weights_finite(model)
    model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)  # the model still trains
    assert "train_step" not in vars(model)


def test_backward_only_fault_and_bad_data_are_told_apart():
    def sqrt_norm_loss(y, z):
        return tf.reduce_mean(tf.square(y - z)) + tf.sqrt(
            tf.reduce_sum((z - tf.stop_gradient(z)) ** 2)
        )

    model = classifier(sqrt_norm_loss, activation=None)
    x, y = data(16)
    trap = NanTrap(policy="skip")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[trap])
    d = trap.diagnoses[0]
    assert (d.code, d.phase, d.neutral_op) == ("NT111", Phase.BACKWARD, "sqrt")
    assert "tf.sqrt(" in d.location.source_line

    keras.utils.set_random_seed(0)
    cnn = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="fc"),
        ]
    )
    cnn.compile(
        optimizer="sgd",
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    images = np.random.default_rng(1).normal(size=(16, 8, 8, 1)).astype("float32")
    images[11, 2, 3, 0] = np.nan  # MaxPool drops NaN: the loss stays finite, grads do not
    trap = NanTrap(policy="skip")
    cnn.fit(images, y[:16], batch_size=8, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
    (d,) = trap.diagnoses
    assert (d.code, d.category, d.step, d.module) == ("NT401", Category.BAD_DATA, 1, "conv")
    assert d.evidence["stats"]["nan"] == 1
    assert weights_finite(cnn)


def test_learning_rate_too_high_rolls_back_lowers_lr_and_recovers(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")

    def regressor(lr):
        keras.utils.set_random_seed(0)
        m = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)]
        )
        m.compile(optimizer=keras.optimizers.SGD(lr), loss="mse", jit_compile=True)
        return m

    sane = regressor(0.01)
    sane_loss = sane.fit(x, y, batch_size=32, epochs=6, verbose=0).history["loss"][-1]
    model = regressor(3.0)
    trap = NanTrap(
        policy="rollback", log_dir=tmp_path, snapshot_every=4, lr_decay=0.1, max_retries=4
    )
    hist = model.fit(x, y, batch_size=32, epochs=6, verbose=0, callbacks=[trap])
    incidents = [d for d in trap.diagnoses if d.incident]
    assert incidents and incidents[0].code == "NT301"
    assert incidents[0].category is Category.DIVERGENCE
    assert "too high" in incidents[0].message and incidents[0].action == "rolled-back"
    lr = float(model.optimizer.learning_rate.numpy())
    assert lr <= 3.0 * 0.1 + 1e-6
    assert weights_finite(model)
    assert hist.history["loss"][-1] < 2 * sane_loss + 0.05
    actions = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "action"]
    assert actions[0]["action"] == "rollback" and actions[0]["lr_after"] < actions[0]["lr_before"]


def test_stop_restores_the_last_snapshot_and_warn_lets_the_update_through():
    model = classifier(jit_compile=False)
    x, y = data(blow_up=slice(32, 40))
    trap = NanTrap(policy="stop", snapshot_every=2)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[trap], shuffle=False)
    assert trap.diagnoses[0].action == "stopped" and model.stop_training
    assert int(model.optimizer.iterations.numpy()) == 4  # back at the snapshot before step 4
    assert weights_finite(model)

    model = classifier(jit_compile=False)
    trap = NanTrap(policy="warn")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
    assert [d.action for d in trap.diagnoses] == ["warned"]  # then muted: state is NaN
    assert trap.diagnoses[0].code == "NT101"  # localized before the bad update went through
    assert not weights_finite(model)


def test_early_warnings_saturation_and_clip_trap():
    def clipped_ce(y, p):
        return -tf.reduce_mean(tf.reduce_sum(y * tf.math.log(tf.clip_by_value(p, 1e-8, 1.0)), -1))

    model = classifier(clipped_ce, jit_compile=True)
    model.get_layer("hidden").kernel.assign(model.get_layer("hidden").kernel * 50.0)
    x, y = data()
    trap = NanTrap(policy="skip", early_warnings=1, warning_budget=1.0)
    hist = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[trap])
    assert math.isfinite(hist.history["loss"][0])  # no NaN: the clip hides it
    codes = {d.code: d for d in trap.diagnoses}
    assert not any(d.incident for d in trap.diagnoses)
    clip = codes["NT102"]
    assert clip.category is Category.CLIP_TRAP and clip.evidence["clipped_share"] > 0.05
    assert "zero gradient" in clip.message and "tf.clip_by_value" in clip.location.source_line
    sat = codes["NT204"]
    assert sat.module == "head" and sat.evidence["saturated_share"] > 0.01
    steps = [e for e in trap.events if e["type"] == "step" and "ranges" in e]
    assert steps and "head" in steps[0]["ranges"]


def test_spike_is_gated_in_graph_with_on_spike_skip():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True).astype("float32")
    y[400:416] += 500.0  # one batch of corrupt targets: a finite loss spike
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=True)
    trap = NanTrap(policy="skip", on_spike="skip", spike_warmup=5)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
    (d,) = [d for d in trap.diagnoses if d.code == "NT302"]
    assert d.step == 25 and d.action == "skipped"
    assert int(model.optimizer.iterations.numpy()) == 31


def test_mixed_precision_loss_scale_overflows_are_not_incidents():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
        )
        opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=2.0**40)
        model.compile(
            optimizer=opt,
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        x, y = data()
        trap = NanTrap(policy="raise")
        hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[trap])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert not trap.diagnoses and trap.guard.scale_skips > 0  # fp16 overflows, handled by LSO
    assert float(opt.dynamic_scale.numpy()) < 2.0**40 and math.isfinite(hist.history["loss"][-1])


def test_a_dropped_step_leaves_no_nan_in_batchnorm_statistics():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, name="hidden"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(3, name="head"),
        ]
    )
    model.compile(optimizer="sgd", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    x, y = data(32)
    x[9] = np.nan  # batch 1: its moving-statistics update would be NaN
    trap = NanTrap(policy="skip")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
    assert [(d.code, d.step) for d in trap.diagnoses] == [("NT401", 1)]
    bn = model.get_layer("bn")
    assert (
        np.isfinite(bn.moving_mean.numpy()).all() and np.isfinite(bn.moving_variance.numpy()).all()
    )
    assert weights_finite(model)


def test_a_step_that_raises_ends_the_guard_and_leaves_no_patch(tmp_path):
    def broken_loss(y, p):
        raise ValueError("user bug in the loss")

    model = classifier(broken_loss, jit_compile=False)
    x, y = data(16)
    trap = NanTrap(policy="skip", log_dir=tmp_path)
    with pytest.raises(ValueError, match="user bug"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[trap])
    assert "train_step" not in vars(model) and "compute_loss" not in vars(model)
    assert "apply" not in vars(model.optimizer) and model.train_function is None
    end = read_events(tmp_path / "events.jsonl")[-1]
    assert (end["type"], end["status"]) == ("end", "error")
