"""NT115 fractional-pow-of-negative: x ** 0.5 / x ** (1/3) of a value that can be < 0."""

from __future__ import annotations

from collections.abc import Iterator

from nantrap.lint._describe import num, snippet
from nantrap.lint._rule import Example, Hit, OpCall, Rule

_NEGATIVE = {
    "diff": "a difference",
    "linear": "a matmul/linear output",
    "tanh": "a tanh output",
    "cos": "a cosine",
}


class FractionalPowOfNegative(Rule):
    """What it does:
        Finds ``x ** p`` / ``pow(x, p)`` with a non-integer constant ``p`` where ``x`` is
        a difference, a linear output, a tanh or a negative constant.

    Why is this bad?
        A real float has no fractional power of a negative number: (-8) ** (1/3) is NaN
        in torch, TensorFlow and NumPy.

    Example:
        ``torch.pow(a - b, 1.5)``

    Use instead:
        ``torch.sign(d) * d.abs() ** p``, or clamp the base to >= 0 if that is the intent.

    Fix safety:
        No automatic fix.
    """

    CODE = "NT115"
    OPS = ("pow",)
    VALID = (
        "import torch\ny = torch.pow((a - b).abs(), 1.5)\n",
        "import torch\ny = (a - b) ** 2\n",
    )
    INVALID = (
        Example("import torch\ny = torch.pow(a - b, 1.5)\n", ((2, 5),)),
        Example("import numpy as np\ny = (x @ w) ** 0.5\n", ((2, 5),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0, "input")
        _, p = call.operand(1, "exponent")
        if node is None or p.kind != "const" or p.lo == int(p.lo):
            return
        if call.in_guard or v.guarded or v.lo >= 0 or call.fw is None:
            return  # plain Python numbers: ** raises or goes complex, no silent NaN
        if v.kind == "const" and v.lo < 0:
            yield call.hit(f"{num(v.lo)} ** {num(p.lo)}: a fractional power of a negative is NaN")
            return
        if v.kind not in _NEGATIVE:
            return
        yield call.hit(
            f"{snippet(call, node)} ** {num(p.lo)}: the base is {_NEGATIVE[v.kind]} and can be "
            "negative, and a fractional power of a negative number is NaN",
            fix="sign(x) * abs(x) ** p, or clamp the base to >= 0",
        )
