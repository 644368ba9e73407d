import math

import numpy as np
import pytest

from nantrap.floats import FORMATS, float_format


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
def test_format_constants_match_numpy(name):
    fmt, info = FORMATS[name], np.finfo(name)
    assert fmt.max == float(info.max)
    assert fmt.tiny == float(info.tiny)
    assert fmt.smallest_subnormal == float(info.smallest_subnormal)
    assert fmt.eps == float(info.eps)


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
def test_exp_thresholds_are_where_numpy_overflows(name):
    fmt, dt = FORMATS[name], np.dtype(name)
    with np.errstate(over="ignore", under="ignore"):
        assert np.isfinite(np.exp(dt.type(fmt.exp_overflow * 0.999)))
        assert np.isinf(np.exp(dt.type(fmt.exp_overflow * 1.001)))
        assert np.exp(dt.type(fmt.exp_underflow * 1.01)) == 0


@pytest.mark.parametrize("name", ["float16", "float32"])
def test_sigmoid_rounds_to_exactly_one_above_threshold(name):
    fmt, dt = FORMATS[name], np.dtype(name).type
    sig = lambda x: dt(1) / (dt(1) + np.exp(dt(-x)))  # noqa: E731
    assert sig(fmt.sigmoid_one * 1.01) == 1.0
    assert sig(fmt.sigmoid_one * 0.95) < 1.0


def test_documented_numbers():
    assert round(FORMATS["float32"].exp_overflow, 2) == 88.72
    assert round(FORMATS["float16"].exp_overflow, 2) == 11.09
    assert round(FORMATS["float32"].sigmoid_one, 2) == 16.64
    assert FORMATS["float16"].max == 65504
    assert FORMATS["float32"].absorbs(1e-10)  # 1 + 1e-10 == 1 in float32
    assert not FORMATS["float32"].absorbs(1e-6)


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("torch.float16", "float16"),
        ("bf16", "bfloat16"),
        ("<dtype: 'float32'>", "float32"),
        (np.dtype("float64"), "float64"),
        ("half", "float16"),
    ],
)
def test_float_format_accepts_framework_spellings(given, name):
    assert float_format(given).name == name


def test_float_format_rejects_integers_with_the_known_list():
    with pytest.raises(ValueError, match="float16, bfloat16, float32, float64"):
        float_format("int64")


def test_bfloat16_against_torch():
    torch = pytest.importorskip("torch")
    info = torch.finfo(torch.bfloat16)
    fmt = FORMATS["bfloat16"]
    assert (fmt.max, fmt.tiny, fmt.eps) == (info.max, info.tiny, info.eps)
    assert math.isinf(torch.exp(torch.tensor(fmt.exp_overflow + 0.5, dtype=torch.bfloat16)))
