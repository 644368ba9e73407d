"""Matmul, linear, convolution, embedding, attention: exact per-row bounds with known weights.

With a known weight row ``w`` and every input element in ``[l, u]``, ``w . x`` lies in
``[l * sum(w+) + u * sum(w-), u * sum(w+) + l * sum(w-)]``; the output range is the hull
over rows. Unknown weights fall back to ``k`` times the range of one product.
"""

from __future__ import annotations

import math

import numpy as np

from nantrap.analyze.interval import Interval, coordinatewise_monotone, mul
from nantrap.analyze.transfer import Ctx, Example, transfer
from nantrap.analyze.transfer.reductions import slack, widen

INF = math.inf


def _scale(a: np.ndarray, v: float) -> np.ndarray:
    """``a * v`` with ``0 * inf = 0`` (bounds of a set, not limits)."""
    if math.isinf(v):
        return np.where(a == 0, 0.0, a * v)
    return a * v


def rows_bound(x: Interval, pos: np.ndarray, neg: np.ndarray, bias=None) -> Interval:
    """Hull over rows of ``w . x + b`` given per-row sums of the positive/negative weights."""
    with np.errstate(invalid="ignore"):
        lo = _scale(pos, x.lo) + _scale(neg, x.hi)
        hi = _scale(pos, x.hi) + _scale(neg, x.lo)
        if bias is not None:
            lo, hi = lo + bias, hi + bias
    lo = np.nan_to_num(lo, nan=-INF, posinf=INF, neginf=-INF)
    hi = np.nan_to_num(hi, nan=INF, posinf=INF, neginf=-INF)
    return Interval(float(lo.min()), float(hi.max()))


def _affine(ctx: Ctx, x: Interval, w: np.ndarray, axis: int, bias=None) -> Interval:
    """Rows are reduced along ``axis`` of the known weight ``w``."""
    total = w.sum(axis=axis, dtype=np.float64)
    size = np.abs(w).sum(axis=axis, dtype=np.float64)
    # sum(w+), sum(w-) in two passes; the float64 sums' own error (which can swallow a tiny
    # negative weight next to large positive ones) is paid for by a relative 1e-13
    err = size * 1e-13
    pos, neg = (size + total) / 2 + err, (total - size) / 2 - err
    b = None if bias is None else _bias_for(bias, pos)
    out = rows_bound(x, pos, neg, b)
    k = w.shape[axis] if w.ndim else 1
    return widen(out, slack(ctx, k, float((pos - neg).max()) * x.magnitude))


def _bias_for(bias: np.ndarray, pos: np.ndarray):
    try:
        return np.broadcast_to(bias, pos.shape)
    except ValueError:
        return None


def _generic(ctx: Ctx, a: Interval, b: Interval, k: int) -> Interval:
    one = coordinatewise_monotone(a, b, mul)
    out = Interval(mul(k, one.lo), mul(k, one.hi))
    return widen(out, slack(ctx, k, k * one.magnitude))


def _plus(x: Interval, bias: Interval | None, beta: float = 1.0) -> Interval:
    if bias is None:
        return x
    b = bias if beta == 1 else coordinatewise_monotone(bias, Interval.point(beta), mul)
    return Interval(x.lo + b.lo, x.hi + b.hi)


@transfer(
    "matmul",
    ref=lambda a, b: a @ b,
    example=Example(shapes=((2, 3), (3, 4)), consts=(1,)),
)
def matmul(ctx: Ctx, a: Interval, b: Interval, bias: Interval | None = None) -> Interval:
    """a @ b (+ bias); ``trans_a``/``trans_b``, ``alpha``/``beta`` as in ONNX Gemm."""
    ta, tb = bool(ctx.attr("trans_a", False)), bool(ctx.attr("trans_b", False))
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    wa, wb = ctx.const(0), ctx.const(1)
    sa = ctx.shape(0)
    k = (sa[-2] if ta else sa[-1]) if sa else None
    if ctx.fact(0, "simplex") and not ta and alpha == 1:
        out = b  # each row of a is a convex combination: a @ b stays in b's hull
    elif wb is not None and wb.ndim >= 1:
        out = _affine(ctx, a, wb, axis=-1 if tb else (-2 if wb.ndim >= 2 else 0))
    elif wa is not None and wa.ndim >= 1:
        out = _affine(ctx, b, wa, axis=-2 if ta else -1)
    else:
        out = _generic(ctx, a, b, k or _k_from_b(ctx, tb))
    if alpha != 1:
        out = coordinatewise_monotone(out, Interval.point(alpha), mul)
    return _plus(out, bias, beta)


