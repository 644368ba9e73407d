"""``nantrap run`` of an unchanged ``tf.compat.v1`` graph script: its training session is
guarded (train op and loss found in the graph), and the report names the divergence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nantrap.report.run_log import load_run
from tests.conftest import run_nantrap

pytest.importorskip("tensorflow")
SCRIPT = Path(__file__).resolve().parents[1] / "run" / "scripts" / "tf1_train.py"


def test_session_of_an_unchanged_tf1_script_is_guarded(tmp_path):
    run_dir = tmp_path / "run"
    out = run_nantrap("run", "--log-dir", str(run_dir), str(SCRIPT), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["guarded"] == [f"tf.compat.v1 session training GradientDescent -> {run_dir}"]
    log = load_run(run_dir)
    assert log.header["framework"] == "tensorflow.compat.v1"
    first = log.incidents()[0].diagnosis
    assert first.code == "NT301" and first.step == 14
    assert "LR 4 is" in first.message
    assert "NT301 learning-rate-divergence" in (run_dir / "report.html").read_text()


def test_loss_and_train_op_are_found_in_the_graph():
    tf = pytest.importorskip("tensorflow")
    from nantrap.tf.autoguard import find_loss, find_train_op

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 2])
        w = tf1.get_variable("w", [2, 1])
        v = tf1.get_variable("v", [2, 1])
        loss_a = tf.reduce_mean(tf.square(tf.matmul(x, w)))
        loss_b = tf.reduce_sum(tf.matmul(x, v)) * 2.0
        train_a = tf1.train.GradientDescentOptimizer(0.1).minimize(loss_a)
        train_b = tf1.train.AdamOptimizer(0.1).minimize(loss_b, var_list=[v])
        init = tf1.global_variables_initializer()
    assert find_train_op(graph, init) is None
    assert find_train_op(graph, [loss_a, train_a]) is train_a
    assert find_loss(graph, train_a) is loss_a
    assert find_loss(graph, find_train_op(graph, {"t": train_b})) is loss_b
