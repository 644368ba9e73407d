"""diagnose() is framework-neutral: OpRecords as a TF/Keras edge would build them."""

from __future__ import annotations

import math

import pytest

from nantrap.findings import Category, Phase
from nantrap.guard import diagnose as dg
from nantrap.guard.diagnose import OpRecord, diagnose, rule
from nantrap.guard.stats import TensorStats


def S(numel=640, dtype="float32", **kw):
    return TensorStats(numel, dtype, (numel,), **kw)


SOFTMAX = OpRecord(
    op="Softmax",
    neutral_op="softmax",
    phase=Phase.FORWARD,
    module="model.head",
    path="/src/train.py",
    line=12,
    dtype="float32",
    outputs=(S(min=0.0, max=1.0, zeros=37),),
)


def test_log_of_softmax_underflow_names_the_producer_and_counts():
    rec = OpRecord(
        op="Log",
        neutral_op="log",
        phase=Phase.FORWARD,
        path="/src/train.py",
        line=20,
        source_line="ce = -tf.reduce_sum(y * tf.math.log(p))",
        dtype="float32",
        inputs=(S(min=0.0, max=1.0, zeros=37),),
        outputs=(S(inf=37, neg_inf=37),),
        producers=(SOFTMAX,),
        leaves=(None,),
    )
    d = diagnose(rec, step=5)
    assert (d.code, d.category, d.phase, d.step) == ("NT101", Category.DOMAIN, Phase.FORWARD, 5)
    assert d.op == "Log" and d.neutral_op == "log" and d.source == "/src/train.py:20"
    assert (
        "input of log (train.py:20) is the output of softmax in model.head (train.py:12), "
        "which underflowed to exactly 0 in 37 of 640 elements" in d.message
    )
    assert d.evidence["producer"]["module"] == "model.head"
    assert d.location.source_line.startswith("ce = ")


def test_log_of_relu_output_is_nt103_and_negative_input_of_sqrt_is_nt112():
    relu = OpRecord(op="Relu", neutral_op="relu", phase=Phase.FORWARD, module="model.enc")
    rec = OpRecord(
        op="Log",
        neutral_op="log",
        phase=Phase.FORWARD,
        dtype="float32",
        inputs=(S(min=0.0, max=3.0, zeros=5),),
        outputs=(S(inf=5, neg_inf=5),),
        producers=(relu,),
        leaves=(None,),
    )
    d = diagnose(rec)
    assert d.code == "NT103" and "exactly 0 in 5 of 640 elements" in d.message
    assert "output of relu in model.enc" in d.message
    sq = OpRecord(
        op="Sqrt",
        neutral_op="sqrt",
        phase=Phase.FORWARD,
        dtype="float32",
        inputs=(S(min=-0.25, max=2.0, negatives=3),),
        outputs=(S(nan=3),),
        producers=(None,),
        leaves=("tensor",),
    )
    d = diagnose(sq)
    assert d.code == "NT112" and "negative in 3 of 640 elements (min -0.25)" in d.message


def test_log_of_one_minus_sigmoid_is_nt104():
    sig = OpRecord(
        op="Sigmoid", neutral_op="sigmoid", phase=Phase.FORWARD, module="model.out", dtype="float32"
    )
    one_minus = OpRecord(
        op="Sub",
        neutral_op="sub",
        phase=Phase.FORWARD,
        dtype="float32",
        scalars=(1.0,),
        producers=(sig,),
    )
    rec = OpRecord(
        op="Log",
        neutral_op="log",
        phase=Phase.FORWARD,
        dtype="float32",
        inputs=(S(min=0.0, max=0.5, zeros=12),),
        outputs=(S(inf=12, neg_inf=12),),
        producers=(one_minus,),
        leaves=(None,),
    )
    d = diagnose(rec)
    assert d.code == "NT104" and "1 - sigmoid" in d.message
    assert d.evidence["sigmoid_one_above"] == pytest.approx(16.636, abs=1e-3)


def test_backward_sqrt_at_zero_is_nt111_named_after_the_forward_op():
    fwd = OpRecord(
        op="Sqrt",
        neutral_op="sqrt",
        phase=Phase.FORWARD,
        module="model.dist",
        path="/src/loss.py",
        line=7,
        dtype="float32",
        inputs=(S(64, min=0.0, max=4.0),),
    )
    rec = OpRecord(
        op="RealDiv",
        neutral_op="div",
        phase=Phase.BACKWARD,
        dtype="float32",
        node="SqrtGrad",
        forward=fwd,
        inputs=(S(64, min=0.1, max=0.1), S(64, min=0.0, max=4.0, zeros=4)),
        outputs=(S(64, inf=4),),
        producers=(None, None),
        leaves=("tensor", "tensor"),
    )
    d = diagnose(rec)
    assert (d.code, d.phase, d.neutral_op, d.module) == (
        "NT111",
        Phase.BACKWARD,
        "sqrt",
        "model.dist",
    )
    assert d.source == "/src/loss.py:7" and d.location.node == "SqrtGrad"
    assert "exactly 0 in 4 of 64 elements" in d.message


