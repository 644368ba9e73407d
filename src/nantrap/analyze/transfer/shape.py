"""Ops that move, select or create values: their ranges follow from their inputs' hulls."""

from __future__ import annotations

import numpy as np

from nantrap.analyze.interval import Interval
from nantrap.analyze.transfer import Ctx, Example, transfer


@transfer("reshape", ref=lambda x: x.reshape(2, -1).T, exact=True)
def reshape(ctx: Ctx, x: Interval, *_rest: Interval | None) -> Interval:
    return x


@transfer(
    "cat",
    ref=lambda a, b: np.concatenate([a, b]),
    exact=True,
    example=Example(shapes=((4,), (3,))),
)
def cat(ctx: Ctx, *xs: Interval | None) -> Interval:
    parts = [x for x in xs if x is not None]
    out = parts[0]
    for x in parts[1:]:
        out = out | x
    return out


@transfer("max_pool", ref=lambda x: x.reshape(-1, 2).max(axis=1), exact=True)
def max_pool(ctx: Ctx, x: Interval) -> Interval:
    return x


@transfer("triangle", ref=lambda x: np.triu(x), exact=True, example=Example(shapes=((3, 3),)))
def triangle(ctx: Ctx, x: Interval) -> Interval:
    return x | Interval.point(0.0)


@transfer(
    "full",
    ref=lambda value=2.5: np.full((3,), value),
    exact=True,
    example=Example(shapes=(), attrs={"value": 2.5}),
)
def full(ctx: Ctx, *args: Interval | None) -> Interval:
    """zeros/ones/full/arange; the frontend puts the fill value or range into attrs."""
    if ctx.attr("value") is not None:
        return Interval.point(float(ctx.attr("value")))
    if ctx.attr("end") is not None:
        start, end = float(ctx.attr("start", 0)), float(ctx.attr("end"))
        return Interval(min(start, end), max(start, end))
    given = [a for a in args if a is not None]
    return given[-1] if given else Interval.unknown()


@transfer(
    "random",
    ref=lambda _op="TruncatedNormal": np.random.default_rng(0).uniform(-2.0, 2.0, 8),
    exact=True,
    example=Example(shapes=(), attrs={"_op": "TruncatedNormal"}),
)
def random(ctx: Ctx, *args: Interval | None) -> Interval:
    """Truncated normal: [-2, 2]; uniform: [0, 1); normal: a 6-sigma bound (exceeded with
    probability 2e-9 per draw, stated as an assumption)."""
    kind = str(ctx.attr("_op", ""))
    if "Truncated" in kind:
        return Interval(-2.0, 2.0)
    if "Uniform" in kind or ("rand" in kind and "randn" not in kind):
        lo, hi = ctx.attr("low", ctx.attr("minval", 0.0)), ctx.attr("high", ctx.attr("maxval", 1.0))
        return Interval(float(lo), float(hi))
    return Interval(-6.0, 6.0)


@transfer(
    "one_hot",
    ref=lambda ids, depth, on, off: np.where(np.arange(3)[None, :] == 0, on, off),
    exact=True,
    example=Example(shapes=((4,), (), (), ()), consts=(1, 2, 3)),
)
def one_hot(ctx: Ctx, ids: Interval, *rest: Interval | None) -> Interval:
    """TF/ONNX pass on/off values (inputs 2 and 3); torch's one_hot is 0/1."""
    values = [v for v in rest[1:] if v is not None]
    if not values:
        return Interval(0.0, 1.0)
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out
