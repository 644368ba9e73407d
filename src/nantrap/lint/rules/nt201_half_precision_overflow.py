"""NT201 half-precision-overflow: exp / square / pow of a float16 value."""

from __future__ import annotations

from collections.abc import Iterator

from nantrap.lint._describe import F16, num, snippet
from nantrap.lint._rule import Example, Hit, OpCall, Rule

_LIMIT = {
    "exp": f"exp overflows float16 (max {num(F16.max)}) above {num(F16.exp_overflow)}",
    "expm1": f"expm1 overflows float16 above {num(F16.exp_overflow)}",
    "cosh": f"cosh overflows float16 above |x| = {num(F16.exp_overflow + 0.69)}",
    "sinh": f"sinh overflows float16 above |x| = {num(F16.exp_overflow + 0.69)}",
    "square": "x**2 overflows float16 (max 65504) above |x| = 255.9",
    "pow": "a power overflows float16 (max 65504) quickly: x**2 above |x| = 255.9",
}


class HalfPrecisionOverflow(Rule):
    """What it does:
        Finds ``exp``, ``cosh``, ``sinh``, squares and powers applied to a value cast to
        float16 / bfloat16 (``.half()``, ``.to(torch.float16)``, ``tf.cast(x, tf.float16)``).

    Why is this bad?
        float16's max is 65504: exp overflows above 11.09 and x**2 above 255.9, giving inf
        and then NaN. (autocast keeps these ops in float32; an explicit cast does not.)

    Example:
        ``torch.exp(x.half())``

    Use instead:
        Do the op in float32 (``x.float().exp()``, autocast), or shift / scale first.

    Fix safety:
        No automatic fix.
    """

    CODE = "NT201"
    OPS = ("exp", "expm1", "cosh", "sinh", "square", "pow")
    SUPERSEDES = ("NT113",)
    VALID = (
        "import torch\ny = torch.exp(x.half().float())\n",
        "import torch\nh = x.half()\ny = torch.exp(h - h.max())\n",
    )
    INVALID = (
        Example("import torch\nh = x.half()\ny = torch.exp(h)\n", ((3, 5),)),
        Example(
            "import tensorflow as tf\nh = tf.cast(x, tf.float16)\ns = tf.square(h)\n",
            ((3, 5),),
        ),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0, "input")
        if node is None or not v.half or v.shifted or v.guarded or call.in_guard:
            return
        if v.hi <= 1.0 or v.kind in ("logprob", "softmax", "sigmoid", "tanh", "unit", "cos"):
            return
        if call.op == "pow":
            _, p = call.operand(1, "exponent")
            if p.kind != "const" or p.lo <= 1:
                return
        yield call.hit(
            f"{call.op} of {snippet(call, node)}, a float16 value: {_LIMIT[call.op]}",
            fix="compute it in float32 (x.float(), autocast), or shift/scale the input first",
        )
