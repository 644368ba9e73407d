"""torch.export frontend on recurrent models and grouped convolutions: ranges that hold
over the whole sequence, seeded hazards found, clean models quiet."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from nantrap.analyze import analyze  # noqa: E402
from tests.analyze.models import torch_recurrent as R  # noqa: E402

T = 12
X = (torch.rand(2, T, 6) * 2 - 1,)
SIGNED = {"x": "-1:1"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(("kind", "node"), [("lstm", "lstm"), ("gru", "gru"), ("rnn", "rnn_tanh")])
def test_clean_classifier_hidden_in_unit_range_and_no_problems(kind, node):
    model = R.SeqClassifier(kind).eval()
    res = analyze(model, X, input_ranges=SIGNED)
    assert res.problems == [] and not res.by_code("NT902")
    h = res.layer(node)
    assert h.op == kind and h.lo >= -1 and h.hi <= 1
    with torch.no_grad():
        out, _ = model.rnn(X[0])
        logits = model(X[0])
    assert h.lo <= float(out.min()) and float(out.max()) <= h.hi
    head = res.layer("head")
    assert head.lo <= float(logits.min()) and float(logits.max()) <= head.hi


def test_stacked_bidirectional_lstm_cell_state_bound():
    model = R.CellReadout(num_layers=2, bidirectional=True).eval()
    x = torch.rand(1, T, 6) * 6 - 3
    res = analyze(model, (x,), input_ranges={"x": "-3:3"})
    assert res.problems == []
    h, c = res.layer("lstm").interval, res.layer("lstm_cell").interval
    assert h.lo >= -1 and h.hi <= 1
    assert 0 < c.hi <= T and c.lo >= -T  # |c_t| <= |c_0| + t with c_0 = 0
    with torch.no_grad():
        hn, cn = model(x)
    assert c.lo <= float(cn.min()) and float(cn.max()) <= c.hi
    assert h.lo <= float(hn.min()) and float(hn.max()) <= h.hi


def test_log_of_the_hidden_state_is_a_domain_error():
    res = analyze(R.SeqClassifier("lstm", log_hidden=True).eval(), X, input_ranges=SIGNED)
    (f,) = res.by_code("NT103")
    assert f.severity.value == "error" and f.location.neutral_op == "log"
    assert f.evidence["input_range"][0] < 0  # h reaches below 0
    assert any(p.startswith("lstm") for p in f.evidence["path"])


def test_relu_rnn_overflow_names_the_growth_and_the_step():
    model = R.ReluRNN(0.5).eval()
    x = torch.ones(1, 50, 4)
    with torch.no_grad():
        assert not torch.isfinite(model(x)).all()  # the hazard is real: 8**k passes 3.4e38
    res = analyze(model, (x,), input_ranges={"x": "0:1"})
    (f,) = res.by_code("NT116")
    assert f.location.neutral_op == "rnn" and f.severity.value == "error"
    assert f.evidence["growth_per_step"] == pytest.approx(8.0)
    assert 30 < f.evidence["overflow_step"] <= 50 and f.evidence["seq_len"] == 50
    assert "x8 per step" in f.message and "float32 max" in f.message
    fixed = analyze(R.ReluRNN(0.5 / 32).eval(), (x,), input_ranges={"x": "0:1"})
    assert fixed.problems == []
    assert fixed.layer("rnn_relu").interval.is_finite


def test_saturated_gates_are_a_saturation_note_not_a_problem():
    res = analyze(R.SeqClassifier("lstm").eval(), X, input_ranges={"x": "-1000:1000"})
    (note,) = res.by_code("NT203")
    assert note.severity.value == "info" and note.location.neutral_op == "lstm"
    assert "forget gate (f)" in note.message and "exactly" in note.message
    assert note.evidence["sigmoid_one"] == pytest.approx(16.64, abs=0.01)
    assert res.problems == []  # h stays in [-1, 1]; the cell is bounded by |c_0| + T


def test_grouped_and_depthwise_convolution_are_bounded():
    model = R.SeparableBlock().eval()
    x = torch.rand(4, 8, 10, 10)
    res = analyze(model, (x,), input_ranges={"x": "0:1"})
    assert not res.by_code("NT902") and res.problems == []
    with torch.no_grad():
        dw = model.depthwise(x)
        out = model(x)
    d = res.layer("depthwise").interval
    assert d.lo <= float(dw.min()) and float(dw.max()) <= d.hi
    g = res.layer("grouped").interval
    assert g.lo <= float(out.min()) and float(out.max()) <= g.hi


def test_weight_bound_instead_of_the_weights():
    model = R.CellReadout().eval()
    res = analyze(model, X, input_ranges=SIGNED, weights=0.1)
    h, c = res.layer("lstm").interval, res.layer("lstm_cell").interval
    assert h.lo >= -1 and h.hi <= 1 and c.hi <= T
    # |pre| <= 6 * 0.1 (x) + 8 * 0.1 (h) + 2 * 0.1 (biases) = 1.6: far from saturation
    assert not res.by_code("NT203") and res.problems == []
    hot = analyze(model, X, input_ranges=SIGNED, weights=3.0)  # |pre| <= 48: saturates
    (note,) = hot.by_code("NT203")
    assert note.evidence["gates"]["f"][1] == pytest.approx(48.0, rel=1e-3)
