"""Closed real intervals and the combinators that carry their maths.

An :class:`Interval` is ``[lo, hi]`` over the extended reals (bounds may be ±inf, never
NaN). Transfer functions are one-liners over the combinators: ``exp`` is
``increasing(x, math.exp)``, ``abs`` is ``convex(x, abs, at=0.0)``, ``add`` is
``coordinatewise_increasing(a, b, operator.add)``.

>>> increasing(Interval(0.0, 1.0), math.exp)
Interval(lo=1.0, hi=2.718281828459045)
>>> 0.5 in Interval(0.0, 1.0)
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from nantrap.floats import FloatFormat

__all__ = [
    "Interval",
    "convex",
    "coordinatewise_increasing",
    "coordinatewise_monotone",
    "decreasing",
    "increasing",
    "mul",
    "round_out",
]

INF = math.inf


@dataclass(frozen=True)
class Interval:
    """``[lo, hi]`` with ``lo <= hi``; NaN bounds are refused (NaN is a hazard, not a value)."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        lo, hi = float(self.lo), float(self.hi)
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"interval bound is NaN: [{lo}, {hi}]")
        if lo > hi:
            raise ValueError(f"invalid interval [{lo}, {hi}]: lo > hi")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @classmethod
    def unknown(cls) -> Interval:
        """The top element: any value at all."""
        return cls(-INF, INF)

    @classmethod
    def point(cls, x: float) -> Interval:
        return cls(x, x)

    @classmethod
    def hull(cls, values) -> Interval:
        """The smallest interval holding every value of an iterable or array (NaN ignored)."""
        import numpy as np

        arr = np.asarray(values)
        if arr.dtype.kind not in "fiub":
            arr = arr.astype(np.float64)
        if arr.size == 0 or (arr.dtype.kind == "f" and np.isnan(arr).all()):
            return cls.unknown()
        lo, hi = float(arr.min()), float(arr.max())
        if math.isnan(lo) or math.isnan(hi):
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        return cls(lo, hi)

    def __contains__(self, x: object) -> bool:
        if isinstance(x, Interval):
            return self.lo <= x.lo and x.hi <= self.hi
        return self.lo <= float(x) <= self.hi  # type: ignore[arg-type]

    def __and__(self, other: Interval) -> Interval | None:
        """Intersection, or None when empty."""
        lo, hi = max(self.lo, other.lo), min(self.hi, other.hi)
        return Interval(lo, hi) if lo <= hi else None

    def __or__(self, other: Interval) -> Interval:
        """Union hull."""
        return Interval(min(self.lo, other.lo), max(self.hi, other.hi))

    def __neg__(self) -> Interval:
        return Interval(-self.hi, -self.lo)

    @property
    def is_finite(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def is_point(self) -> bool:
        return self.lo == self.hi

    @property
    def width(self) -> float:
        return self.hi - self.lo

    @property
    def magnitude(self) -> float:
        """``max |x|`` over the interval."""
        return max(abs(self.lo), abs(self.hi))

    def clamp(self, lo: float = -INF, hi: float = INF) -> Interval:
        """The interval of ``clip(x, lo, hi)``."""
        return Interval(min(max(self.lo, lo), hi), max(min(self.hi, hi), lo))

    def describe(self, digits: int = 4) -> str:
        return f"[{_g(self.lo, digits)}, {_g(self.hi, digits)}]"

    def to_list(self) -> list[float]:
        return [self.lo, self.hi]


def _g(x: float, digits: int) -> str:
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


# --- combinators ---------------------------------------------------------------------------


def _call(f: Callable[..., float], *args: float) -> float:
    """``f(*args)`` over the extended reals: overflow gives ±inf, a NaN is a caller bug."""
    try:
        y = f(*args)
    except OverflowError:
        y = INF
    return float(y)


def increasing(x: Interval, f: Callable[[float], float]) -> Interval:
    """Image of ``x`` under a non-decreasing ``f``."""
    return Interval(_call(f, x.lo), _call(f, x.hi))


def decreasing(x: Interval, f: Callable[[float], float]) -> Interval:
    """Image of ``x`` under a non-increasing ``f``."""
    return Interval(_call(f, x.hi), _call(f, x.lo))


def convex(x: Interval, f: Callable[[float], float], at: float) -> Interval:
    """Image under ``f`` decreasing up to ``at`` and increasing after it (|x|, x**2, gelu)."""
    ends = (_call(f, x.lo), _call(f, x.hi))
    lo = _call(f, at) if x.lo <= at <= x.hi else min(ends)
    return Interval(lo, max(ends))


def mul(a: float, b: float) -> float:
    """Product for interval ends: ``0 * inf`` is 0 (the bound of a set, not a limit)."""
    if a == 0 or b == 0:
        return 0.0
    return a * b


def coordinatewise_increasing(a: Interval, b: Interval, f: Callable[[float, float], float]):
    """Image under ``f`` non-decreasing in each argument (``add``)."""
    return Interval(_call(f, a.lo, b.lo), _call(f, a.hi, b.hi))


def coordinatewise_monotone(
    a: Interval, b: Interval, f: Callable[[float, float], float]
) -> Interval:
    """Image under ``f`` monotone in each argument separately: the hull of the four corners."""
    corners = [_call(f, x, y) for x, y in itertools.product((a.lo, a.hi), (b.lo, b.hi))]
    corners = [c for c in corners if not math.isnan(c)]
    return Interval(min(corners), max(corners)) if corners else Interval.unknown()


# --- float formats -------------------------------------------------------------------------


def ulp(x: float, fmt: FloatFormat) -> float:
    """Spacing of ``fmt``'s grid at ``|x|`` (the subnormal spacing near 0)."""
    ax = abs(x)
    if ax < fmt.tiny:
        return fmt.smallest_subnormal
    return 2.0 ** (math.floor(math.log2(ax)) - fmt.mantissa_bits)


def _round(x: float, fmt: FloatFormat, up: bool, ulps: int) -> float:
    if math.isinf(x) or x == 0:  # an exact 0 stays 0: kernels keep the sign of x*x, relu...
        return x
    step = ulp(x, fmt)
    q = x / step
    y = (math.ceil(q) if up else math.floor(q)) * step
    for _ in range(ulps):
        if math.isinf(y):
            break
        y = y + ulp(y if up else y - fmt.smallest_subnormal, fmt) * (1 if up else -1)
    if abs(x) >= fmt.max + ulp(fmt.max, fmt) / 2:  # rounds past max (round-to-nearest)
        return INF if x > 0 else -INF
    # NB: the kernel's last-place error is not allowed to carry a representable result
    # past max (that would flag every op whose range touches max as an overflow)
    return min(max(y, -fmt.max), fmt.max)


def round_out(x: Interval, fmt: FloatFormat | None, ulps: int = 0) -> Interval:
    """Widen ``x`` to ``fmt``'s grid, plus ``ulps`` units for the kernel's rounding error.

    Exact bounds past ``fmt.max`` become ±inf (the value overflows); a bound that rounds to
    0 or 1 is kept exactly there, which is how saturation shows up (sigmoid's upper bound
    of ``1 - 2e-9`` becomes ``1.0`` in float32).
    """
    if fmt is None:
        return x
    return Interval(_round(x.lo, fmt, False, ulps), _round(x.hi, fmt, True, ulps))
