"""Reductions (sum, mean, norms, variance, logsumexp), pooling and losses.

A reduction's count ``k`` (input elements per output element) comes from the shapes, so
no framework's way of naming axes matters. Float sums carry a rounding slack of
``(k - 1) * eps * k * max|x|``.
"""

from __future__ import annotations

import math

import numpy as np

from nantrap.analyze.interval import Interval, mul
from nantrap.analyze.transfer import Ctx, Example, transfer
from nantrap.analyze.transfer._domain import grad_pole

INF = math.inf
RED = Example(shapes=((3, 4),), attrs={"dim": -1}, out_shape=(3,))


def slack(ctx: Ctx, k: int, total: float) -> float:
    """Worst rounding error of a float sum of k terms whose magnitudes add up to ``total``."""
    if ctx.fmt is None or k <= 1 or not math.isfinite(total):
        return 0.0
    return (k - 1) * ctx.fmt.eps * total


def widen(x: Interval, d: float) -> Interval:
    """``x`` plus rounding slack ``d``; a sign-definite sum keeps its sign in float."""
    if d == 0:
        return x
    lo = x.lo - d if x.lo < 0 else max(0.0, x.lo - d)
    hi = x.hi + d if x.hi > 0 else min(0.0, x.hi + d)
    return Interval(lo, hi)


def _k(ctx: Ctx) -> int | None:
    return ctx.reduced(0)


@transfer("sum", ref=lambda x, dim=-1: x.sum(axis=dim), example=RED)
def sum_(ctx: Ctx, x: Interval, *_axes: Interval | None) -> Interval:
    k = _k(ctx)
    if k is None:
        return Interval.unknown() if x != Interval.point(0.0) else x
    if ctx.fact(0, "simplex") and k == ctx.dim_size(0, -1) and _keeps_leading(ctx):
        return widen(Interval.point(1.0), slack(ctx, k, 1.0))
    out = widen(Interval(mul(k, x.lo), mul(k, x.hi)), slack(ctx, k, k * x.magnitude))
    least = ctx.attr("at_least")  # sum(exp(x - max(x))): the max term is exactly 1
    return Interval(max(out.lo, least), max(out.hi, least)) if least is not None else out


def _keeps_leading(ctx: Ctx) -> bool:
    shape, out = ctx.shape(0), ctx.out_shape
    return out is not None and tuple(d for d in out if d != 1) == tuple(
        d for d in shape[:-1] if d != 1
    )


@transfer("mean", ref=lambda x, dim=-1: x.mean(axis=dim), example=RED)
def mean(ctx: Ctx, x: Interval, *_axes: Interval | None) -> Interval:
    k = _k(ctx) or 1
    return widen(x, slack(ctx, k, x.magnitude))


@transfer("avg_pool", ref=lambda x: x.reshape(-1, 2).mean(axis=1), example=Example(out_shape=(2,)))
def avg_pool(ctx: Ctx, x: Interval) -> Interval:
    if _padded(ctx) and ctx.attr("count_include_pad", True):
        x = x | Interval.point(0.0)
    k = _k(ctx) or 1
    return widen(x, slack(ctx, k, x.magnitude))


def _padded(ctx: Ctx) -> bool:
    pad = ctx.attr("padding", ctx.attr("pads", 0))
    if isinstance(pad, str):
        return pad.upper() not in ("VALID", "NOTSET")
    if isinstance(pad, (list, tuple)):
        return any(p for p in pad)
    return bool(pad)


@transfer("amax", ref=lambda x, dim=-1: x.max(axis=dim), exact=True, example=RED)
def amax(ctx: Ctx, x: Interval, *_axes: Interval | None) -> Interval:
    return x


@transfer("amin", ref=lambda x, dim=-1: x.min(axis=dim), exact=True, example=RED)
def amin(ctx: Ctx, x: Interval, *_axes: Interval | None) -> Interval:
    return x


@transfer(
    "norm",
    ref=lambda x, dim=-1: np.sqrt((x * x).sum(axis=dim)),
    example=RED,
)
def norm(ctx: Ctx, x: Interval, *_rest: Interval | None) -> Interval:
    k = _k(ctx) or 1
    p = ctx.attr("ord", ctx.attr("p", 2))
    p = 2.0 if p in (None, "fro") else float(p)
    least = 0.0 if 0 in x else min(abs(x.lo), abs(x.hi))
    if ctx.attr("_framework") == "tensorflow":  # torch defines the gradient at 0 as 0
        grad_pole(ctx, "norm", Interval(least, least), 0.0)
    if p == math.inf:
        return Interval(least, x.magnitude)
    root = k ** (1.0 / p) if p > 0 else 1.0
    out = Interval(least * root, x.magnitude * root)
    return widen(out, slack(ctx, k, out.hi))


def _var_hi(ctx: Ctx, x: Interval) -> float:
    k = _k(ctx) or 2
    corr = ctx.attr("correction", 1 if ctx.attr("unbiased", True) else 0)
    return (x.width / 2) ** 2 * k / max(k - float(corr), 1.0)


