import math

import pytest

from nantrap.ops import FRAMEWORKS, Domain, Op, all_ops, get_op, lookup, lookup_api
from nantrap.ops._registry import register
from nantrap.traps import get_trap

REQUIRED = [
    "log",
    "log1p",
    "log2",
    "log10",
    "div",
    "reciprocal",
    "sqrt",
    "rsqrt",
    "pow",
    "exp",
    "expm1",
    "softmax",
    "log_softmax",
    "sigmoid",
    "logsigmoid",
    "tanh",
    "clip",
    "sum",
    "mean",
    "norm",
    "matmul",
    "acos",
    "asin",
    "atanh",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_required_op_has_an_aten_name(name):
    op = get_op(name)
    assert op.framework_names("aten"), f"{name} has no aten name"
    for aten in op.framework_names("aten"):
        assert lookup("aten", aten) is op


def test_every_op_trap_is_in_the_catalog():
    for op in all_ops():
        if op.trap:
            get_trap(op.trap)


def test_lookup_strips_overloads():
    assert lookup("aten", "aten.log.default").name == "log"
    assert lookup("aten", "aten::div.Tensor").name == "div"
    assert lookup("aten", "aten.nope.default") is None
    assert lookup("onnx", "Softmax").name == "softmax"
    assert lookup("tf_op", "RealDiv").name == "div"


def test_lookup_api_across_frameworks():
    assert lookup_api("tf.log").name == "log"
    assert lookup_api("torch.nn.functional.log_softmax").name == "log_softmax"
    assert lookup_api("jax.numpy.sqrt").name == "sqrt"
    assert lookup_api("torch.nn.functional.nothing") is None


def test_domains():
    assert not get_op("log").domain.contains(0.0)
    assert get_op("sqrt").domain.contains(0.0) and not get_op("sqrt").domain.contains(-1e-30)
    assert get_op("div").domain.arg == 1 and not get_op("div").domain.contains(0.0)
    assert not get_op("atanh").domain.contains(1.0) and get_op("acos").domain.contains(1.0)
    assert not get_op("log").domain.contains(math.nan)
    assert get_op("log").domain.describe() == "x > 0"
    assert get_op("acos").domain.describe() == "x >= -1 and x <= 1"


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="registered twice"):
        register(Op("log", get_op("log").kind, "again"))
    with pytest.raises(ValueError, match="claimed by both"):
        register(Op("mylog", get_op("log").kind, "x", names={"aten": ("aten.log",)}))
    with pytest.raises(ValueError, match="unknown framework"):
        register(Op("myop", get_op("log").kind, "x", names={"caffe": ("Log",)}))


def test_get_op_suggests():
    with pytest.raises(KeyError, match="did you mean"):
        get_op("sqr")


def test_frameworks_are_known():
    for op in all_ops():
        assert set(op.names) <= set(FRAMEWORKS)
        assert isinstance(op.domain, (Domain, type(None)))
