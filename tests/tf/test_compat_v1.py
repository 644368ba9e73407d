"""The tf.compat.v1 Session guard on graphs written the way the seed writes them."""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import nantrap.tf as ntf  # noqa: E402
from nantrap.errors import ConfigError  # noqa: E402
from nantrap.findings import Category, Phase  # noqa: E402

tf1 = tf.compat.v1


def softmax_graph(histogram_of_log=False):
    """The TF1 tutorial model with its hand-written cross-entropy (seed trap a)."""
    g = tf.Graph()
    with g.as_default():
        tf1.set_random_seed(0)
        x = tf1.placeholder(tf.float32, [None, 4], name="x")
        y_ = tf1.placeholder(tf.float32, [None, 3], name="y_")
        with tf1.name_scope("layer1"):
            W = tf1.Variable(tf1.random_normal([4, 3], stddev=0.5), name="weight_1")
            b = tf1.Variable(tf1.zeros([3]), name="bias_1")
            y = tf1.nn.softmax(tf1.matmul(x, W) + b)
        log_y = tf1.log(y)
        cross_entropy = -tf1.reduce_mean(tf1.reduce_sum(y_ * log_y, axis=1))
        train_step = tf1.train.GradientDescentOptimizer(0.1).minimize(cross_entropy)
        tf1.summary.histogram("weight_1", W)
        if histogram_of_log:
            tf1.summary.histogram("log_y", log_y)
        merged = tf1.summary.merge_all()
        init = tf1.global_variables_initializer()
    return g, x, y_, cross_entropy, train_step, merged, init


def _data(n=128, blow_up=None):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(n, 4)).astype("float32")
    ys = np.eye(3, dtype="float32")[(xs[:, 0] > 0).astype(int) + (xs[:, 1] > 1)]
    if blow_up is not None:
        xs[blow_up] *= 500.0
    return xs, ys


def test_log_of_softmax_is_named_and_skip_undoes_exactly_the_bad_step():
    g, x, y_, ce, train, merged, init = softmax_graph()
    xs, ys = _data(blow_up=slice(48, 64))
    sess = ntf.guard_session(
        tf1.Session(graph=g), loss=ce, train_op=train, policy="skip", snapshot_every=2
    )
    sess.run(init)
    weights = []
    for i in range(8):
        sess.run([merged, train], {x: xs[i * 16 : (i + 1) * 16], y_: ys[i * 16 : (i + 1) * 16]})
        weights.append(sess.run(g.get_collection("trainable_variables")[0]))
    (d,) = sess.diagnoses
    assert (d.code, d.category, d.phase, d.step, d.action) == (
        "NT101",
        Category.DOMAIN,
        Phase.FORWARD,
        3,
        "skipped",
    )
    assert d.op == "Log" and "tf1.log(y)" in d.location.source_line
    assert d.evidence["producer"]["module"] == "layer1" and d.evidence["inputs"][0]["zeros"] > 0
    # the bad step was undone bit-exactly: weights after it equal the weights before it
    assert np.array_equal(weights[3], weights[2]) and np.isfinite(weights[-1]).all()
    sess.close()
    assert sess.events[-1]["type"] == "end"


def test_summary_histogram_error_is_explained_not_raised():
    g, x, y_, ce, train, merged, init = softmax_graph(histogram_of_log=True)
    xs, ys = _data(blow_up=slice(16, 32))
    with ntf.guard_session(tf1.Session(graph=g), loss=ce, train_op=train, policy="skip") as sess:
        sess.run(init)
        for i in range(3):
            out = sess.run(
                [merged, train], {x: xs[i * 16 : (i + 1) * 16], y_: ys[i * 16 : (i + 1) * 16]}
            )
        assert out is not None
    (d,) = sess.diagnoses
    assert d.code == "NT101" and d.step == 1
    assert d.evidence["tensorflow_error"] == "Infinity in Histogram for: log_y"


def test_learning_rate_too_high_is_a_divergence_and_rollback_recovers(tmp_path):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(512, 8)).astype("float32")
    ys = (xs @ rng.normal(size=(8, 1))).astype("float32")

    def run(lr):
        g = tf.Graph()
        with g.as_default():
            tf1.set_random_seed(0)
            x = tf1.placeholder(tf.float32, [None, 8])
            y_ = tf1.placeholder(tf.float32, [None, 1])
            lr_var = tf1.Variable(lr, trainable=False, name="learning_rate")
            W = tf1.Variable(tf1.random_normal([8, 16], stddev=0.3), name="weight_1")
            W2 = tf1.Variable(tf1.random_normal([16, 1], stddev=0.3), name="weight_2")
            loss = tf1.reduce_mean(tf1.square(tf1.matmul(tf1.nn.tanh(tf1.matmul(x, W)), W2) - y_))
            train = tf1.train.GradientDescentOptimizer(lr_var).minimize(loss)
            tf1.summary.histogram("weight_1", W)
            merged = tf1.summary.merge_all()
            init = tf1.global_variables_initializer()
        sess = ntf.guard_session(
            tf1.Session(graph=g),
            loss=loss,
            train_op=train,
            policy="rollback",
            learning_rate=lr_var,
            log_dir=tmp_path,
        )
        sess.run(init)
        for i in range(240):
            j = (i * 32) % 512
            last = sess.run([merged, train, loss], {x: xs[j : j + 32], y_: ys[j : j + 32]})[2]
        return sess, float(last), float(sess.run(lr_var))

    _, sane, _ = run(0.05)
    sess, last, lr = run(0.6)
    incident = next(d for d in sess.diagnoses if d.incident)
    assert incident.code == "NT301" and incident.category is Category.DIVERGENCE
    assert "too high" in incident.message and incident.action == "rolled-back"
    assert incident.evidence["lr"] == pytest.approx(0.6)
    assert lr == pytest.approx(0.3, rel=1e-6)
    # recovered: from ~9.6 at the start (and 7e36 at the blow-up) to the order of a sane LR
    assert math.isfinite(last) and last < 10 * sane


def test_finalized_graph_is_refused():
    g, *_ = softmax_graph()
    g.finalize()
    with pytest.raises(ConfigError, match="finalized"):
        ntf.guard_session(tf1.Session(graph=g), loss="Neg:0", train_op="GradientDescent")
