"""Keras recurrent layers and depthwise convolutions through the TF frontend: the lowered
while loops become one op per layer, with the layer's weights; other loops are one NT902."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from nantrap.analyze import analyze  # noqa: E402
from nantrap.analyze.frontends._tf_recurrent import LOOP_LABEL  # noqa: E402
from tests.analyze.models import tf_models as T  # noqa: E402

SIGNED = {"seq": "-1:1"}


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _outputs(model, name, x):
    return keras.Model(model.input, model.get_layer(name).output)(x).numpy()


def test_stacked_lstm_gru_simple_rnn_clean_and_sound():
    model = T.keras_recurrent(head="stacked")
    res = analyze(model, input_ranges=SIGNED)
    assert res.problems == [] and not res.by_code("NT902")
    x = np.random.default_rng(0).uniform(-1, 1, (32, 10, 6)).astype("float32")
    for name in ("lstm", "gru", "rnn"):
        (row,) = [r for r in res.layers if r.module == name and r.op == name]
        assert row.lo >= -1 and row.hi <= 1
        y = _outputs(model, name, x)
        assert row.lo <= y.min() and y.max() <= row.hi
    head = res.layer("head")
    logits = model(x).numpy()
    assert head.lo <= logits.min() and logits.max() <= head.hi
    assert not any("while" in n.name for n in res.graph.nodes)  # the loops are folded
    assert [n.name for n in res.graph.inputs] == ["seq"]  # no loop-lowering placeholders


def test_keras_log_of_lstm_hidden_state_is_a_domain_error():
    res = analyze(T.keras_recurrent("lstm", head="log"), input_ranges=SIGNED)
    (f,) = res.by_code("NT103")
    assert f.severity.value == "error" and f.evidence["input_range"][0] < 0
    assert "lstm" in " ".join(f.evidence["path"])


def test_return_state_reads_the_final_state_bound():
    inputs = keras.Input((10, 6), name="seq")
    _, h, c = keras.layers.LSTM(8, return_state=True, name="lstm")(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate(name="hc")([h, c]))
    res = analyze(model, input_ranges=SIGNED)
    assert not res.by_code("NT902")
    state = res.layer("hc").interval  # h or c: the hull; |c| <= |c_0| + 10 steps
    assert 1 <= state.hi <= 10 and -10 <= state.lo <= -1
    x = np.random.default_rng(1).uniform(-1, 1, (16, 10, 6)).astype("float32")
    y = model(x).numpy()
    assert state.lo <= y.min() and y.max() <= state.hi


def test_depthwise_and_separable_conv_are_bounded():
    model = T.keras_separable()
    res = analyze(model, input_ranges={"image": "0:1"})
    assert not res.by_code("NT902") and res.problems == []
    assert {r.op for r in res.layers} >= {"depthwise_conv", "conv"}
    x = np.random.default_rng(0).uniform(0, 1, (8, 10, 10, 4)).astype("float32")
    dw = _outputs(model, "dw", x)
    d = res.layer("dw").interval
    assert d.lo <= dw.min() and dw.max() <= d.hi
    out = model(x).numpy()
    last = res.layer("sep").interval
    assert last.lo <= out.min() and out.max() <= last.hi


def test_a_hand_written_while_loop_is_one_plain_coverage_note():
    @tf.function(input_signature=[tf.TensorSpec([4], tf.float32, name="x")])
    def f(x):
        return tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 2.0), (0, x))[1]

    res = analyze(f, input_ranges={"x": "0:1"})
    (note,) = res.by_code("NT902")
    assert LOOP_LABEL in note.evidence["ops"]


def test_bidirectional_lstm_both_directions_folded():
    inputs = keras.Input((10, 6), name="seq")
    h = keras.layers.Bidirectional(keras.layers.LSTM(8), name="bi")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    res = analyze(model, input_ranges=SIGNED)
    assert not res.by_code("NT902") and res.problems == []
    both = [r for r in res.layers if r.op == "lstm"]
    assert {r.module for r in both} == {"forward_lstm", "backward_lstm"}
    joined = res.layer("bi").interval  # ConcatV2's axis (-1) is not one of the values
    assert joined.lo > -1 and joined.hi < 1
    x = np.random.default_rng(2).uniform(-1, 1, (16, 10, 6)).astype("float32")
    y = _outputs(model, "bi", x)
    assert joined.lo <= y.min() and y.max() <= joined.hi
