"""NanTrap on Keras 3 with the torch backend: real ``model.fit`` runs with injected faults.

Keras picks its backend once per process, so ``test_torch_backend.py`` runs this file in a
subprocess with ``KERAS_BACKEND=torch``; each scenario returns plain facts (JSON) that the
test asserts on. ``python torch_backend_scenarios.py NAME...`` runs some of them.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import traceback

os.environ["KERAS_BACKEND"] = "torch"

import keras
import numpy as np
import torch
from keras import ops

from nantrap.errors import NanTrapError
from nantrap.guard.events import read_events
from nantrap.keras import NanTrap
from nantrap.keras.state import VariableState, keras_state_variables

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def hand_ce(y, p):
    return -ops.mean(ops.sum(y * ops.log(p), axis=-1))


def line_of(text):
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if text in line and "line_of" not in line)


def classifier(loss=hand_ce, *, lr=0.1, activation="softmax", dropout=0.0):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="hidden")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout, name="drop"))
    layers.append(keras.layers.Dense(3, activation=activation, name="head"))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss)
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


def facts(d):
    """The parts of a Diagnosis the tests look at."""
    return {
        "code": d.code,
        "category": d.category.value,
        "phase": d.phase.value if d.phase else None,
        "step": d.step,
        "action": d.action,
        "op": d.op,
        "neutral_op": d.neutral_op,
        "module": d.module,
        "source": d.source,
        "source_line": d.location.source_line,
        "message": d.message,
        "incident": d.incident,
        "evidence": json.loads(json.dumps(d.evidence, default=str)),
    }


@scenario
def skip_names_log_of_softmax():
    model = classifier(dropout=0.25)
    x, y = data(blow_up=slice(40, 48))
    with tempfile.TemporaryDirectory() as tmp:
        trap = NanTrap(policy="skip", log_dir=tmp)
        hist = model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
        events = read_events(os.path.join(tmp, "events.jsonl"))
    return {
        "diagnoses": [facts(d) for d in trap.diagnoses],
        "log_line": line_of("ops.log(p)"),
        "finite": weights_finite(model),
        "loss": hist.history["loss"][0],
        "iterations": int(model.optimizer.iterations),
        "event_types": [e["type"] for e in events],
        "framework": events[0]["framework"],
        "actions": [(e["action"], e["step"]) for e in events if e["type"] == "action"],
        "unpatched": model.train_function is None and "train_step" not in vars(model),
        "optimizer_unpatched": "apply" not in vars(model.optimizer),
    }


@scenario
def raise_keeps_last_good_weights():
    model = classifier()
    x, y = data(blow_up=slice(16, 24))
    model.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0, shuffle=False)
    trap = NanTrap(policy="raise")
    try:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[trap])
        raised = None
    except NanTrapError as e:
        raised = e
    finite = weights_finite(model)
    model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)  # the model still trains
    return {
        "raised": facts(raised.diagnosis) if raised else None,
        "finite": finite and weights_finite(model),
        "unpatched": "train_step" not in vars(model) and "apply" not in vars(model.optimizer),
    }


@scenario
def backward_fault_and_bad_data():
    def sqrt_norm_loss(y, z):
        return ops.mean(ops.square(y - z)) + ops.sqrt(
            ops.sum((z - ops.stop_gradient(z)) ** 2)  # sqrt'(0) = inf: backward only
        )

    model = classifier(sqrt_norm_loss, activation=None)
    x, y = data(16)
    trap = NanTrap(policy="skip")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[trap])
    sqrt = facts(trap.diagnoses[0])

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
    cnn.compile(optimizer="sgd", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(1).normal(size=(16, 8, 8, 1)).astype("float32")
    images[11, 2, 3, 0] = np.nan
    trap = NanTrap(policy="skip")
    cnn.fit(images, y[:16], batch_size=8, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
    return {
        "sqrt": sqrt,
        "sqrt_line": line_of("ops.sqrt("),
        "data": [facts(d) for d in trap.diagnoses],
        "cnn_finite": weights_finite(cnn),
    }


@scenario
def lr_too_high_rolls_back():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")

    def regressor(lr):
        keras.utils.set_random_seed(0)
        m = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)]
        )
        m.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
        return m

    sane_loss = regressor(0.01).fit(x, y, batch_size=32, epochs=6, verbose=0).history["loss"][-1]
    plain = regressor(3.0)
    plain_loss = plain.fit(x, y, batch_size=32, epochs=6, verbose=0).history["loss"][-1]
    model = regressor(3.0)
    with tempfile.TemporaryDirectory() as tmp:
        trap = NanTrap(
            policy="rollback", log_dir=tmp, snapshot_every=4, lr_decay=0.1, max_retries=4
        )
        hist = model.fit(x, y, batch_size=32, epochs=6, verbose=0, callbacks=[trap])
        events = read_events(os.path.join(tmp, "events.jsonl"))
    actions = [e for e in events if e["type"] == "action"]
    return {
        "plain_loss": plain_loss,
        "sane_loss": sane_loss,
        "loss": hist.history["loss"][-1],
        "incidents": [facts(d) for d in trap.diagnoses if d.incident],
        "lr": float(model.optimizer.learning_rate),
        "finite": weights_finite(model),
        "first_action": actions[0] if actions else None,
    }


@scenario
def stop_and_warn():
    x, y = data(blow_up=slice(32, 40))
    model = classifier()
    trap = NanTrap(policy="stop", snapshot_every=2)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[trap], shuffle=False)
    stop = {
        "actions": [d.action for d in trap.diagnoses],
        "stop_training": bool(model.stop_training),
        "iterations": int(model.optimizer.iterations),
        "finite": weights_finite(model),
    }
    model = classifier()
    trap = NanTrap(policy="warn")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
    return {
        "stop": stop,
        "warn_actions": [d.action for d in trap.diagnoses],
        "warn_codes": [d.code for d in trap.diagnoses],
        "warn_finite": weights_finite(model),
    }


@scenario
def early_warnings_saturation_and_clip_trap():
    def clipped_ce(y, p):
        return -ops.mean(ops.sum(y * ops.log(ops.clip(p, 1e-8, 1.0)), axis=-1))

    model = classifier(clipped_ce)
    hidden = model.get_layer("hidden")
    hidden.kernel.assign(hidden.kernel * 50.0)
    x, y = data()
    trap = NanTrap(policy="skip", early_warnings=1)
    hist = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[trap])
    ranges = [e["ranges"] for e in trap.events if e["type"] == "step" and "ranges" in e]
    return {
        "loss": hist.history["loss"][0],
        "diagnoses": [facts(d) for d in trap.diagnoses],
        "clip_line": line_of("ops.clip(p, 1e-8"),
        "ranges": ranges,
    }


@scenario
def spike_is_skipped():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True).astype("float32")
    y[400:416] += 500.0  # one batch of corrupt targets: a finite loss spike
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    trap = NanTrap(policy="skip", on_spike="skip", spike_warmup=5)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
    return {
        "spikes": [facts(d) for d in trap.diagnoses if d.code == "NT302"],
        "iterations": int(model.optimizer.iterations),
    }


@scenario
def rollback_restores_exactly():
    """Snapshots of weights, Adam slots, BatchNorm statistics and dropout seeds restore
    bit-exactly, and training continues exactly as a run that never saw the bad batch."""

    def model_():
        keras.utils.set_random_seed(1)
        m = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dropout(0.3),
                keras.layers.BatchNormalization(),
                keras.layers.Dense(2),
            ]
        )
        m.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return m

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    fit = dict(batch_size=8, epochs=1, verbose=0, shuffle=False)
    m = model_()
    trap = NanTrap(policy="rollback")
    m.fit(x[:16], y[:16], callbacks=[trap], **fit)
    guard = trap.guard
    state = VariableState(keras_state_variables(m))
    saved = guard.capture()
    m.fit(x[16:48], y[16:48], **fit)
    first = state.capture()
    changed = list(state.differing(saved, first))
    guard.restore(saved)
    exact = VariableState.equal(saved, state.capture())
    m.fit(x[16:48], y[16:48], **fit)  # the same batches, dropout masks and Adam steps
    same_as_first = VariableState.equal(first, state.capture())

    bad = x.copy()
    bad[24:32] = np.nan  # batch 3 of the second fit
    guarded = model_()
    guarded.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0, shuffle=False)
    trap = NanTrap(policy="rollback", snapshot_every=1)
    guarded.fit(
        np.concatenate([bad[:32], x[48:]]),
        np.concatenate([y[:32], y[48:]]),
        batch_size=8,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[trap],
    )
    return {
        "changed": len(changed),
        "exact": exact,
        "same_as_first": same_as_first,
        "rollback": [facts(d) for d in trap.diagnoses],
        "guarded_finite": weights_finite(guarded),
        "iterations": int(guarded.optimizer.iterations),
    }


@scenario
def torch_compile_step():
    """``jit_compile=True`` on torch compiles the step with torch.compile; the replay that
    localizes runs eagerly."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=hand_ce, jit_compile=True)
    x, y = data(32, blow_up=slice(16, 24))
    trap = NanTrap(policy="skip")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
    return {
        "jit": bool(model.jit_compile),
        "diagnoses": [facts(d) for d in trap.diagnoses],
        "finite": weights_finite(model),
    }


