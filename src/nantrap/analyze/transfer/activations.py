"""Activations, softmax and its stable relatives. Float-format aware where they saturate."""

from __future__ import annotations

import math

import numpy as np

from nantrap.analyze.interval import Interval, convex, increasing
from nantrap.analyze.transfer import Ctx, Example, transfer

INF = math.inf


def _sigmoid(v: float) -> float:
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v) if v > -745 else 0.0
    return e / (1.0 + e)


def _ref_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


@transfer("sigmoid", ref=_ref_sigmoid)
def sigmoid(ctx: Ctx, x: Interval) -> Interval:
    y = increasing(x, _sigmoid)
    if ctx.fmt is not None and x.lo < ctx.fmt.sigmoid_zero:  # exp(-x) overflows: 1/inf = 0
        y = Interval(0.0, y.hi)
    return y


@transfer("tanh", ref=np.tanh)
def tanh(ctx: Ctx, x: Interval) -> Interval:
    return increasing(x, math.tanh)


def _logsigmoid(v: float) -> float:
    return -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))


@transfer("logsigmoid", ref=lambda x: -np.logaddexp(0, -x))
def logsigmoid(ctx: Ctx, x: Interval) -> Interval:
    return increasing(x, _logsigmoid)


def _softplus(v: float) -> float:
    return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))


@transfer("softplus", ref=lambda x: np.logaddexp(0, x))
def softplus(ctx: Ctx, x: Interval) -> Interval:
    beta = ctx.attr("beta", 1.0)
    return increasing(x, lambda v: _softplus(beta * v) / beta)


@transfer("relu", ref=lambda x: np.maximum(x, 0), exact=True)
def relu(ctx: Ctx, x: Interval) -> Interval:
    return increasing(x, lambda v: max(v, 0.0))


@transfer("leaky_relu", ref=lambda x, negative_slope=0.01: np.where(x > 0, x, negative_slope * x))
def leaky_relu(ctx: Ctx, x: Interval) -> Interval:
    s = ctx.attr("negative_slope", ctx.attr("alpha", 0.01))
    return increasing(x, lambda v: v if v > 0 else s * v)


@transfer("elu", ref=lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))))
def elu(ctx: Ctx, x: Interval) -> Interval:
    a = ctx.attr("alpha", 1.0)
    return increasing(x, lambda v: v if v > 0 else a * math.expm1(v))


_GELU_ARGMIN = -0.7517916  # where x * Phi(x) is smallest
_SILU_ARGMIN = -1.2784645  # where x * sigmoid(x) is smallest


def _gelu(v: float) -> float:
    return 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))


def _gelu_tanh(v: float) -> float:
    return 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))


@transfer("gelu", ref=lambda x: 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0))))
def gelu(ctx: Ctx, x: Interval) -> Interval:
    f = _gelu_tanh if ctx.attr("approximate", "none") == "tanh" else _gelu
    return convex(x, lambda v: f(v) if math.isfinite(v) else max(v, 0.0), at=_GELU_ARGMIN)


@transfer("silu", ref=lambda x: x * _ref_sigmoid(x))
def silu(ctx: Ctx, x: Interval) -> Interval:
    return convex(
        x, lambda v: v * _sigmoid(v) if math.isfinite(v) else max(v, 0.0), at=_SILU_ARGMIN
    )


def _softmax_ref(x, dim=-1):
    z = np.exp(x - x.max(axis=dim, keepdims=True))
    return z / z.sum(axis=dim, keepdims=True)


def _log_softmax_ref(x, dim=-1):
    m = x.max(axis=dim, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=dim, keepdims=True))


def _axis(ctx: Ctx) -> int:
    return ctx.attr("dim", -1)


@transfer("softmax", ref=_softmax_ref, example=Example(shapes=((3, 5),), attrs={"dim": -1}))
def softmax(ctx: Ctx, x: Interval) -> Interval:
    """exp(x_i - max) / sum: each output lies in [1/(1+(n-1)e^s), 1/(1+(n-1)e^-s)], s = spread.

    Rows sum to 1 (recorded as the ``simplex`` fact, which keeps ``softmax @ v`` in v's
    range); the lower bound rounds to exactly 0 once the spread passes the dtype's exp
    underflow, which is what makes ``log(softmax(x))`` fail.
    """
    n = ctx.dim_size(0, _axis(ctx))
    ctx.out_facts["simplex"] = True
    if n is None:
        return Interval(0.0, 1.0)
    if n == 1:
        return Interval.point(1.0)
    s = x.width
    lo = 0.0 if s == INF else 1.0 / (1.0 + (n - 1) * _exp(s))
    hi = 1.0 / (1.0 + (n - 1) * _exp(-s)) if s != INF else 1.0
    return Interval(lo, hi)


def _exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return INF


@transfer("log_softmax", ref=_log_softmax_ref, example=Example(shapes=((3, 5),), attrs={"dim": -1}))
def log_softmax(ctx: Ctx, x: Interval) -> Interval:
    n = ctx.dim_size(0, _axis(ctx)) or 2
    s = x.width
    return Interval(-(s + math.log(n)) if s != INF else -INF, 0.0)


def _hardsigmoid(v: float) -> float:
    return min(max(v + 3.0, 0.0), 6.0) / 6.0


@transfer("hardsigmoid", ref=lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0)
def hardsigmoid(ctx: Ctx, x: Interval) -> Interval:
    return increasing(x, _hardsigmoid)


@transfer("hardswish", ref=lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0)
def hardswish(ctx: Ctx, x: Interval) -> Interval:
    return convex(x, lambda v: v * _hardsigmoid(v) if math.isfinite(v) else max(v, 0.0), at=-1.5)
