import math

import pytest

from nantrap.analyze.interval import (
    Interval,
    convex,
    coordinatewise_increasing,
    coordinatewise_monotone,
    decreasing,
    increasing,
    mul,
    round_out,
)
from nantrap.floats import FORMATS


def test_invariant_and_frozen():
    with pytest.raises(ValueError, match="lo > hi"):
        Interval(1.0, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        Interval(math.nan, 0.0)
    x = Interval(0.0, 1.0)
    with pytest.raises(AttributeError):
        x.lo = 2.0  # type: ignore[misc]


def test_lattice_ops():
    a, b = Interval(0.0, 2.0), Interval(1.0, 3.0)
    assert a & b == Interval(1.0, 2.0)
    assert a | b == Interval(0.0, 3.0)
    assert (a & Interval(5.0, 6.0)) is None
    assert 1.5 in a and 2.5 not in a and Interval(0.5, 1.0) in a
    assert Interval.unknown() == Interval(-math.inf, math.inf)


def test_combinators():
    assert increasing(Interval(0.0, 1.0), math.exp) == Interval(1.0, math.e)
    assert decreasing(Interval(1.0, 2.0), lambda v: 1 / v) == Interval(0.5, 1.0)
    assert convex(Interval(-2.0, 1.0), abs, at=0.0) == Interval(0.0, 2.0)
    assert coordinatewise_increasing(Interval(0, 1), Interval(2, 3), lambda a, b: a + b) == (
        Interval(2.0, 4.0)
    )
    assert coordinatewise_monotone(Interval(-1, 2), Interval(-3, 1), mul) == Interval(-6.0, 3.0)
    assert mul(0.0, math.inf) == 0.0
    assert increasing(Interval(0.0, 1000.0), math.exp).hi == math.inf


def test_round_out_is_float_format_aware():
    f32, f16 = FORMATS["float32"], FORMATS["float16"]
    sig = Interval(0.5, 1 - 2e-9)  # sigmoid(20) in exact arithmetic
    assert round_out(sig, f32).hi == 1.0  # rounds to exactly 1 in float32
    assert round_out(Interval(1e-50, 1.0), f32).lo == 0.0  # exp underflow to 0
    assert round_out(Interval(0.0, 70000.0), f16).hi == math.inf  # past float16 max
    assert round_out(Interval(0.0, 65504.0), f16).hi == 65504.0
    assert round_out(Interval(0.0, 65519.0), f16).hi == 65504.0  # rounds to nearest: max
    assert round_out(Interval(0.0, 65520.0), f16).hi == math.inf  # half an ulp past max
    assert round_out(Interval(-f32.max - 50.0, 0.0), f32).lo == -f32.max  # finfo.min + x
    x = Interval(0.1, 0.3)
    assert x in round_out(x, f16, ulps=2)