@scenario
def mixed_precision_loss_scale():
    """A LossScaleOptimizer skips fp16-overflowing steps by itself: not incidents."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
        )
        opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=2.0**40)
        model.compile(optimizer=opt, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        x, y = data()
        trap = NanTrap(policy="raise")
        hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[trap])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return {
        "diagnoses": [facts(d) for d in trap.diagnoses],
        "scale_skips": trap.guard.scale_skips,
        "scale": float(opt.dynamic_scale),
        "loss": hist.history["loss"][-1],
    }


@scenario
def a_step_that_raises_leaves_nothing_behind():
    """fit ends without on_train_end when a step raises: the guard still cleans up."""
    calls = []

    def flaky_loss(y, p):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("user bug in the loss")
        return hand_ce(y, p)

    model = classifier(flaky_loss)
    x, y = data(32)
    with tempfile.TemporaryDirectory() as tmp:
        trap = NanTrap(policy="skip", log_dir=tmp, early_warnings=1)
        try:
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[trap], shuffle=False)
            error = None
        except RuntimeError as e:
            error = str(e)
        events = read_events(os.path.join(tmp, "events.jsonl"))
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return {
        "error": error,
        "end": events[-1],
        "patched": sorted(n for n in ("train_step", "compute_loss") if n in vars(model)),
        "optimizer_patched": "apply" in vars(model.optimizer),
        "hooks": len(model._forward_pre_hooks) + len(model._forward_hooks),
        "modes": len(_get_current_dispatch_mode_stack()),
    }


def main(names):
    torch.set_num_threads(1)
    out = {}
    for name in names or SCENARIOS:
        try:
            out[name] = {"ok": True, "facts": SCENARIOS[name]()}
        except Exception:
            out[name] = {"ok": False, "error": traceback.format_exc()}
    print("NANTRAP-SCENARIOS " + json.dumps(out, default=_jsonable))


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return str(v)


if __name__ == "__main__":
    main(sys.argv[1:])