def test_exp_overflow_float32_and_half_precision():
    rec = OpRecord(
        op="Exp",
        neutral_op="exp",
        phase=Phase.FORWARD,
        dtype="float32",
        inputs=(S(min=-3.0, max=95.5),),
        outputs=(S(inf=2),),
        producers=(None,),
        leaves=(None,),
    )
    d = diagnose(rec)
    assert (d.code, d.category) == ("NT113", Category.OVERFLOW)
    assert "above 88.72" in d.message and d.evidence["input_max_abs"] == 95.5
    half = OpRecord(
        op="Exp",
        neutral_op="exp",
        phase=Phase.FORWARD,
        dtype="float16",
        inputs=(S(dtype="float16", min=0.0, max=12.0),),
        outputs=(S(dtype="float16", inf=1),),
        producers=(None,),
        leaves=(None,),
    )
    d = diagnose(half)
    assert (d.code, d.category) == ("NT201", Category.PRECISION)
    assert "float16 (max 65504)" in d.message and "fits in float32" in d.message
    mm = OpRecord(
        op="MatMul",
        neutral_op="matmul",
        phase=Phase.FORWARD,
        dtype="bfloat16",
        inputs=(S(dtype="bfloat16", min=-1.0, max=3e38), S(dtype="bfloat16", max=2.0)),
        outputs=(S(dtype="bfloat16", inf=1),),
        producers=(None, None),
    )
    d = diagnose(mm)  # bfloat16 has float32's range: a real overflow, not a precision issue
    assert (d.code, d.category) == ("NT116", Category.OVERFLOW)
    assert "bfloat16" in d.message


def test_bad_data_and_bad_parameters():
    conv = dict(
        op="Conv2D",
        neutral_op="conv",
        phase=Phase.FORWARD,
        module="model.conv1",
        dtype="float32",
        outputs=(S(nan=9),),
        producers=(None, None),
    )
    d = diagnose(
        OpRecord(inputs=(S(nan=1), S(min=-1.0, max=1.0)), leaves=("input 0", None), **conv)
    )
    assert (d.code, d.category, d.phase) == ("NT401", Category.BAD_DATA, Phase.DATA)
    assert "the model input holds 1 NaN of 640 elements" in d.message
    d = diagnose(
        OpRecord(
            inputs=(S(min=0.0, max=1.0), S(inf=2)),
            leaves=("input 0", "parameter model.conv1.kernel"),
            **conv,
        )
    )
    assert (d.code, d.category) == ("NT403", Category.BAD_DATA)
    assert d.evidence["tensor"] == "model.conv1.kernel" and "2 Inf of 640" in d.message
    assert "BatchNorm" not in d.message


def test_a_non_finite_batchnorm_running_stat_points_at_an_earlier_forward():
    bn = OpRecord(
        op="aten.native_batch_norm.default",
        neutral_op="batch_norm",
        phase=Phase.FORWARD,
        module="model.bn",
        dtype="float32",
        inputs=(S(min=-1.0, max=1.0), S(min=-1.0, max=1.0), S(inf=8)),
        outputs=(S(nan=4),),
        producers=(None, None, None),
        leaves=("input 0", "parameter model.bn.weight", "buffer model.bn.running_var"),
    )
    d = diagnose(bn)
    assert d.code == "NT403" and d.evidence["tensor"] == "model.bn.running_var"
    assert "an earlier step's forward put it there" in d.message
    assert "lower the learning rate" in d.fix and "manual .data edit" not in d.fix


def test_targets_out_of_range():
    bce = OpRecord(
        op="aten.binary_cross_entropy.default",
        neutral_op="binary_cross_entropy",
        phase=Phase.FORWARD,
        dtype="float32",
        inputs=(S(min=0.01, max=0.99), S(min=0.0, max=2.0)),
        outputs=(S(nan=1),),
        producers=(None, None),
        leaves=(None, None),
    )
    d = diagnose(bce)
    assert (d.code, d.category) == ("NT402", Category.BAD_DATA)
    assert "targets in [0, 2], outside [0, 1]" in d.message
    nll = OpRecord(
        op="aten.nll_loss_forward.default",
        neutral_op="nll_loss",
        phase=Phase.FORWARD,
        inputs=(
            TensorStats(20, "float32", (4, 5)),
            TensorStats(4, "int64", (4,), min=0.0, max=7.0),
        ),
        error="IndexError: Target 7 is out of bounds.",
    )
    d = diagnose(nll)
    assert d.code == "NT402" and d.evidence["classes"] == 5
    assert "valid: 0..4" in d.message


