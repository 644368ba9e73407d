"""NanTrap with ``steps_per_execution`` > 1: every step of an execution is judged, with its
own batch, its own seed states and its true step number."""

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

BATCH = 8


def hand_ce(y, p):
    return -tf.reduce_mean(tf.reduce_sum(y * tf.math.log(p), axis=-1))


def classifier(*, spe=1, lr=0.1, jit_compile=True, dropout=0.0):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((4,))]
    if dropout:
        layers.append(keras.layers.Dropout(dropout, name="drop"))
    layers += [
        keras.layers.Dense(8, activation="relu", name="hidden"),
        keras.layers.Dense(3, activation="softmax", name="head"),
    ]
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=hand_ce,
        jit_compile=jit_compile,
        steps_per_execution=spe,
    )
    return model


def data(batches=8, *, bad_batch=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batches * BATCH, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(batches * BATCH) % 3]
    if bad_batch is not None:
        x[bad_batch * BATCH : (bad_batch + 1) * BATCH] *= 1000.0  # softmax -> 0 -> log(0)
    return x, y


def fit(model, x, y, trap=None, epochs=1):
    callbacks = [] if trap is None else [trap]
    kw = dict(batch_size=BATCH, epochs=epochs, verbose=0, shuffle=False)
    return model.fit(x, y, callbacks=callbacks, **kw)


def unguarded(x, y, steps, **kw):
    """A plain model trained batch by batch on ``steps`` (batch indices): (losses, weights)."""
    model = classifier(**kw)
    losses = [
        float(model.train_on_batch(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]))
        for i in steps
    ]
    return losses, model.get_weights()


def step_losses(events):
    return {e["step"]: e["loss"] for e in events if e["type"] == "step"}


def assert_same_weights(a, b):
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_clean_run_logs_every_step_as_with_one_step_per_execution():
    x, y = data(10)  # executions of 4, 4 and 2 steps
    ref, ref_weights = unguarded(x, y, range(10), jit_compile=False)
    for spe in (1, 4):
        model = classifier(spe=spe, jit_compile=False)
        trap = NanTrap(policy="skip", log_every=1, early_warnings=0)
        fit(model, x, y, trap)
        losses = step_losses(trap.events)
        assert sorted(losses) == list(range(10)), spe
        np.testing.assert_allclose([losses[s] for s in range(10)], ref, rtol=1e-5)
        assert_same_weights(model.get_weights(), ref_weights)
        assert not trap.diagnoses and trap.events[-1] == {
            **trap.events[-1],
            "type": "end",
            "step": 10,
        }


def test_skip_drops_exactly_the_bad_step_of_an_execution(tmp_path):
    x, y = data(bad_batch=5)  # step 1 of the second execution of 4
    model = classifier(spe=4, jit_compile=True)
    trap = NanTrap(policy="skip", log_dir=tmp_path, log_every=1)
    hist = fit(model, x, y, trap)
    (d,) = trap.diagnoses
    assert (d.code, d.category, d.phase, d.step, d.action) == (
        "NT101",
        Category.DOMAIN,
        Phase.FORWARD,
        5,
        "skipped",
    )
    assert d.neutral_op == "log" and d.op == "Log" and d.module == "compile_loss/hand_ce"
    assert d.evidence["producer"]["module"] == "head"
    assert int(model.optimizer.iterations.numpy()) == 7
    # the later steps of the execution ran from the weights without step 5's update
    ref, ref_weights = unguarded(x, y, [0, 1, 2, 3, 4, 6, 7])
    assert_same_weights(model.get_weights(), ref_weights)
    assert math.isfinite(hist.history["loss"][0])
    events = read_events(tmp_path / "events.jsonl")
    (action,) = [e for e in events if e["type"] == "action"]
    assert action["action"] == "skip" and action["step"] == 5
    losses = step_losses(events)
    assert sorted(losses) == [0, 1, 2, 3, 4, 6, 7]  # true step numbers, 5 skipped
    np.testing.assert_allclose([losses[s] for s in (0, 1, 2, 3, 4, 6, 7)], ref, rtol=1e-5)
    assert events[-1]["type"] == "end" and events[-1]["step"] == 8


