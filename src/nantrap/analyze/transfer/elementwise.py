"""Unary maths: logarithms, exponentials, roots, inverse trig. One line of maths each."""

from __future__ import annotations

import math

import numpy as np

from nantrap.analyze.interval import Interval, convex, decreasing, increasing
from nantrap.analyze.transfer import Ctx, Example, transfer
from nantrap.analyze.transfer._domain import check_domain, grad_pole

INF = math.inf


def _log(f):
    def g(v: float) -> float:
        return -INF if v == 0 else f(v)

    return g


def _log_family(name: str, f):
    def fn(ctx: Ctx, x: Interval) -> Interval | None:
        inside = check_domain(ctx, name, x)
        if inside is None:
            return None
        if name == "log1p":
            return increasing(inside, lambda v: -INF if v == -1 else math.log1p(v))
        return increasing(inside, _log(f))

    return fn


transfer("log", ref=np.log)(_log_family("log", math.log))
transfer("log2", ref=np.log2)(_log_family("log2", math.log2))
transfer("log10", ref=np.log10)(_log_family("log10", math.log10))
transfer("log1p", ref=np.log1p)(_log_family("log1p", math.log1p))


@transfer("exp", ref=np.exp)
def exp(ctx: Ctx, x: Interval) -> Interval:
    return increasing(x, math.exp)


@transfer("expm1", ref=np.expm1)
def expm1(ctx: Ctx, x: Interval) -> Interval:
    return increasing(x, math.expm1)


@transfer("cosh", ref=np.cosh)
def cosh(ctx: Ctx, x: Interval) -> Interval:
    return convex(x, math.cosh, at=0.0)


@transfer("sinh", ref=np.sinh)
def sinh(ctx: Ctx, x: Interval) -> Interval:
    return increasing(x, lambda v: math.copysign(INF, v) if abs(v) > 710 else math.sinh(v))


@transfer("sqrt", ref=np.sqrt, ulps=0)  # IEEE: correctly rounded
def sqrt(ctx: Ctx, x: Interval) -> Interval | None:
    inside = check_domain(ctx, "sqrt", x)
    if inside is None:
        return None
    grad_pole(ctx, "sqrt", inside, 0.0)
    return increasing(inside, math.sqrt)


@transfer("rsqrt", ref=lambda x: 1 / np.sqrt(x))
def rsqrt(ctx: Ctx, x: Interval) -> Interval | None:
    inside = check_domain(ctx, "rsqrt", x)
    return decreasing(inside, lambda v: INF if v == 0 else 1 / math.sqrt(v)) if inside else None


@transfer("reciprocal", ref=np.reciprocal, ulps=0)
def reciprocal(ctx: Ctx, x: Interval) -> Interval | None:
    check_domain(ctx, "reciprocal", x)
    return inverse(x)


def inverse(x: Interval) -> Interval:
    """The interval of ``1 / x`` for the nonzero points of x (±inf where x reaches 0)."""
    if x.lo > 0 or x.hi < 0:
        return decreasing(x, lambda v: 1 / v)
    if x.lo == 0 and x.hi > 0:
        return Interval(1 / x.hi, INF)
    if x.hi == 0 and x.lo < 0:
        return Interval(-INF, 1 / x.lo)
    return Interval.unknown()


@transfer("square", ref=np.square, ulps=0)
def square(ctx: Ctx, x: Interval) -> Interval:
    return convex(x, lambda v: v * v, at=0.0)


@transfer("neg", ref=np.negative, exact=True)
def neg(ctx: Ctx, x: Interval) -> Interval:
    return -x


@transfer("abs", ref=np.abs, exact=True)
def abs_(ctx: Ctx, x: Interval) -> Interval:
    return convex(x, abs, at=0.0)


def _inverse_trig(name: str, f, lo: float, hi: float):
    def fn(ctx: Ctx, x: Interval) -> Interval | None:
        inside = check_domain(ctx, name, x)
        if inside is not None:
            for end in (lo, hi):
                grad_pole(ctx, name, inside, end)
        return increasing(inside, f) if inside else None

    return fn


def _atanh(v: float) -> float:
    return math.copysign(INF, v) if abs(v) == 1 else math.atanh(v)


transfer("asin", ref=np.arcsin)(_inverse_trig("asin", math.asin, -1.0, 1.0))
transfer("atanh", ref=np.arctanh)(_inverse_trig("atanh", _atanh, -1.0, 1.0))


@transfer("acos", ref=np.arccos)
def acos(ctx: Ctx, x: Interval) -> Interval | None:
    inside = check_domain(ctx, "acos", x)
    if inside is not None:
        grad_pole(ctx, "acos", inside, 1.0)
        grad_pole(ctx, "acos", inside, -1.0)
    return decreasing(inside, math.acos) if inside else None


@transfer("erf", ref=np.vectorize(math.erf, otypes=[float]))
def erf(ctx: Ctx, x: Interval) -> Interval:
    return increasing(x, math.erf)


def _periodic(f, peak: float):
    """sin/cos: exact on a short monotone piece, else [-1, 1] bounded by the ends."""

    def fn(ctx: Ctx, x: Interval) -> Interval:
        if not x.is_finite or x.width >= 2 * math.pi:
            return Interval(-1.0, 1.0)
        ys = [f(x.lo), f(x.hi)]
        # extrema of f inside x: peak + k*pi
        k = math.ceil((x.lo - peak) / math.pi)
        while peak + k * math.pi <= x.hi:
            ys.append(f(peak + k * math.pi))
            k += 1
        return Interval(min(ys), max(ys))

    return fn


transfer("sin", ref=np.sin, example=Example(domain=(-1e4, 1e4)))(_periodic(math.sin, math.pi / 2))
transfer("cos", ref=np.cos, example=Example(domain=(-1e4, 1e4)))(_periodic(math.cos, 0.0))


@transfer("round", ref=np.floor, exact=True)
def round_(ctx: Ctx, x: Interval) -> Interval:
    """Every rounding mode moves a value by less than 1 toward an integer."""
    return Interval(
        math.floor(x.lo) if math.isfinite(x.lo) else x.lo,
        math.ceil(x.hi) if math.isfinite(x.hi) else x.hi,
    )


@transfer("sign", ref=np.sign, exact=True)
def sign(ctx: Ctx, x: Interval) -> Interval:
    return increasing(x, lambda v: float((v > 0) - (v < 0)))
