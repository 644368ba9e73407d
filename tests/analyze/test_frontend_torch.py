"""torch.export frontend end to end: real models, seeded hazards found, fixed twins clean."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from nantrap.analyze import analyze  # noqa: E402
from nantrap.errors import UnsupportedOpError  # noqa: E402
from tests.analyze.models import torch_models as M  # noqa: E402

X = (torch.rand(2, 8),)
UNIT = {"x": "0:1"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # the models' random init: keep every margin the same run to run


def codes(result) -> set[str]:
    return {f.code for f in result.problems}


def test_tiny_resnet_is_clean_and_every_layer_has_a_range():
    model = M.tiny_resnet().eval()
    res = analyze(model, (torch.rand(1, 3, 32, 32),), input_ranges=UNIT)
    assert res.problems == []
    fc = res.layer("fc")
    assert fc.op == "linear" and fc.interval.is_finite
    out = model(torch.rand(1, 3, 32, 32)).detach()
    assert fc.lo <= float(out.min()) and float(out.max()) <= fc.hi
    assert res.layer("layer1.0.relu").lo == 0.0  # module paths reach the table


def test_tiny_gpt_is_clean_attention_stays_in_value_range():
    model = M.tiny_gpt().eval()
    idx = torch.randint(0, 50, (1, 8))
    res = analyze(model, (idx,), input_ranges={"idx": "0:49"})
    assert res.problems == []
    assert not res.warnings  # integer inputs: no "assumed the dtype range" warning
    logits = model(idx).detach()
    head = res.layer("lm_head")
    assert head.lo <= float(logits.min()) and float(logits.max()) <= head.hi
    assert head.hi < 100  # LayerNorm bounds the residual stream: ranges stay tight


def test_log_of_softmax_found_and_fixed_twin_clean():
    bad = analyze(M.Classifier().eval(), X, input_ranges={"x": "-1000:1000"})
    (f,) = bad.by_code("NT101")
    assert f.severity.value == "error" and f.location.neutral_op == "log"
    assert f.evidence["path"][:3] == ["log", "softmax", "linear head"]
    assert f.location.path.endswith("torch_models.py") and f.location.line > 0
    assert "log_softmax" in f.fix
    assert 0 < f.evidence["safe_weight_bound"] < 0.35  # RANUM-style weight precondition
    # with small inputs the range is finite, but the pattern is still reported
    mild = analyze(M.Classifier().eval(), X, input_ranges=UNIT)
    assert [g.severity.value for g in mild.by_code("NT101")] == ["warning"]
    assert (
        analyze(M.Classifier(fixed=True).eval(), X, input_ranges={"x": "-1000:1000"}).problems == []
    )


def test_division_by_norm_found_eps_twin_clean():
    (f,) = analyze(M.Normalizer().eval(), X, input_ranges=UNIT).by_code("NT110")
    assert f.location.node == "div" and f.evidence["input_range"][0] == 0.0
    assert f.severity.value == "error"  # ReLU features are all 0 easily
    assert "norm" in f.evidence["path"]
    assert analyze(M.Normalizer(fixed=True).eval(), X, input_ranges=UNIT).problems == []


def test_sqrt_negative_and_gradient_at_zero_for_parameters():
    neg = analyze(M.RootFeature("negative"), X, input_ranges=UNIT)
    assert "NT112" in codes(neg)
    grad = analyze(M.RootFeature("grad"), X, input_ranges=UNIT)
    (f,) = grad.by_code("NT111")
    assert f.location.phase.value == "backward"
    assert f.evidence["parameters"] == ["proj.bias", "proj.weight"]
    assert analyze(M.RootFeature("fixed"), X, input_ranges=UNIT).problems == []


def test_exp_overflow_in_hand_softmax_and_precondition():
    bad = analyze(M.HandSoftmax(), X, input_ranges={"x": "0:1000"})
    (f,) = bad.by_code("NT113")
    lo, hi = f.evidence["safe_inputs"]["x"]
    assert lo == 0.0 and 0 < hi < 1000
    assert analyze(M.HandSoftmax(fixed=True), X, input_ranges={"x": "0:1000"}).problems == []


def test_acos_domain_and_clamped_twin():
    wide = {"x": "-100:100"}
    assert "NT114" in codes(analyze(M.Angle(), X, input_ranges=wide))
    assert analyze(M.Angle(fixed=True), X, input_ranges=wide).problems == []


def test_hand_written_bce_found_with_logits_twin_clean():
    y = torch.rand(2, 1)
    ranges = {"x": "-100:100", "y": "0:1"}
    bad = analyze(M.HandBCE(), (X[0], y), input_ranges=ranges)
    found = codes(bad)
    assert "NT104" in found  # log(sigmoid)
    (one_minus,) = [f for f in bad.by_code("NT103") if "sub" in f.evidence["path"]]
    assert one_minus.evidence["input_range"][0] == 0.0  # 1 - p is exactly 0 once p rounds to 1
    assert analyze(M.HandBCE(fixed=True), (X[0], y), input_ranges=ranges).problems == []


def test_half_precision_overflow():
    x = (torch.rand(2, 64).half(),)
    (f,) = analyze(M.HalfSum(), x, input_ranges={"x": "0:2000"}).by_code("NT201")
    assert f.evidence["dtype"] == "float16"
    assert analyze(M.HalfSum(fixed=True), x, input_ranges={"x": "0:2000"}).problems == []


def test_hand_layer_norm_is_clean():
    assert analyze(M.HandLayerNorm(), X, input_ranges={"x": "-50:50"}).problems == []


def test_unsupported_ops_one_finding_and_strict():
    res = analyze(M.Odd(), X, input_ranges=UNIT)
    (f,) = res.by_code("NT902")
    assert {"aten.erfinv.default", "aten.special_bessel_j0.default"} <= set(f.evidence["ops"])
    with pytest.raises(UnsupportedOpError, match="erfinv"):
        analyze(M.Odd(), X, input_ranges=UNIT, strict=True)


def test_model_untouched():
    model = M.Classifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analyze(model, X, input_ranges=UNIT)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_weight_bound_replaces_the_actual_weights():
    res = analyze(M.Classifier(fixed=True), X, input_ranges=UNIT, weights=0.5)
    fc1 = res.layer("fc1").interval
    assert fc1.hi == pytest.approx(8 * 0.5 + 0.5, rel=1e-3)  # 8 inputs in [0, 1], |w|, |b| <= 0.5
    assert fc1.lo == pytest.approx(-(8 * 0.5 + 0.5), rel=1e-3)


def test_bfloat16_model_is_analyzed_in_bfloat16():
    model = M.HandSoftmax().to(torch.bfloat16)
    res = analyze(model, (torch.rand(2, 8, dtype=torch.bfloat16),), input_ranges={"x": "0:1000"})
    (f,) = res.by_code("NT201")  # exp past the bfloat16 max 3.39e38: 16-bit overflow
    assert f.evidence["dtype"] == "bfloat16"


def test_additive_finfo_min_mask_is_not_an_overflow():
    x, mask = torch.rand(1, 5, 8), torch.ones(1, 5, 5)
    res = analyze(M.MaskedAttention(), (x, mask), input_ranges={"x": "-3:3", "mask": "0:1"})
    assert res.problems == []


def test_hand_written_stable_log_softmax_is_clean():
    res = analyze(M.StableLogSoftmax(), X, input_ranges={"x": "-1000:1000"})
    assert res.problems == []
    assert res.layer("sub").hi == 0.0  # z - max(z) <= 0
    assert res.layer("sum_1").lo > 0.99  # the max term contributes exp(0) = 1