def test_epsilon_absorbed_and_epsilon_below_resolution():
    clamp = OpRecord(
        op="aten.clamp.default",
        neutral_op="clip",
        phase=Phase.FORWARD,
        dtype="float32",
        scalars=(1e-10, 1 - 1e-10),
        module="model",
    )
    rsub = OpRecord(
        op="aten.rsub.Scalar",
        neutral_op="sub",
        phase=Phase.FORWARD,
        dtype="float32",
        scalars=(1.0,),
        producers=(clamp,),
    )
    log = OpRecord(
        op="aten.log.default",
        neutral_op="log",
        phase=Phase.FORWARD,
        dtype="float32",
        inputs=(S(min=0.0, max=0.3, zeros=9),),
        outputs=(S(inf=9, neg_inf=9),),
        producers=(rsub,),
        leaves=(None,),
    )
    d = diagnose(log)
    assert (d.code, d.category) == ("NT107", Category.PRECISION)
    assert d.evidence["epsilon"] == pytest.approx(1e-10, rel=1e-3)
    add = OpRecord(
        op="aten.add.Tensor",
        neutral_op="add",
        phase=Phase.FORWARD,
        dtype="float16",
        scalars=(1e-8,),
    )
    log16 = OpRecord(
        op="aten.log.default",
        neutral_op="log",
        phase=Phase.FORWARD,
        dtype="float16",
        inputs=(S(dtype="float16", min=0.0, max=1.0, zeros=3),),
        outputs=(S(dtype="float16", inf=3),),
        producers=(add,),
        leaves=(None,),
    )
    d = diagnose(log16)
    assert d.code == "NT202" and "is 0 in float16" in d.message


def test_division_by_zero_and_inverse_trig():
    norm = OpRecord(
        op="aten.linalg_vector_norm.default",
        neutral_op="norm",
        phase=Phase.FORWARD,
        module="model.proj",
    )
    div = OpRecord(
        op="aten.div.Tensor",
        neutral_op="div",
        phase=Phase.FORWARD,
        dtype="float32",
        inputs=(S(min=0.0, max=1.0), S(10, min=0.0, max=3.0, zeros=1)),
        outputs=(S(nan=6),),
        producers=(None, norm),
        leaves=("tensor", None),
    )
    d = diagnose(div)
    assert d.code == "NT110" and "exactly 0 in 1 of 10 elements" in d.message
    assert "output of norm in model.proj" in d.message
    acos = OpRecord(
        op="Acos",
        neutral_op="acos",
        phase=Phase.FORWARD,
        dtype="float32",
        inputs=(S(min=-0.5, max=1.0000001),),
        outputs=(S(nan=1),),
        producers=(None,),
        leaves=(None,),
    )
    assert diagnose(acos).code == "NT114"


def test_unexplained_is_coverage_not_a_guess():
    rec = OpRecord(
        op="Mystery",
        neutral_op=None,
        phase=Phase.FORWARD,
        inputs=(S(min=0.0, max=1.0),),
        outputs=(S(nan=2),),
        producers=(None,),
        leaves=(None,),
    )
    d = diagnose(rec)
    assert (d.code, d.category) == ("NT903", Category.COVERAGE)
    assert "2 NaN of 640 elements" in d.message


def test_diagnosis_round_trips_through_json():
    rec = OpRecord(
        op="Exp",
        neutral_op="exp",
        phase=Phase.FORWARD,
        dtype="float32",
        inputs=(S(min=-3.0, max=95.5),),
        outputs=(S(inf=2),),
        producers=(None,),
    )
    d = diagnose(rec, step=3)
    from nantrap.findings import Finding

    assert Finding.from_dict(d.to_dict()) == d
    assert d.to_dict()["evidence"]["outputs"][0]["inf"] == 2
    assert not math.isnan(d.evidence["input_max_abs"])


def test_rule_registry_refuses_duplicates():
    with pytest.raises(RuntimeError, match="registered twice"):
        rule(dg._domain)


def test_diagnose_imports_without_any_framework():
    from tests.test_no_framework import _run

    out = _run(
        "import nantrap.guard.diagnose as d, sys\n"
        "print(any(m in sys.modules for m in ('torch', 'tensorflow', 'keras')))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
