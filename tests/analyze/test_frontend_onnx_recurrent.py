"""ONNX frontend on torch.onnx exports of recurrent models: LSTM/GRU/RNN nodes, ONNX gate
order and stacked directions, the same ranges as the torch frontend."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from nantrap.analyze import analyze  # noqa: E402
from tests.analyze.models import torch_recurrent as R  # noqa: E402

X = (torch.rand(2, 12, 6) * 2 - 1,)
SIGNED = {"x": "-1:1"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def export(model, inputs, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=False, input_names=["x"])
    return str(path)


@pytest.mark.parametrize(("kind", "op_type"), [("lstm", "LSTM"), ("gru", "GRU"), ("rnn", "RNN")])
def test_recurrent_nodes_match_the_torch_frontend(tmp_path, kind, op_type):
    model = R.SeqClassifier(kind).eval()
    path = export(model, X, tmp_path / "m.onnx")
    assert op_type in {n.op_type for n in onnx.load(path).graph.node}
    res = analyze(path, input_ranges=SIGNED)
    assert res.problems == [] and not res.by_code("NT902")
    (h,) = [row for row in res.layers if row.op == kind and row.node.endswith("output_0")]
    ref = analyze(model, X, input_ranges=SIGNED).layer({"rnn": "rnn_tanh"}.get(kind, kind))
    # same weights, ONNX's gate order (iofc / zrh) read back right: the very same bound
    assert h.lo == pytest.approx(ref.lo, rel=1e-6) and h.hi == pytest.approx(ref.hi, rel=1e-6)
    assert h.module == "rnn"


def test_bidirectional_stacked_lstm_cell_output_and_log_hazard(tmp_path):
    model = R.CellReadout(num_layers=2, bidirectional=True).eval()
    res = analyze(export(model, X, tmp_path / "c.onnx"), input_ranges=SIGNED)
    ref = analyze(model, X, input_ranges=SIGNED).layer("lstm_cell").interval
    cells = [r for r in res.layers if r.op == "lstm" and r.hi > 1]  # the Y_c outputs
    assert len(cells) == 2 and max(c.hi for c in cells) == pytest.approx(ref.hi, rel=1e-6)
    bad = analyze(
        export(R.SeqClassifier("lstm", log_hidden=True).eval(), X, tmp_path / "b.onnx"),
        input_ranges=SIGNED,
    )
    assert "NT103" in {f.code for f in bad.problems}


def test_grouped_convolution(tmp_path):
    model = R.SeparableBlock().eval()
    x = torch.rand(1, 8, 10, 10)
    res = analyze(export(model, (x,), tmp_path / "g.onnx"), input_ranges={"x": "0:1"})
    assert not res.by_code("NT902") and res.problems == []
    out = model(x).detach()
    last = res.layers[-1].interval
    assert last.lo <= float(out.min()) and float(out.max()) <= last.hi