def test_stop_restores_the_snapshot_at_the_execution_boundary():
    x, y = data(bad_batch=5)
    model = classifier(spe=4, jit_compile=False)
    trap = NanTrap(policy="stop", snapshot_every=1)  # due every step: taken at boundaries
    fit(model, x, y, trap, epochs=2)
    (d,) = trap.diagnoses
    assert (d.code, d.step, d.action) == ("NT101", 5, "stopped") and model.stop_training
    assert int(model.optimizer.iterations.numpy()) == 4
    _, ref_weights = unguarded(x, y, range(4), jit_compile=False)
    assert_same_weights(model.get_weights(), ref_weights)
    assert trap.engine.step == 4 and trap.events[-1]["status"] == "stopped"


def test_rollback_lowers_the_lr_and_recovers_with_four_steps_per_execution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(3.0), loss="mse", jit_compile=True, steps_per_execution=4
    )
    trap = NanTrap(policy="rollback", snapshot_every=4, lr_decay=0.1, max_retries=4)
    hist = model.fit(x, y, batch_size=32, epochs=6, verbose=0, callbacks=[trap])
    incidents = [d for d in trap.diagnoses if d.incident]
    assert incidents and incidents[0].code == "NT301" and incidents[0].action == "rolled-back"
    assert float(model.optimizer.learning_rate.numpy()) <= 0.3 + 1e-6
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert math.isfinite(hist.history["loss"][-1]) and hist.history["loss"][-1] < 1.0
    restored = [e["to_step"] for e in trap.events if e["type"] == "action"]
    assert restored and all(s % 4 == 0 for s in restored)  # snapshots at boundaries only


def test_replay_of_a_step_uses_that_steps_dropout_masks():
    x, y = data()
    x[5 * BATCH + 2, 0] = 1e4  # one element: the fault happens only if dropout keeps it
    # not under XLA: its stateless RNG draws other masks than the eager replay's kernels
    model = classifier(spe=4, dropout=0.5, jit_compile=False)
    trap = NanTrap(policy="skip", early_warnings=0)
    fit(model, x, y, trap)
    # with another step's seed states (the last step's, say) the replay drops the element
    # and runs finite (NT903); with step 5's own it finds the log of the zero softmax
    (d,) = trap.diagnoses
    assert (d.code, d.step, d.module) == ("NT101", 5, "compile_loss/hand_ce")
    assert d.evidence["producer"]["module"] == "head"
    assert int(model.optimizer.iterations.numpy()) == 7


def test_spikes_are_gated_from_the_execution_after_the_warm_up():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True).astype("float32")
    y[96:112] += 500.0  # step 6: in the execution (4-7) during which the warm-up ends
    y[400:416] += 500.0  # step 25: the ceiling is armed in the graph by then
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=True, steps_per_execution=4
    )
    trap = NanTrap(policy="skip", on_spike="skip", spike_warmup=5)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
    spikes = [(d.step, d.action) for d in trap.diagnoses if d.code == "NT302"]
    # step 6 went through (only a warning can say so); step 25 was dropped in the graph
    assert spikes == [(6, None), (25, "skipped")]
    assert int(model.optimizer.iterations.numpy()) == 31


def test_raise_ends_fit_after_the_execution_with_the_bad_update_dropped():
    x, y = data(bad_batch=5)
    model = classifier(spe=4, jit_compile=False)
    with pytest.raises(NanTrapError) as err:
        fit(model, x, y, NanTrap(policy="raise"))
    assert (err.value.diagnosis.code, err.value.diagnosis.step) == ("NT101", 5)
    # steps 6 and 7 of the execution ran (from the weights without step 5's update)
    assert int(model.optimizer.iterations.numpy()) == 7
    _, ref_weights = unguarded(x, y, [0, 1, 2, 3, 4, 6, 7], jit_compile=False)
    assert_same_weights(model.get_weights(), ref_weights)
    assert "train_step" not in vars(model) and model.train_function is None
