"""NT101 log-of-probability: log of a softmax output."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from nantrap.lint._describe import F16, F32, num, what
from nantrap.lint._rule import Example, Hit, OpCall, Rule


class LogOfProbability(Rule):
    """What it does:
        Finds ``log`` (``log2``, ``log10``) of a softmax output, directly or through
        variables and function returns, in PyTorch, TensorFlow, Keras, JAX and NumPy.

    Why is this bad?
        softmax underflows to exactly 0.0 in float32 when a logit trails the largest by
        more than 103.97 (float16: 17.33). log(0) = -inf and its gradient 1/0 makes NaN
        in every weight upstream; only the step it happens at is unknown.

    Example:
        ``p = torch.softmax(z, dim=1); torch.log(p)``

    Use instead:
        ``torch.log_softmax(z, dim=1)``, or the loss on logits (``F.cross_entropy``).

    Fix safety:
        ``log(softmax(x, ...))`` -> ``log_softmax(x, ...)`` is safe (the same function,
        computed stably); a softmax stored in a variable is reported without an edit.
    """

    CODE = "NT101"
    OPS = ("log", "log2", "log10")
    VALID = (
        "import torch\ny = torch.log_softmax(z, dim=1)\n",
        "import torch\np = torch.softmax(z, 1)\nq = torch.log(p + 1e-6)\n",
        "import tensorflow as tf\ny = tf.nn.softmax(z)\nloss = tf.reduce_mean(y)\n",
    )
    INVALID = (
        Example(
            "import torch\ny = torch.log(torch.softmax(z, dim=1))\n",
            ((2, 5),),
            "import torch\ny = torch.log_softmax(z, dim=1)\n",
        ),
        Example(
            "import tensorflow as tf\ny = tf.nn.softmax(z)\nlp = tf.log(y)\n",
            ((3, 6),),
        ),
        Example(
            "import torch\nlp = z.softmax(-1).log()\n",
            ((2, 6),),
            "import torch\nlp = z.log_softmax(-1)\n",
        ),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0, "input")
        if node is None or call.in_guard:
            return
        softmax = v.kind == "softmax" and not v.guarded
        if not (softmax or (v.kind == "one_minus" and v.base == "softmax")):
            return
        message = (
            f"{call.op} of {what(call, node, v)}: softmax underflows to exactly 0.0 in "
            f"float32 when a logit trails the largest by more than {num(-F32.exp_underflow)} "
            f"(float16: {num(-F16.exp_underflow)}); log(0) = -inf and the gradient becomes NaN"
        )
        replacement = _log_softmax(call, node, v) if softmax else None
        yield call.hit(
            message,
            fix="use log_softmax(logits) or a loss on logits (cross_entropy)",
            replacement=replacement,
            safe=replacement is not None,
            evidence={"producer": "softmax", "line": v.line},
        )


def _log_softmax(call: OpCall, node: ast.AST, v) -> str | None:
    """``log(softmax(x, d))`` -> ``log_softmax(x, d)`` when the log wraps the call itself."""
    if call.op != "log" or v.node is not node or not isinstance(node, ast.Call):
        return None
    if len(call.operands) != 1 or call.keywords:
        return None
    func = node.func
    if not isinstance(func, ast.Attribute) or func.attr != "softmax":
        return None
    full = call.text(node)
    head = call.text(func)
    return head[: -len("softmax")] + "log_softmax" + full[len(head) :]
