"""Checks shared by the transfer functions: leaving an op's domain, gradient poles."""

from __future__ import annotations

from nantrap.analyze.interval import Interval
from nantrap.analyze.transfer import Ctx
from nantrap.ops import get_op


def check_domain(ctx: Ctx, name: str, x: Interval, arg: int = 0) -> Interval | None:
    """Flag ``name``'s trap if ``x`` leaves its domain; return the part of x inside it.

    The returned part keeps the closed boundary (log at exactly 0 is -inf, still reported),
    so the image stays sound for every input that does not give NaN.
    """
    op = get_op(name)
    dom = op.domain
    lo_ok = x.lo > dom.lo or (x.lo == dom.lo and not dom.lo_open)
    hi_ok = x.hi < dom.hi or (x.hi == dom.hi and not dom.hi_open)
    zero_ok = not (dom.nonzero and x.lo <= 0 <= x.hi)
    if not (lo_ok and hi_ok and zero_ok):
        ctx.flag(
            op.trap or "NT103",
            f"{name} needs {dom.describe()}; its input can be {_outside(x, dom)} "
            f"(input range {x.describe()})",
            arg=arg,
            input_lo=x.lo,
            input_hi=x.hi,
            domain=dom.describe(),
        )
    return x & Interval(dom.lo, dom.hi)


def grad_pole(ctx: Ctx, name: str, x: Interval, at: float, arg: int = 0) -> None:
    """Flag an infinite/undefined gradient of ``name`` where ``x`` reaches ``at``."""
    if at in x:
        op = get_op(name)
        ctx.flag(
            "NT111" if name in ("sqrt", "norm", "std", "pow") else (op.trap or "NT111"),
            f"{name}'s gradient is not finite at {at:g} ({op.grad_hazard}); "
            f"its input reaches {at:g} (input range {x.describe()})",
            arg=arg,
            grad=True,
            nonfinite=False,
            input_lo=x.lo,
            input_hi=x.hi,
        )


def _outside(x: Interval, dom) -> str:
    if dom.nonzero and x.lo <= 0 <= x.hi:
        return "0"
    if x.lo < dom.lo or (dom.lo_open and x.lo == dom.lo):
        return f"{'<=' if dom.lo_open else '<'} {dom.lo:g}"
    return f"{'>=' if dom.hi_open else '>'} {dom.hi:g}"
