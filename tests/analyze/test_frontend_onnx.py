"""ONNX frontend end to end on torch.onnx exports of the same real models."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from nantrap.analyze import analyze  # noqa: E402
from tests.analyze.models import torch_models as M  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def export(model, inputs, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=False, input_names=["x"])
    return path


@pytest.mark.parametrize(
    ("make", "inputs", "ranges"),
    [
        (M.tiny_resnet, lambda: (torch.rand(1, 3, 32, 32),), {"x": "0:1"}),
        (M.tiny_gpt, lambda: (torch.randint(0, 50, (1, 8)),), {"x": "0:49"}),
    ],
    ids=["resnet", "gpt"],
)
def test_clean_models_match_the_torch_frontend(tmp_path, make, inputs, ranges):
    model, x = make().eval(), inputs()
    res = analyze(str(export(model, x, tmp_path / "m.onnx")), input_ranges=ranges)
    assert res.graph.framework == "onnx" and res.problems == []
    ref = analyze(model, x, input_ranges={"idx" if make is M.tiny_gpt else "x": ranges["x"]})
    last, ref_last = res.layers[-1].interval, ref.layers[-1].interval
    assert last.lo == pytest.approx(ref_last.lo, rel=1e-3)
    assert last.hi == pytest.approx(ref_last.hi, rel=1e-3)
    out = model(*x).detach()
    assert last.lo <= float(out.min()) and float(out.max()) <= last.hi
    assert res.layers[-1].module in ("fc", "lm_head")  # module paths from scoped names


@pytest.mark.parametrize(
    ("cls", "code", "ranges"),
    [
        (M.Classifier, "NT101", {"x": "-1000:1000"}),
        (M.Normalizer, "NT110", {"x": "0:1"}),
        (M.HandSoftmax, "NT113", {"x": "0:1000"}),
        (M.Angle, "NT114", {"x": "-100:100"}),
    ],
)
def test_seeded_hazards_found_and_fixed_twins_clean(tmp_path, cls, code, ranges):
    x = (torch.rand(2, 8),)
    bad = analyze(str(export(cls().eval(), x, tmp_path / "bad.onnx")), input_ranges=ranges)
    assert code in {f.code for f in bad.problems}
    good = analyze(
        str(export(cls(fixed=True).eval(), x, tmp_path / "ok.onnx")), input_ranges=ranges
    )
    assert good.problems == []


def test_model_proto_object_and_unreadable_file(tmp_path):
    import onnx

    path = export(M.Classifier().eval(), (torch.rand(2, 8),), tmp_path / "c.onnx")
    res = analyze(onnx.load(str(path)), input_ranges={"x": "0:1"})
    assert res.by_code("NT101")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    from nantrap.errors import AnalysisError

    with pytest.raises(AnalysisError, match="cannot read ONNX file"):
        analyze(str(bad))