def _k_from_b(ctx: Ctx, tb: bool) -> int:
    sb = ctx.shape(1)
    if not sb:
        return 1 << 30
    return sb[-1] if tb else (sb[-2] if len(sb) >= 2 else sb[0])


@transfer(
    "linear",
    ref=lambda x, w, b: x @ w.T + b,
    example=Example(shapes=((2, 3), (4, 3), (4,)), consts=(1, 2)),
)
def linear(ctx: Ctx, x: Interval, w: Interval, b: Interval | None = None) -> Interval:
    wv, bv = ctx.const(1), ctx.const(2)
    if wv is not None:
        return (
            _affine(ctx, x, wv, axis=-1, bias=bv)
            if bv is not None or b is None
            else _plus(_affine(ctx, x, wv, axis=-1), b)
        )
    k = (ctx.shape(1) or (None, 1 << 30))[-1]
    return _plus(_generic(ctx, x, w, k), b)


def _conv_ref(x, w, b):
    # 1-d valid convolution of one channel stack: x (1, C, L), w (O, C, K)
    out_len = x.shape[-1] - w.shape[-1] + 1
    cols = np.stack([x[0, :, i : i + w.shape[-1]] for i in range(out_len)], axis=-1)
    return np.einsum("ckl,ock->ol", cols, w) + b[:, None]


@transfer(
    "conv",
    ref=_conv_ref,
    example=Example(shapes=((1, 2, 5), (3, 2, 3), (3,)), consts=(1, 2)),
)
def conv(ctx: Ctx, x: Interval, w: Interval, b: Interval | None = None) -> Interval:
    if _padded(ctx):
        x = x | Interval.point(0.0)
    wv, bv = ctx.const(1), ctx.const(2)
    if wv is not None and ctx.attr("filter_layout") == "HWIO":  # TensorFlow: (*k, in, out)
        wv = np.moveaxis(wv, -1, 0)
    if wv is None:
        shape = ctx.shape(1)
        k = math.prod(shape[1:]) if shape else 1 << 30
        return _plus(_generic(ctx, x, w, k), b)
    flat = wv.reshape(wv.shape[0], -1) if not ctx.attr("transposed") else _transposed(wv)
    if ctx.attr("transposed"):  # each output sums a subset of the kernel's terms
        return _subset_sums(ctx, x, flat, bv)
    out = _affine(ctx, x, flat, axis=-1, bias=bv)
    return out if bv is not None or b is None else _plus(out, b)


def _conv_transpose_ref(x, w, b):
    # 1-d transposed convolution: x (1, Cin, L), w (Cin, Cout, K) -> (Cout, L + K - 1)
    _, cout, k = w.shape
    out = np.zeros((cout, x.shape[-1] + k - 1))
    for i in range(x.shape[-1]):
        out[:, i : i + k] += np.einsum("c,cok->ok", x[0, :, i], w)
    return out + b[:, None]


@transfer(
    "conv_transpose",
    ref=_conv_transpose_ref,
    example=Example(shapes=((1, 2, 5), (2, 3, 3), (3,)), consts=(1, 2)),
)
def conv_transpose(ctx: Ctx, x: Interval, w: Interval, b: Interval | None = None) -> Interval:
    """Bounded by the sums of the negative and of the positive kernel terms per channel."""
    wv, bv = ctx.const(1), ctx.const(2)
    if wv is None:
        shape = ctx.shape(1)
        k = math.prod(shape) if shape else 1 << 30
        return _plus(_generic(ctx, x | Interval.point(0.0), w, k), b)
    return _subset_sums(ctx, x, _transposed(wv), bv)


