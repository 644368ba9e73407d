"""Singletons are tight, and non-monotone ops are sound on a dense grid."""

import math

import numpy as np
import pytest

from nantrap.analyze.interval import Interval, ulp
from nantrap.analyze.transfer import TRANSFER, Ctx, apply, load
from nantrap.floats import FORMATS

load()
UNARY = sorted(
    name
    for name, t in TRANSFER.items()
    if len(t.example.shapes) == 1 and t.example.shapes[0] == (4,) and not t.example.consts
    and t.example.out_shape is None
    and name not in ("reshape", "max_pool", "random", "round")  # round: any rounding mode
)  # fmt: skip
CONSTANTS = [0.0, 0.25, 0.5, 1.0, -1.0, 2.0, -3.0, 10.0, 65504.0, 2.0**-14]


@pytest.mark.parametrize("fmt_name", ["float16", "float32"])
@pytest.mark.parametrize("name", UNARY)
def test_singletons_are_tight(name, fmt_name):
    fmt = FORMATS[fmt_name]
    dt = np.float16 if fmt_name == "float16" else np.float32
    for c in CONSTANTS:
        ctx = Ctx(fmt, shapes=((1,),), out_shape=(1,))
        out = apply(name, ctx, Interval.point(c))
        with np.errstate(all="ignore"):
            y = float(np.asarray(TRANSFER[name].ref(np.array([c], np.float64))).astype(dt)[0])
        if not math.isfinite(y):
            assert ctx.hazards, (name, c)
            continue
        assert y in out, (name, c, out, y)
        assert out.width <= 8 * ulp(y, fmt), f"{name}({c}) -> {out} is loose"


@pytest.mark.parametrize("name", ["gelu", "silu", "sin", "cos", "square", "abs", "cosh"])
def test_non_monotone_ops_on_a_dense_grid(name):
    fmt = FORMATS["float32"]
    ref = TRANSFER[name].ref
    for lo, hi in [(-3.0, 1.0), (-1.0, -0.5), (-0.9, 2.5), (0.1, 7.0), (-6.0, -1.0)]:
        grid = np.linspace(lo, hi, 4001)
        ys = np.asarray(ref(grid)).astype(np.float32)
        out = apply(name, Ctx(fmt, shapes=((4001,),), out_shape=(4001,)), Interval(lo, hi))
        assert out.lo <= ys.min() and ys.max() <= out.hi, (name, lo, hi, out)
        assert out.lo >= ys.min() - 1e-3 and out.hi <= ys.max() + 1e-3  # and tight