@transfer("var", ref=lambda x, dim=-1: x.var(axis=dim, ddof=1), example=RED)
def var(ctx: Ctx, x: Interval, *_rest: Interval | None) -> Interval:
    return Interval(0.0, _var_hi(ctx, x) * (1 + 8 * (ctx.fmt.eps if ctx.fmt else 0)))


@transfer("std", ref=lambda x, dim=-1: x.std(axis=dim, ddof=1), example=RED)
def std(ctx: Ctx, x: Interval, *_rest: Interval | None) -> Interval:
    if ctx.attr("_framework") == "tensorflow":
        grad_pole(ctx, "std", Interval(0.0, 0.0), 0.0)
    return Interval(0.0, math.sqrt(_var_hi(ctx, x)) * (1 + 8 * (ctx.fmt.eps if ctx.fmt else 0)))


@transfer(
    "logsumexp",
    ref=lambda x, dim=-1: (
        np.log(np.exp(x - x.max(axis=dim, keepdims=True)).sum(axis=dim)) + x.max(axis=dim)
    ),
    example=RED,
)
def logsumexp(ctx: Ctx, x: Interval, *_rest: Interval | None) -> Interval:
    log_k = math.log(_k(ctx) or 1)
    return Interval(x.lo, x.hi + log_k)


@transfer(
    "cumsum",
    ref=lambda x, dim=-1: np.cumsum(x, axis=dim),
    example=Example(shapes=((3, 4),), attrs={"dim": -1}),
)
def cumsum(ctx: Ctx, x: Interval, *_rest: Interval | None) -> Interval:
    k = ctx.dim_size(0, ctx.attr("dim", -1)) or 1
    out = Interval(min(x.lo, mul(k, x.lo)), max(x.hi, mul(k, x.hi)))
    return widen(out, slack(ctx, k, k * x.magnitude))


@transfer(
    "nll_loss", ref=lambda x, t: -x.mean(), example=Example(shapes=((4,), (4,)), out_shape=())
)
def nll_loss(ctx: Ctx, x: Interval, *_rest: Interval | None) -> Interval:
    return -x


@transfer(
    "cross_entropy",
    ref=lambda x, t: -((x - x.max()) - np.log(np.exp(x - x.max()).sum())).mean(),
    example=Example(shapes=((4,), (4,)), out_shape=()),
)
def cross_entropy(ctx: Ctx, x: Interval, *_rest: Interval | None) -> Interval:
    n = ctx.dim_size(0, ctx.attr("dim", 1 if len(ctx.shape(0) or ()) > 1 else -1)) or 2
    return Interval(0.0, x.width + math.log(n))


@transfer(
    "binary_cross_entropy_with_logits",
    ref=lambda x, t: np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))),
    example=Example(shapes=((4,), (4,)), out_shape=(), domain=(0.0, 1.0)),
)
def bce_logits(ctx: Ctx, x: Interval, t: Interval, *_rest: Interval | None) -> Interval:
    return Interval(0.0, x.magnitude * max(1.0, t.magnitude) + math.log(2.0))


@transfer(
    "binary_cross_entropy",
    ref=lambda p, t: np.mean(
        -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))
    ),
    example=Example(shapes=((4,), (4,)), out_shape=(), domain=(0.0, 1.0)),
)
def bce(ctx: Ctx, p: Interval, t: Interval, *_rest: Interval | None) -> Interval:
    ctx.flag(
        "NT106",
        f"binary_cross_entropy takes probabilities (range {p.describe()}); torch clamps its "
        "log at -100, so saturated inputs give a flat, wrong gradient",
        nonfinite=False,
        input_lo=p.lo,
        input_hi=p.hi,
    )
    return Interval(0.0, 100.0 * max(1.0, t.magnitude))


@transfer(
    "regression_loss",
    ref=lambda a, b: np.mean((a - b) ** 2),
    example=Example(shapes=((4,), (4,)), out_shape=()),
)
def regression_loss(ctx: Ctx, a: Interval, b: Interval, *_rest: Interval | None) -> Interval:
    """Squared error bounds the others (|d| <= d**2 for |d| >= 1; smooth-L1/Huber <= both)."""
    d = max(abs(a.hi - b.lo), abs(b.hi - a.lo))
    return Interval(0.0, max(d, d * d))


@transfer(
    "argmax", ref=lambda x, dim=-1: np.argmax(x, axis=dim).astype(float), exact=True, example=RED
)
def argmax(ctx: Ctx, x: Interval, *_rest: Interval | None) -> Interval:
    n = ctx.numel(0)
    return Interval(0.0, float(n - 1) if n else math.inf)


@transfer("l2_loss", ref=lambda x: np.array((x * x).sum() / 2), example=Example(out_shape=()))
def l2_loss(ctx: Ctx, x: Interval) -> Interval:
    k = ctx.numel(0) or 1
    least = 0.0 if 0 in x else min(x.lo * x.lo, x.hi * x.hi)
    out = Interval(k * least / 2, k * x.magnitude**2 / 2)
    return widen(out, slack(ctx, k, out.hi))
