"""The seed's NaN traps in TensorFlow/Keras, each run plain and then under the guard.

``run_demo(out=print)`` runs (a)-(d) with Keras ``model.fit`` and (e) with a
``tf.compat.v1`` graph written the way the seed writes it; synthetic data, CPU, well under a
minute. ``nantrap demo --framework tf`` calls it. Returns 0 when every verdict came out as
expected.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["run_demo"]

Out = Callable[[str], Any]


def run_demo(out: Out = print) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    with _quiet():
        import keras  # noqa: F401  (imported once, before the clock of the first scenario)

        results = [
            _scenario(out, "(a) softmax, then log, in a hand-written cross-entropy", _softmax_log),
            _scenario(out, "(b) the usual 'fix': log(clip(p, 1e-8, 1.0))", _clip_trap),
            _scenario(out, "(c) sigmoid saturates to exactly 1.0: log(1 - p)", _sigmoid),
            _scenario(out, "(d) learning rate too high", _divergence),
            _scenario(
                out, "(e) tf.compat.v1 graph as the seed writes it: LR too high", _seed_graph
            ),
        ]
    ok = sum(results)
    out(f"\n{ok} of {len(results)} verdicts as expected in {time.perf_counter() - start:.1f} s")
    return 0 if ok == len(results) else 1


# --- scenarios: each returns True when the guard said what it should -----------------------


def _softmax_log(out: Out) -> bool:
    import keras
    import tensorflow as tf

    def cross_entropy(y, p):
        return -tf.reduce_mean(tf.reduce_sum(y * tf.math.log(p), axis=-1))

    x, y = _blobs(scale=3.0)

    def model():
        m = _classifier("softmax", kernel_scale=5.0)
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss=cross_entropy)
        return m

    plain = model()
    hist = plain.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False)
    out(f"    plain   : loss {_losses(hist)}; weights {_finite_text(plain)}")
    trap = _trap(policy="skip")
    guarded = model()
    hist = guarded.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False, callbacks=[trap])
    _verdict(out, trap)
    out(
        f"    after   : {_count(trap, 'skipped')} bad update(s) dropped; loss {_losses(hist)}; "
        f"weights {_finite_text(guarded)}"
    )
    return _has(trap, "NT101")


def _clip_trap(out: Out) -> bool:
    import keras
    import tensorflow as tf

    def clipped_cross_entropy(y, p):
        return -tf.reduce_mean(tf.reduce_sum(y * tf.math.log(tf.clip_by_value(p, 1e-8, 1.0)), -1))

    x, y = _blobs(scale=4.0)

    def model():
        m = _classifier("softmax", kernel_scale=20.0)
        m.compile(
            optimizer=keras.optimizers.SGD(0.5), loss=clipped_cross_entropy, metrics=["accuracy"]
        )
        return m

    plain = model()
    hist = plain.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False)
    out(
        f"    plain   : no NaN; loss {_losses(hist)}; accuracy "
        f"{_series(hist, 'accuracy')}: it stalls"
    )
    trap = _trap(policy="warn", early_warnings=1, warning_budget=1.0)
    model().fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False, callbacks=[trap])
    _verdict(out, trap, codes=("NT102", "NT303"))
    return _has(trap, "NT102")


def _sigmoid(out: Out) -> bool:
    import keras
    import tensorflow as tf

    def binary_cross_entropy(y, p):
        return -tf.reduce_mean(y * tf.math.log(p) + (1.0 - y) * tf.math.log(1.0 - p))

    rng = np.random.default_rng(3)
    x = rng.normal(size=(512, 8)).astype("float32") * 10.0
    y = (x[:, :1] + 0.3 * rng.normal(size=(512, 1)) > 0).astype("float32")

    def model():
        keras.utils.set_random_seed(0)
        m = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid", name="out"),
            ]
        )
        m.compile(optimizer=keras.optimizers.SGD(0.02), loss=binary_cross_entropy)
        return m

    plain = model()
    hist = plain.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False)
    out(f"    plain   : loss {_losses(hist)}; weights {_finite_text(plain)}")
    trap = _trap(policy="skip", early_warnings=2, warning_budget=1.0)
    guarded = model()
    hist = guarded.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False, callbacks=[trap])
    _verdict(out, trap, codes=("NT203", "NT104", "NT103"))
    out(f"    after   : {_count(trap, 'skipped')} bad update(s) dropped; loss {_losses(hist)}")
    return _has(trap, "NT104")


def _divergence(out: Out) -> bool:
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")

    def model(lr):
        keras.utils.set_random_seed(0)
        m = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)]
        )
        m.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
        return m

    sane = model(0.02).fit(x, y, batch_size=32, epochs=4, verbose=0)
    plain = model(0.6)
    hist = plain.fit(x, y, batch_size=32, epochs=4, verbose=0)
    out(
        f"    plain   : LR 0.6: loss {_losses(hist)}; weights {_finite_text(plain)}"
        f"   (LR 0.02 reaches {hist_last(sane):.3g})"
    )
    trap = _trap(policy="rollback", lr_decay=0.1, snapshot_every=5)
    guarded = model(0.6)
    hist = guarded.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[trap])
    _verdict(out, trap, codes=("NT301",))
    lr = float(np.asarray(guarded.optimizer.learning_rate))
    out(
        f"    after   : {_count(trap, 'rolled-back')} rollback(s), LR now {lr:.3g}; loss "
        f"{_losses(hist)}; weights {_finite_text(guarded)}"
    )
    return _has(trap, "NT301") and math.isfinite(hist_last(hist))


def _seed_graph(out: Out) -> bool:
    import tensorflow as tf

    from nantrap.tf.compat_v1 import guard_session

    tf1 = tf.compat.v1
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(512, 8)).astype("float32")
    ys = (xs @ rng.normal(size=(8, 1))).astype("float32")

    def graph():
        g = tf.Graph()
        with g.as_default():
            tf1.set_random_seed(0)
            x = tf1.placeholder(tf.float32, [None, 8])
            y_ = tf1.placeholder(tf.float32, [None, 1])
            W = tf1.Variable(tf1.random_normal([8, 16], stddev=0.3), name="weights")
            W2 = tf1.Variable(tf1.random_normal([16, 1], stddev=0.3))
            y = tf1.matmul(tf1.nn.tanh(tf1.matmul(x, W)), W2)
            loss = tf1.reduce_mean(tf1.square(y - y_))
            train_step = tf1.train.GradientDescentOptimizer(0.6).minimize(loss)
            tf1.summary.histogram("weight_1", W)
            merged = tf1.summary.merge_all()
            init = tf1.global_variables_initializer()
        return g, x, y_, loss, train_step, merged, init

    def feed(x, y_, i):
        j = (i * 32) % 512
        return {x: xs[j : j + 32], y_: ys[j : j + 32]}

    g, x, y_, loss, train, merged, init = graph()
    error = None
    with tf1.Session(graph=g) as sess:
        sess.run(init)
        for i in range(120):
            try:
                sess.run([merged, train], feed(x, y_, i))
            except tf.errors.InvalidArgumentError as err:
                error = (i, _first_line(err))
                break
    if error:
        out(f"    plain   : step {error[0]}: InvalidArgumentError: {error[1]}")
    else:
        out("    plain   : no error (unexpected)")
    g, x, y_, loss, train, merged, init = graph()
    sess = guard_session(tf1.Session(graph=g), loss=loss, train_op=train, policy="stop")
    sess.run(init)
    for i in range(120):
        sess.run([merged, train], feed(x, y_, i))
        if sess.stopped:
            break
    _verdict(out, sess, codes=("NT301",))
    out(
        "    after   : stopped with the last good weights restored (the LR is a Python float "
        "in this graph; pass learning_rate=<tf.Variable> to let policy='rollback' lower it)"
    )
    sess.close()
    return error is not None and "weight_1" in error[1] and _has(sess, "NT301")


# --- helpers ---------------------------------------------------------------------------------


def _scenario(out: Out, title: str, fn: Callable[[Out], bool]) -> bool:
    out(f"\n{title}")
    start = time.perf_counter()
    try:
        ok = fn(out)
    except Exception as err:  # a demo scenario failing is a verdict, not a crash
        out(f"    FAILED: {type(err).__name__}: {err}")
        return False
    out(f"    [{'ok' if ok else 'UNEXPECTED'} · {time.perf_counter() - start:.1f} s]")
    return ok


def _verdict(out: Out, guard: Any, codes: tuple[str, ...] = ()) -> None:
    shown = [d for d in guard.diagnoses if not codes or d.code in codes]
    seen: set[tuple[str, str | None]] = set()
    for d in shown:
        key = (d.code, d.action)
        if key in seen:
            continue
        seen.add(key)
        label = "guarded " if not seen - {key} else "        "
        out(f"    {label}: {d.headline()}")
        if d.fix:
            out(f"              fix: {d.fix}")
        if d.action:
            out(f"              action: {d.action}")
    if not shown:
        out("    guarded : nothing found (unexpected)")


def _trap(**options: Any) -> Any:
    from nantrap.keras import NanTrap

    return NanTrap(**options)


def _classifier(activation: str, kernel_scale: float = 1.0) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation=activation, name="head"),
        ]
    )
    if kernel_scale != 1.0:
        head = m.get_layer("head")
        head.kernel.assign(head.kernel * kernel_scale)
    return m


def _blobs(scale: float, n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    centers = np.array([[2, 0, 0, 1], [0, 2, 0, -1], [0, 0, 2, 0]], dtype="float32")
    x = (centers[labels] + rng.normal(size=(n, 4))).astype("float32") * scale
    return x, np.eye(3, dtype="float32")[labels]


def _losses(hist: Any) -> str:
    return _series(hist, "loss")


def _series(hist: Any, key: str) -> str:
    return " -> ".join(f"{v:.3g}" for v in hist.history.get(key, []))


def hist_last(hist: Any) -> float:
    values = hist.history.get("loss", [math.nan])
    return float(values[-1])


def _first_nan_epoch(hist: Any) -> int | None:
    for i, v in enumerate(hist.history.get("loss", []), 1):
        if not math.isfinite(v):
            return i
    return None


def _finite_text(model: Any) -> str:
    ok = all(np.isfinite(w).all() for w in model.get_weights())
    return "finite" if ok else "NaN/Inf"


def _has(guard: Any, code: str) -> bool:
    return any(d.code == code for d in guard.diagnoses)


def _count(guard: Any, action: str) -> int:
    return sum(1 for d in guard.diagnoses if d.action == action)


def _first_line(err: Any) -> str:
    from nantrap.tf.compat_v1 import _error_text

    return _error_text(err)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The demo prints its own verdicts: silence the guard's logger and TF's Python logs."""
    loggers = [logging.getLogger(n) for n in ("nantrap", "tensorflow", "absl")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
