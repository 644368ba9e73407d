"""The transfer table: one decorated function per neutral op, with its numpy reference.

``@transfer("exp", ref=np.exp)`` registers ``exp``'s interval transfer under the op's name in
``nantrap.ops`` (a name missing from the op table, or registered twice, is refused). A
transfer takes a :class:`Ctx` and one :class:`Interval` per tensor input and returns the
output interval in exact arithmetic; it reports what can go wrong with ``ctx.flag(...)``.
:func:`apply` then rounds the result out to the dtype's grid (so saturation to exactly 0 or
1 and overflow to inf show up), clips it to the op's natural range and adds the generic
overflow hazard. The soundness test walks this table and checks every entry against its
``ref`` (a float64 numpy implementation with the same signature).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from nantrap.analyze.interval import Interval, round_out
from nantrap.findings import Severity
from nantrap.floats import FloatFormat
from nantrap.ops import get_op

__all__ = ["TRANSFER", "Ctx", "Example", "Hazard", "Transfer", "apply", "get_transfer", "transfer"]

_TABLE: dict[str, Transfer] = {}
TRANSFER: Mapping[str, Transfer] = MappingProxyType(_TABLE)
_FAMILIES = (
    "elementwise",
    "arithmetic",
    "activations",
    "reductions",
    "linear",
    "normalization",
    "shape",
    "recurrent",
)


@dataclass(frozen=True)
class Hazard:
    """Something an op can do to its value: NaN/Inf (``nonfinite``), saturate, lose an eps."""

    code: str  # the trap catalog code
    message: str  # with numbers
    arg: int = 0  # which input is at fault
    grad: bool = False  # a backward hazard: the forward value is fine, its gradient is not
    nonfinite: bool = True  # the forward result can be NaN or +-inf
    severity: Severity | None = None  # None: the trap's severity
    evidence: Mapping[str, Any] = field(default_factory=dict)
    fix: str | None = None  # the fix in user terms, when the op knows it best


@dataclass(frozen=True)
class Example:
    """How the soundness test builds inputs: shapes, attrs, and which inputs are constants."""

    shapes: tuple[tuple[int, ...], ...] = ((4,),)
    attrs: Mapping[str, Any] = field(default_factory=dict)
    consts: tuple[int, ...] = ()  # inputs drawn as known arrays (weights, clip bounds)
    out_shape: tuple[int, ...] | None = None  # default: the ref's result shape
    domain: tuple[float, float] | None = None  # draw inputs only here (argument ranges)


@dataclass(frozen=True)
class Transfer:
    name: str
    fn: Callable[..., Interval | None]
    ref: Callable[..., Any]
    exact: bool  # the op only selects/moves input values: no rounding error to add
    ulps: int  # rounding error of the kernel, in units of the format's last place
    example: Example


class Ctx:
    """What a transfer function may read about its node, and where it reports hazards."""

    def __init__(
        self,
        fmt: FloatFormat | None,
        *,
        attrs: Mapping[str, Any] | None = None,
        shapes: tuple[tuple[int, ...] | None, ...] = (),
        out_shape: tuple[int, ...] | None = None,
        consts: tuple[Any, ...] = (),
        facts: tuple[Mapping[str, Any], ...] = (),
    ) -> None:
        self.fmt = fmt
        self.attrs = dict(attrs or {})
        self.shapes = shapes
        self.out_shape = out_shape
        self.consts = consts
        self.facts = facts
        self.hazards: list[Hazard] = []
        self.out_facts: dict[str, Any] = {}

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name)
        return default if value is None else value

    def const(self, i: int):
        """The known value of input ``i`` (float64 unless it is large), or None."""
        if i < len(self.consts) and self.consts[i] is not None:
            import numpy as np

            value = np.asarray(self.consts[i])
            return value if value.size > 1 << 20 else value.astype(np.float64)
        return None

    def fact(self, i: int, name: str) -> Any:
        return self.facts[i].get(name) if i < len(self.facts) else None

    def shape(self, i: int) -> tuple[int, ...] | None:
        return self.shapes[i] if i < len(self.shapes) else None

    def numel(self, i: int) -> int | None:
        shape = self.shape(i)
        return None if shape is None else math.prod(shape)

    def reduced(self, i: int = 0) -> int | None:
        """How many input elements feed each output element of a reduction."""
        if i == 0 and self.attrs.get("count"):
            return int(self.attrs["count"])
        n, shape = self.numel(i), self.out_shape
        if n is None or shape is None:
            return None
        return max(1, n // max(1, math.prod(shape)))

    def dim_size(self, i: int, dim: int) -> int | None:
        shape = self.shape(i)
        if not shape:
            return None
        try:
            return shape[dim]
        except IndexError:
            return None

    def flag(
        self,
        code: str,
        message: str,
        *,
        arg: int = 0,
        grad: bool = False,
        nonfinite: bool = True,
        severity: Severity | None = None,
        fix: str | None = None,
        **evidence: Any,
    ) -> None:
        """Report a hazard of this op on input ``arg``."""
        self.hazards.append(Hazard(code, message, arg, grad, nonfinite, severity, evidence, fix))

    @property
    def fmt_name(self) -> str:
        return self.fmt.name if self.fmt else "this dtype"


def transfer(
    name: str,
    *,
    ref: Callable[..., Any],
    exact: bool = False,
    ulps: int = 2,
    example: Example | None = None,
):
    """Register the decorated function as ``name``'s interval transfer."""
    get_op(name)  # KeyError: not a neutral op

    def register(fn: Callable[..., Interval | None]) -> Callable[..., Interval | None]:
        if name in _TABLE:
            raise ValueError(f"transfer for {name!r} is registered twice")
        _TABLE[name] = Transfer(name, fn, ref, exact, 0 if exact else ulps, example or Example())
        return fn

    return register


def get_transfer(name: str) -> Transfer | None:
    load()
    return _TABLE.get(name)


def load() -> Mapping[str, Transfer]:
    """Import every family module once (fills the table)."""
    if not _TABLE:
        for family in _FAMILIES:
            importlib.import_module(f"{__name__}.{family}")
    return TRANSFER


def apply(name: str, ctx: Ctx, *args: Interval | None) -> Interval:
    """Run ``name``'s transfer in ``ctx``; round out to the dtype; add overflow hazards."""
    entry = get_transfer(name)
    if entry is None:
        raise KeyError(f"no transfer function for {name!r}")
    result = entry.fn(ctx, *args)
    if result is None:
        result = Interval.unknown()
    result = round_out(result, ctx.fmt, entry.ulps)
    op = get_op(name)
    lo, hi = op.output_range
    if ctx.fmt is not None and (lo > -math.inf or hi < math.inf):
        natural = round_out(Interval(lo, hi), ctx.fmt)
        result = (result & natural) or natural
    finite_in = all(a is None or a.is_finite for a in args)
    flagged = any(h.nonfinite and not h.grad for h in ctx.hazards)
    if ctx.fmt is not None and finite_in and not result.is_finite and not flagged:
        _overflow(ctx, op, result)
    return result


def _overflow(ctx: Ctx, op, result: Interval) -> None:
    from nantrap.traps import get_trap

    fmt = ctx.fmt
    code = op.trap if op.trap and get_trap(op.trap).category.value == "overflow" else "NT116"
    if fmt.bits == 16:
        code = "NT201"
    ctx.flag(
        code,
        f"{op.name} can exceed the {fmt.name} maximum {fmt.max:.5g} for these inputs "
        f"(exact result reaches {'+' if result.hi == math.inf else '-'}inf)",
        dtype_max=fmt.max,
    )
