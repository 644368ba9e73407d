"""NT104 log-of-sigmoid: log(sigmoid(x)) and log(1 - sigmoid(x))."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from nantrap.lint._describe import F16, F32, call_operand, num, paren, what
from nantrap.lint._rule import Example, Hit, OpCall, Rule

_LOGSIGMOID = {
    "torch": ("torch.nn.functional", "logsigmoid"),
    "tf": ("tf.math", "log_sigmoid"),
    "keras": ("keras.ops", "log_sigmoid"),
    "jax": ("jax.nn", "log_sigmoid"),
}


class LogOfSigmoid(Rule):
    """What it does:
        Finds ``log(sigmoid(x))`` and ``log(1 - sigmoid(x))``, directly or through
        variables (``p = torch.sigmoid(z)`` ... ``torch.log(1 - p)``).

    Why is this bad?
        sigmoid returns exactly 1.0 in float32 for x > 16.64 (float16: 7.62) and exactly
        0.0 for x < -88.72, so log(1 - sigmoid(x)) and log(sigmoid(x)) reach log(0) = -inf.

    Example:
        ``torch.log(1 - torch.sigmoid(z))``

    Use instead:
        ``F.logsigmoid(-z)``; ``F.logsigmoid(z)`` for ``log(sigmoid(z))``; for a binary
        loss ``F.binary_cross_entropy_with_logits(z, y)``.

    Fix safety:
        Safe when the log wraps the sigmoid call itself: logsigmoid is the same function,
        computed stably.
    """

    CODE = "NT104"
    OPS = ("log", "log2", "log10")
    VALID = (
        "import torch.nn.functional as F\nl = F.logsigmoid(z)\n",
        "import torch\np = torch.sigmoid(z)\nq = torch.log(torch.sigmoid(z) + 1e-4)\n",
    )
    INVALID = (
        Example(
            "import torch\nimport torch.nn.functional as F\nl = torch.log(torch.sigmoid(z))\n",
            ((3, 5),),
            "import torch\nimport torch.nn.functional as F\nl = F.logsigmoid(z)\n",
        ),
        Example(
            "import tensorflow as tf\nl = tf.log(1 - tf.sigmoid(a + b))\n",
            ((2, 5),),
            "import tensorflow as tf\nl = tf.math.log_sigmoid(-(a + b))\n",
        ),
        Example("import torch\np = torch.sigmoid(z)\nl = (1 - p).log()\n", ((3, 5),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0, "input")
        if node is None or call.in_guard:
            return
        plain = v.kind == "sigmoid" and not v.guarded
        complement = v.kind == "one_minus" and v.base == "sigmoid" and not v.guarded
        if not (plain or complement):
            return
        end = "1.0" if complement else "0.0"
        at = f"x > {num(F32.sigmoid_one)}" if complement else f"x < {num(F32.sigmoid_zero)}"
        message = (
            f"{call.op} of {what(call, node, v, '1 - sigmoid' if complement else None)}: "
            f"sigmoid(x) is exactly {end} in float32 for {at} (float16 saturates at "
            f"|x| > {num(F16.sigmoid_one)}), and log(0) = -inf"
        )
        replacement = _rewrite(call, node, v, complement)
        yield call.hit(
            message,
            fix="use logsigmoid(-x)" if complement else "use logsigmoid(x)",
            replacement=replacement,
            safe=replacement is not None,
        )


def _rewrite(call: OpCall, node: ast.AST, v, complement: bool) -> str | None:
    if call.op != "log" or len(call.operands) != 1 or call.keywords:
        return None
    sig = node.right if complement and isinstance(node, ast.BinOp) else node
    if call.value_of(sig).kind != "sigmoid" or not isinstance(sig, ast.Call):
        return None
    arg = call_operand(sig)
    target = _LOGSIGMOID.get(call.value_of(sig).fw or "")
    if arg is None or target is None:
        return None
    module = call.alias(target[0])
    if module is None:
        return None
    text = call.text(arg)
    if complement:
        text = "-" + paren(text, arg)
    return f"{module}.{target[1]}({text})"
