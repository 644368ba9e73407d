"""Normalization layers: (x - mean) / sqrt(var + eps) is bounded by sqrt(n - 1).

For n values, |x_i - mean| <= sqrt(n - 1) * std (population std), and also
<= (max - min) / sqrt(eps); the affine weight and bias then scale and shift it per
element. The one hazard: an eps the dtype cannot hold (it rounds to 0, so a constant row
divides by zero).
"""

from __future__ import annotations

import math

import numpy as np

from nantrap.analyze.interval import Interval, coordinatewise_monotone, mul
from nantrap.analyze.transfer import Ctx, Example, transfer


def _eps_check(ctx: Ctx, eps: float) -> None:
    """Flag an eps the compute dtype cannot hold.

    NB: the fused kernels of torch, ONNX (``stash_type``) and Keras normalize half-precision
    inputs in float32, so only a float32 (or float64) eps that rounds to 0 is a hazard here;
    a hand-written ``var + eps`` in float16 shows up as a division by 0 instead.
    """
    fmt = ctx.fmt
    if fmt is not None and fmt.bits == 16:
        from nantrap.floats import FORMATS

        fmt = FORMATS["float32"]
    if fmt is not None and 0 < eps < fmt.smallest_subnormal / 2:
        ctx.flag(
            "NT202",
            f"eps={eps:g} rounds to 0 in {fmt.name} (smallest value {fmt.smallest_subnormal:.3g})"
            "; a constant row then divides by sqrt(0)",
            eps=eps,
            smallest=fmt.smallest_subnormal,
            fix=f"use eps >= {fmt.tiny:.3g} for {fmt.name}, or normalize in float32",
        )


def _bound(x: Interval, n: int, eps: float) -> float:
    m = math.sqrt(max(n - 1, 0))
    if eps > 0 and x.is_finite:
        m = min(m, x.width / math.sqrt(eps))
    return m


def _affine(ctx: Ctx, m: float, wi: int, bi: int, w: Interval | None, b: Interval | None):
    """Hull of ``w_j * z + b_j`` for z in [-m, m]."""
    wv, bv = ctx.const(wi), ctx.const(bi)
    if wv is not None and (bv is not None or b is None):
        wv = np.abs(wv).reshape(-1)
        bv = np.zeros_like(wv) if bv is None else np.broadcast_to(bv.reshape(-1), wv.shape)
        return Interval(float((bv - wv * m).min()), float((bv + wv * m).max()))
    z = Interval(-m, m)
    if w is not None:
        z = coordinatewise_monotone(z, w, mul)
    if b is not None:
        z = Interval(z.lo + b.lo, z.hi + b.hi)
    return z


def _ln_ref(x, w, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


@transfer(
    "layer_norm",
    ref=_ln_ref,
    ulps=8,
    example=Example(shapes=((2, 4), (4,), (4,)), attrs={"eps": 1e-5}, consts=(1, 2)),
)
def layer_norm(ctx: Ctx, x: Interval, w: Interval | None = None, b: Interval | None = None):
    eps = float(ctx.attr("eps", 1e-5))
    _eps_check(ctx, eps)
    shape = ctx.attr("normalized_shape")
    if shape is not None:
        n = math.prod(shape)
    else:
        axis = ctx.attr("axis", -1)
        n = math.prod((ctx.shape(0) or (1 << 30,))[axis:])
    return _affine(ctx, _bound(x, n, eps), 1, 2, w, b)


def _rms_ref(x, w, eps=1e-6):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


@transfer(
    "rms_norm",
    ref=_rms_ref,
    ulps=8,
    example=Example(shapes=((2, 4), (4,)), attrs={"eps": 1e-6}, consts=(1,)),
)
def rms_norm(ctx: Ctx, x: Interval, w: Interval | None = None):
    eps = float(ctx.attr("eps", 1e-6) or 1e-6)
    _eps_check(ctx, eps)
    shape = ctx.attr("normalized_shape")
    n = math.prod(shape) if shape else (ctx.dim_size(0, -1) or 1 << 30)
    m = math.sqrt(n)
    if eps > 0 and x.is_finite:
        m = min(m, x.magnitude / math.sqrt(eps))
    return _affine(ctx, m, 1, 2, w, None)


def _bn_ref(x, w, b, mean, var, eps=1e-5):
    return (x - mean) / np.sqrt(var + eps) * w + b


@transfer(
    "batch_norm",
    ref=_bn_ref,
    ulps=8,
    example=Example(
        shapes=((2, 3), (3,), (3,), (3,), (3,)),
        attrs={"eps": 1e-5},
        consts=(1, 2, 3, 4),
        domain=(0.0, 4.0),
    ),
)
def batch_norm(ctx: Ctx, x: Interval, w=None, b=None, mean=None, var=None):
    """Inference form with known running stats: a per-channel affine map; else batch stats."""
    eps = float(ctx.attr("eps", ctx.attr("epsilon", 1e-5)))
    _eps_check(ctx, eps)
    mv, vv = ctx.const(3), ctx.const(4)
    if not ctx.attr("training", False) and mv is not None and vv is not None:
        scale = 1.0 / np.sqrt(vv + eps)
        wv, bv = ctx.const(1), ctx.const(2)
        a = scale * (wv if wv is not None else 1.0)
        shift = (bv if bv is not None else 0.0) - a * mv
        lo = np.minimum(a * x.lo, a * x.hi) + shift if x.is_finite else None
        hi = np.maximum(a * x.lo, a * x.hi) + shift if x.is_finite else None
        if lo is not None:
            return Interval(float(lo.min()), float(hi.max()))
        return Interval.unknown()
    shape = ctx.shape(0)
    n = math.prod(shape) // shape[1] if shape and len(shape) > 1 else 1 << 30
    return _affine(ctx, _bound(x, n, eps), 1, 2, w, b)


@transfer(
    "group_norm",
    ref=lambda x, w, b, eps=1e-5: _ln_ref(x, w, b, eps),
    ulps=8,
    example=Example(
        shapes=((2, 4), (4,), (4,)), attrs={"eps": 1e-5, "num_groups": 1}, consts=(1, 2)
    ),
)
def group_norm(ctx: Ctx, x: Interval, w=None, b=None):
    eps = float(ctx.attr("eps", ctx.attr("epsilon", 1e-5)))
    _eps_check(ctx, eps)
    shape = ctx.shape(0)
    groups = int(ctx.attr("num_groups", shape[1] if shape and len(shape) > 1 else 1))
    n = math.prod(shape[1:]) // groups if shape and len(shape) > 1 else 1 << 30
    return _affine(ctx, _bound(x, n, eps), 1, 2, w, b)
