"""NT112 sqrt-of-negative: sqrt(E[x^2] - E[x]^2), sqrt(1 - x**2), rsqrt of 0."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from nantrap.lint._describe import snippet, what
from nantrap.lint._rule import Example, Hit, OpCall, Rule

_SQUARES = ("square", "sqsum", "var")


class SqrtOfNegative(Rule):
    """What it does:
        Finds ``sqrt`` of a difference whose subtrahend is a square (a variance written
        as ``E[x^2] - E[x]^2``, ``sqrt(1 - x**2)``), and ``rsqrt`` of a value that can be
        exactly 0 (a variance, a sum of squares).

    Why is this bad?
        Rounding makes E[x^2] - E[x]^2 slightly negative for near-constant x (-1e-8 is
        common in float32) and 1 - cos**2 negative for |cos| = 1.0000001: sqrt gives NaN.
        rsqrt(0) = inf.

    Example:
        ``std = torch.sqrt((x ** 2).mean() - x.mean() ** 2)``

    Use instead:
        ``x.std()`` / ``tf.math.reduce_std``, or ``sqrt(clamp_min(d, 0) + eps)``;
        ``rsqrt(var + eps)``.

    Fix safety:
        No automatic fix.
    """

    CODE = "NT112"
    OPS = ("sqrt", "rsqrt")
    VALID = (
        "import torch\ns = torch.sqrt(torch.clamp(m2 - m ** 2, min=0) + 1e-8)\n",
        "import torch\ns = torch.rsqrt(x.var(0) + 1e-5)\n",
    )
    INVALID = (
        Example("import torch\ns = torch.sqrt((x ** 2).mean() - x.mean() ** 2)\n", ((2, 5),)),
        Example("import numpy as np\ns = np.sqrt(1 - c ** 2)\n", ((2, 5),)),
        Example("import tensorflow as tf\nr = tf.rsqrt(tf.reduce_sum(tf.square(x)))\n", ((2, 5),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0, "input")
        if node is None or call.in_guard or call.tested(node) or v.guarded:
            return
        if call.op == "rsqrt":
            if v.may_be_zero:
                yield call.hit(
                    f"rsqrt of {what(call, node, v, v.zero_reason)}: it can be exactly 0 and "
                    "rsqrt(0) = inf",
                    fix="rsqrt(x + eps) with an eps the dtype keeps",
                )
            return
        if v.kind == "const" and v.lo < 0:
            yield call.hit(f"sqrt of the negative constant {v.lo:g} is NaN")
            return
        if not isinstance(node, ast.BinOp) or not isinstance(node.op, ast.Sub):
            return
        right = call.value_of(node.right)
        if right.kind not in _SQUARES:
            return
        yield call.hit(
            f"sqrt of {snippet(call, node)}, a difference minus a square: rounding makes it "
            "slightly negative (-1e-8 for near-constant data, |x| = 1.0000001 for a cosine), "
            "and sqrt of a negative number is NaN",
            fix="use the library's std/var, or sqrt(clamp_min(d, 0) + eps)",
        )
