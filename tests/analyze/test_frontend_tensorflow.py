"""TensorFlow frontend end to end: the seed's TF1 graph, a Keras CNN, a tf.function."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from google.protobuf import text_format  # noqa: E402

from nantrap.analyze import analyze  # noqa: E402
from tests.analyze.models import tf_models as T  # noqa: E402

SEED_RANGES = {"x": "0:1", "y_": "0:1"}


def test_seed_tf1_log_of_softmax_found_from_a_pbtxt_file(tmp_path):
    path = tmp_path / "seed.pbtxt"
    path.write_text(text_format.MessageToString(T.seed_graph("log")))
    res = analyze(str(path), input_ranges=SEED_RANGES)
    (f,) = res.by_code("NT101")
    assert f.severity.value == "error" and f.location.node == "Log"
    assert f.evidence["path"][:3] == ["log", "softmax", "add"]
    assert res.graph.framework == "tensorflow"
    assert not any(n.name.startswith("gradients") for n in res.graph.nodes)
    # the weight range comes from the initializer: truncated_normal(stddev=0.1) is in ±0.2
    mm = res.layer("MatMul").interval
    assert mm.hi == pytest.approx(784 * 0.2, rel=1e-3)


def test_seed_clip_fix_is_a_clip_trap_and_logits_fix_is_clean(tmp_path):
    gd = T.seed_graph("clip")
    before = gd.SerializeToString()
    clip = analyze(gd, input_ranges=SEED_RANGES)
    assert gd.SerializeToString() == before  # the caller's GraphDef is untouched
    assert "NT102" in {f.code for f in clip.problems}
    assert "NT101" not in {f.code for f in clip.problems}  # the clip does keep it finite
    good = analyze(T.seed_graph("logits"), input_ranges=SEED_RANGES)
    assert good.problems == []


def test_keras_cnn_clean_and_sound_against_real_outputs():
    model = T.keras_cnn()
    res = analyze(model, input_ranges={"image": "0:1"})
    assert res.problems == []
    head = res.layer("head")
    x = np.random.default_rng(0).uniform(0, 1, (16, 12, 12, 3)).astype("float32")
    logits = keras.Model(model.input, model.get_layer("head").output)(x).numpy()
    assert head.lo <= logits.min() and logits.max() <= head.hi


def test_keras_log_of_softmax_found_and_log_softmax_twin_clean():
    bad = analyze(T.keras_cnn("log"), input_ranges={"image": "-100:100"})
    assert "NT101" in {f.code for f in bad.problems}
    good = analyze(T.keras_cnn("stable"), input_ranges={"image": "-100:100"})
    assert good.problems == []


def test_tf_function_sqrt_of_negative():
    @tf.function(input_signature=[tf.TensorSpec([4], tf.float32, name="x")])
    def f(x):
        return tf.sqrt(x - 0.5)

    res = analyze(f, input_ranges={"x": "0:1"})
    (g,) = res.by_code("NT112")
    assert g.evidence["input_range"][0] == pytest.approx(-0.5)


import keras  # noqa: E402


def test_keras_and_tf1_onnx_exports_via_tf2onnx():
    tf2onnx = pytest.importorskip("tf2onnx")
    model = T.keras_cnn("log")
    fn = tf.function(lambda x: model(x, training=False))
    spec = (tf.TensorSpec((1, 12, 12, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    res = analyze(proto, input_ranges={"image": "-100:100"})
    assert res.graph.framework == "onnx" and "NT101" in {f.code for f in res.problems}

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(T.seed_graph("log"), name="")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run([op for op in graph.get_operations() if op.type == "AssignVariableOp"])
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), ["Mean"]
            )
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen, input_names=["x:0", "y_:0"], output_names=["Mean:0"], opset=17
    )
    res = analyze(proto, input_ranges={"x:0": "0:1", "y_:0": "0:1"})
    (f,) = res.by_code("NT101")
    assert f.evidence["path"][:2] == ["log", "softmax"]
    assert res.layer("Softmax:0").lo > 0  # logit spread ~60 < 103: finite for these weights
    assert f.severity.value == "warning"
