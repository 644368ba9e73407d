"""Binary arithmetic, clipping and selection."""

from __future__ import annotations

import math
import operator

import numpy as np

from nantrap.analyze.interval import (
    Interval,
    convex,
    coordinatewise_increasing,
    coordinatewise_monotone,
    mul,
    round_out,
)
from nantrap.analyze.transfer import Ctx, Example, transfer
from nantrap.analyze.transfer._domain import check_domain, grad_pole
from nantrap.analyze.transfer.elementwise import inverse

INF = math.inf
TWO = Example(shapes=((4,), (4,)))
IEEE = 0  # +, -, *, / are correctly rounded: the grid rounding is the whole error


def _scaled(ctx: Ctx, x: Interval, alpha: float) -> Interval:
    """``alpha * x``, rounded to the dtype on its own (it is a separate rounding step)."""
    if alpha == 1:
        return x
    return round_out(coordinatewise_monotone(x, Interval.point(alpha), mul), ctx.fmt)


@transfer("add", ref=lambda a, b, alpha=1: a + alpha * b, ulps=IEEE, example=TWO)
def add(ctx: Ctx, a: Interval, b: Interval) -> Interval:
    return coordinatewise_increasing(a, _scaled(ctx, b, ctx.attr("alpha", 1)), operator.add)


@transfer("bias_add", ref=np.add, ulps=IEEE, example=TWO)
def bias_add(ctx: Ctx, a: Interval, b: Interval) -> Interval:
    return coordinatewise_increasing(a, b, operator.add)


@transfer("sub", ref=lambda a, b, alpha=1: a - alpha * b, ulps=IEEE, example=TWO)
def sub(ctx: Ctx, a: Interval, b: Interval) -> Interval:
    out = coordinatewise_increasing(a, -_scaled(ctx, b, ctx.attr("alpha", 1)), operator.add)
    extreme = ctx.attr("own_extreme")  # the interpreter saw ``a - amax(a)`` / ``a - amin(a)``
    if extreme == "max":
        return Interval(min(out.lo, 0.0), 0.0)
    if extreme == "min":
        return Interval(0.0, max(out.hi, 0.0))
    return out


@transfer("mul", ref=np.multiply, ulps=IEEE, example=TWO)
def mul_(ctx: Ctx, a: Interval, b: Interval) -> Interval:
    if ctx.attr("same_input"):  # x * x is a square, not any product of two values in x
        return convex(a, lambda v: v * v, at=0.0)
    return coordinatewise_monotone(a, b, mul)


@transfer("div", ref=np.divide, ulps=IEEE, example=TWO)
def div(ctx: Ctx, a: Interval, b: Interval) -> Interval:
    check_domain(ctx, "div", b, arg=1)
    return coordinatewise_monotone(a, inverse(b), mul)


def _pow_point(x: float, p: float) -> float:
    if x == 0 and p < 0:
        return INF
    try:
        return math.pow(x, p)
    except OverflowError:
        return INF if x > 0 or (float(p).is_integer() and p % 2 == 0) else -INF


@transfer("pow", ref=np.power, example=Example(shapes=((4,), ()), consts=(1,)))
def pow_(ctx: Ctx, x: Interval, p: Interval) -> Interval | None:
    if not p.is_point:
        if x.lo <= 0:
            ctx.flag(
                "NT115",
                f"pow with a varying exponent needs a base > 0; base range {x.describe()}",
                input_lo=x.lo,
                input_hi=x.hi,
            )
            x = x & Interval(0.0, INF)
            if x is None:
                return None
        return coordinatewise_monotone(x, p, _pow_point)
    e = p.lo
    if e == 0:
        return Interval.point(1.0)
    integer = float(e).is_integer()
    if not integer and x.lo < 0:
        ctx.flag(
            "NT115",
            f"x ** {e:g} of a negative base is NaN; base range {x.describe()}",
            input_lo=x.lo,
            input_hi=x.hi,
            exponent=e,
        )
        x = x & Interval(0.0, INF)
        if x is None:
            return None
    if e < 0 and 0 in x:
        ctx.flag(
            "NT110",
            f"x ** {e:g} divides by zero at x = 0; base range {x.describe()}",
            input_lo=x.lo,
            input_hi=x.hi,
            exponent=e,
        )
    if 0 < e < 1:
        grad_pole(ctx, "pow", x, 0.0)
    f = lambda v: _pow_point(v, e)  # noqa: E731
    if integer and e % 2 == 0:
        return convex(x, f, at=0.0) if e > 0 else _even_negative(x, f)
    if e > 0:
        return coordinatewise_increasing(x, x, lambda a, _b: f(a))
    return (
        coordinatewise_monotone(x, x, lambda a, _b: f(a))
        if x.lo > 0 or x.hi < 0
        else (Interval.unknown())
    )


def _even_negative(x: Interval, f) -> Interval:
    if 0 in x:
        return Interval(min(f(x.lo), f(x.hi)), INF)
    return Interval(min(f(x.lo), f(x.hi)), max(f(x.lo), f(x.hi)))


@transfer(
    "clip",
    ref=lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi),
    exact=True,
    example=Example(shapes=((4,), (), ()), consts=(1, 2)),
)
def clip(ctx: Ctx, x: Interval, lo: Interval | None = None, hi: Interval | None = None):
    if lo is not None:
        x = coordinatewise_increasing(x, lo, max)
    if hi is not None:
        x = coordinatewise_increasing(x, hi, min)
    return x


@transfer(
    "hardtanh", ref=lambda x, min_val=-1.0, max_val=1.0: np.clip(x, min_val, max_val), exact=True
)
def hardtanh(ctx: Ctx, x: Interval) -> Interval:
    lo, hi = ctx.attr("min_val", -1.0), ctx.attr("max_val", 1.0)
    return coordinatewise_increasing(x, Interval(lo, hi), lambda v, _: min(max(v, lo), hi))


@transfer("maximum", ref=np.maximum, exact=True, example=TWO)
def maximum(ctx: Ctx, a: Interval, b: Interval) -> Interval:
    return coordinatewise_increasing(a, b, max)


@transfer("minimum", ref=np.minimum, exact=True, example=TWO)
def minimum(ctx: Ctx, a: Interval, b: Interval) -> Interval:
    return coordinatewise_increasing(a, b, min)


@transfer(
    "where",
    ref=lambda c, a, b: np.where(c > 0, a, b),
    exact=True,
    example=Example(shapes=((4,), (4,), (4,))),
)
def where(ctx: Ctx, cond: Interval, a: Interval, b: Interval) -> Interval:
    return a | b


@transfer(
    "masked_fill",
    ref=lambda x, m, v: np.where(m > 0, v, x),
    exact=True,
    example=Example(shapes=((4,), (4,), ()), consts=(2,)),
)
def masked_fill(ctx: Ctx, x: Interval, mask: Interval, value: Interval) -> Interval:
    return x | value


@transfer("compare", ref=lambda a, b: (a > b).astype(np.float64), exact=True, example=TWO)
def compare(ctx: Ctx, *args: Interval | None) -> Interval:
    return Interval(0.0, 1.0)


@transfer("cast", ref=lambda x: x, ulps=0)
def cast(ctx: Ctx, x: Interval) -> Interval:
    return x
