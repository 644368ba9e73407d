"""NT110 division-by-possible-zero: x / s where s is a sum, norm, std, count or range."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from nantrap.lint._describe import what
from nantrap.lint._rule import Example, Hit, OpCall, Rule

_WHEN = {
    "count": "nothing is counted",
    "masksum": "the mask is empty (e.g. a batch with no valid element)",
    "maskmean": "the mask is empty",
    "norm": "the vector is all zeros",
    "std": "all values are equal (or there is one sample)",
    "var": "all values are equal",
    "sqsum": "all entries are 0",
    "nonnegsum": "all entries are 0",
    "range": "all values are equal (max == min)",
}


_SELF = ("norm", "sqsum", "nonnegsum", "std")


def _normalizes(numerator: ast.AST, divisor: ast.AST, v) -> bool:
    """``x / x.norm()``, ``x / norm_fn(x)``, ``p / p.sum()``: x divided by its own size."""
    key = ast.unparse(numerator)
    candidates = [v.inner]
    if isinstance(divisor, ast.Call):
        candidates += divisor.args[:1]
        if isinstance(divisor.func, ast.Attribute):
            candidates.append(divisor.func.value)
    for c in candidates:
        while isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and not c.args:
            c = c.func.value  # x.abs().sum(): look through .abs() / .float()
        if c is not None and ast.unparse(c) == key:
            return True
    return False


class DivisionByPossibleZero(Rule):
    """What it does:
        Finds a division by a value that can be exactly 0 - a norm, a standard deviation,
        a count or sum of a mask, a sum of squares, ``max - min`` - with no guard: no eps,
        no clamp, no ``where``, no ``if`` that tests it.

    Why is this bad?
        x / 0 = inf and 0 / 0 = NaN; the gradient -x / s**2 is inf. Constant features,
        all-zero vectors and empty masks happen in real data.

    Example:
        ``x = (x - x.mean()) / x.std()``

    Use instead:
        ``x / (s + eps)``, ``x / s.clamp_min(eps)``, ``F.normalize(x, dim=...)``,
        ``tf.math.divide_no_nan``.

    Fix safety:
        No automatic fix: an eps changes the value.
    """

    CODE = "NT110"
    OPS = ("div", "reciprocal")
    VALID = (
        "import torch\ny = x / (x.norm() + 1e-8)\n",
        "import torch\ns = m.sum()\nif s > 0:\n    y = x / s\n",
        "import torch\ny = torch.where(n > 0, x / n, x)\n",
        "y = total / count\n",
        "import torch\nu = v / v.norm(dim=-1, keepdim=True)\n",
    )
    INVALID = (
        Example("import torch\ny = (x - x.mean()) / x.std()\n", ((2, 5),)),
        Example(
            "import tensorflow as tf\nn = tf.norm(a, axis=1) * tf.norm(b, axis=1)\n"
            "c = tf.reduce_sum(a * b, 1) / n\n",
            ((3, 5),),
        ),
        Example("import torch\nloss = (l * m).sum() / (t > 0).sum()\n", ((2, 8),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0) if call.op == "reciprocal" else call.operand(1)
        if node is None or v.kind not in _WHEN or not v.may_be_zero:
            return
        if call.in_guard or call.tested(node):
            return
        numerator = call.operands[0] if call.op == "div" else None
        if v.kind in _SELF and numerator is not None and _normalizes(numerator, node, v):
            return  # x / x.norm(): zero only for an all-zero x, which normalizing code rules out
        yield call.hit(
            f"division by {what(call, node, v, v.zero_reason)}: it is 0 when "
            f"{_WHEN[v.kind]}; x / 0 = inf, 0 / 0 = NaN",
            fix="guard the divisor: x / (s + eps), s.clamp_min(eps), or divide_no_nan",
            evidence={"kind": v.kind},
        )