def _subset_sums(ctx: Ctx, x: Interval, flat: np.ndarray, bv) -> Interval:
    with np.errstate(invalid="ignore"):
        lo_t = np.minimum(_scale(flat, x.lo), _scale(flat, x.hi))
        hi_t = np.maximum(_scale(flat, x.lo), _scale(flat, x.hi))
    lo = np.minimum(lo_t, 0).sum(axis=1)
    hi = np.maximum(hi_t, 0).sum(axis=1)
    if bv is not None:
        lo, hi = lo + np.broadcast_to(bv, lo.shape), hi + np.broadcast_to(bv, hi.shape)
    out = Interval(
        float(np.nan_to_num(lo, nan=-INF).min()), float(np.nan_to_num(hi, nan=INF).max())
    )
    return widen(out, slack(ctx, flat.shape[1], float(np.abs(flat).sum(1).max()) * x.magnitude))


def _transposed(w: np.ndarray) -> np.ndarray:
    # ConvTranspose weights are (in, out/groups, *k): rows per output channel
    return np.moveaxis(w, 1, 0).reshape(w.shape[1], -1)


def _padded(ctx: Ctx) -> bool:
    pad = ctx.attr("padding", ctx.attr("pads", 0))
    if isinstance(pad, str):
        return pad.upper() not in ("VALID", "NOTSET")
    if isinstance(pad, (list, tuple)):
        return any(p for p in pad)
    return bool(pad)


@transfer(
    "embedding",
    ref=lambda w, ids: w[np.clip(np.abs(ids).astype(int), 0, len(w) - 1)],
    exact=True,
    example=Example(shapes=((5, 3), (4,)), consts=(0,)),
)
def embedding(ctx: Ctx, w: Interval, ids: Interval | None = None) -> Interval:
    return w


@transfer(
    "attention",
    ref=lambda q, k, v: _attention_ref(q, k, v),
    ulps=4,
    example=Example(shapes=((2, 3), (4, 3), (4, 3))),
)
def attention(ctx: Ctx, q: Interval, k: Interval, v: Interval, *_mask: Interval | None):
    """softmax(...) @ v is a convex combination of v's rows: it stays in v's range."""
    return widen(v, slack(ctx, ctx.dim_size(2, -2) or 1, v.magnitude))


def _attention_ref(q, k, v):
    s = q @ k.T / math.sqrt(q.shape[-1])
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def _depthwise_ref(x, w):
    # 1-d depthwise valid convolution, TF layout: x (1, L, C), w (K, C, M) -> (1, L', C * M)
    k, c, m = w.shape
    out_len = x.shape[1] - k + 1
    out = np.stack([np.einsum("kc,kcm->cm", x[0, i : i + k], w) for i in range(out_len)])
    return out.reshape(1, out_len, c * m)


@transfer(
    "depthwise_conv",
    ref=_depthwise_ref,
    example=Example(shapes=((1, 5, 2), (3, 2, 2)), consts=(1,)),
)
def depthwise_conv(ctx: Ctx, x: Interval, w: Interval, b: Interval | None = None) -> Interval:
    """Output channel (c, m) sums only channel c's window: rows are the filter's (c, m) columns.

    TensorFlow's filter is ``(*k, in, multiplier)``; torch and ONNX express the same layer as
    a grouped ``conv`` (``groups == in``), whose weight rows already are per output channel.
    """
    if _padded(ctx):
        x = x | Interval.point(0.0)
    wv = ctx.const(1)
    if wv is None:
        shape = ctx.shape(1)
        k = math.prod(shape[:-2]) if shape and len(shape) > 2 else 1 << 30
        return _plus(_generic(ctx, x, w, k), b)
    rows = wv.reshape(-1, wv.shape[-2] * wv.shape[-1]).T  # (in * multiplier, window)
    return _plus(_affine(ctx, x, rows, axis=-1), b)
