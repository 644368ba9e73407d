"""NT113 exp-overflow: exp of an unbounded value, hand-written softmax/softplus/logsumexp."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from nantrap.lint._describe import F16, F32, call_operand, num, snippet
from nantrap.lint._rule import Example, Hit, OpCall, Rule

_SOFTPLUS = {
    "torch": ("torch.nn.functional", "softplus"),
    "tf": ("tf.math", "softplus"),
    "keras": ("keras.ops", "softplus"),
    "jax": ("jax.nn", "softplus"),
}
_OVER = (
    f"float32 exp overflows to inf above {num(F32.exp_overflow)} (float16: {num(F16.exp_overflow)})"
)


class ExpOverflow(Rule):
    """What it does:
        Finds ``exp`` (``expm1``, ``cosh``, ``sinh``) of a matmul/linear output with no
        max shift, softmax written by hand (``exp(x) / sum(exp(x))`` without
        ``x - max(x)``), ``log(sum(exp(x)))`` and ``log(1 + exp(x))``.

    Why is this bad?
        float32 exp overflows to inf above 88.72 (float16: 11.09); inf / inf = NaN in the
        hand-written softmax, and log(inf) = inf in logsumexp / softplus.

    Example:
        ``e = tf.exp(logits); p = e / tf.reduce_sum(e, 1, keepdims=True)``

    Use instead:
        ``softmax`` / ``log_softmax``, ``logsumexp``, ``softplus``, or ``exp(x - max(x))``.

    Fix safety:
        ``log(1 + exp(x))`` -> ``softplus(x)`` is safe (the same function, computed
        stably); the others need the surrounding code and get no edit.
    """

    CODE = "NT113"
    OPS = ("exp", "expm1", "cosh", "sinh", "div", "log", "log1p")
    VALID = (
        "import torch\ne = torch.exp(z - z.max(dim=1, keepdim=True).values)\n",
        "import torch\np = torch.exp(torch.log_softmax(z, 1))\n",
        "import torch\nstd = torch.exp(0.5 * logvar)\n",
    )
    INVALID = (
        Example(
            "import tensorflow as tf\ne = tf.exp(logits)\np = e / tf.reduce_sum(e, 1)\n",
            ((2, 5),),
        ),
        Example(
            "import torch\nimport torch.nn.functional as F\nsp = torch.log(1 + torch.exp(x))\n",
            ((3, 6),),
            "import torch\nimport torch.nn.functional as F\nsp = F.softplus(x)\n",
        ),
        Example("import numpy as np\ne = np.exp(x @ w)\n", ((2, 5),)),
        Example(
            "import torch\nl = torch.log(torch.exp(s).sum(1))\n",
            ((2, 5),),
        ),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        if call.op == "div":
            yield from self._softmax(call)
        elif call.op in ("log", "log1p"):
            yield from self._log_of_exp(call)
        else:
            node, v = call.operand(0, "input")
            if node is None or v.half or call.in_guard or v.shifted or v.hi <= F32.exp_overflow:
                return
            if not v.unbounded or _starts_negated(node):
                return  # exp(-z): the 1 / (1 + exp(-z)) of a sigmoid, which saturates to 0
            yield call.hit(
                f"{call.op} of {snippet(call, node)}, a matmul/linear output with no bound: "
                f"{_OVER}",
                fix="subtract the max first, or use softmax / logsumexp / softplus",
            )

    def _softmax(self, call: OpCall) -> Iterator[Hit]:
        _num_node, n = call.operand(0)
        _, d = call.operand(1)
        if n.kind != "exp" or d.kind != "sum_exp" or n.node is None:
            return
        exp_node = n.node
        inner = n.inner
        if inner is not None and call.value_of(inner).unbounded:
            return  # the exp itself is reported
        yield call.hit(
            f"softmax written by hand: exp of {snippet(call, inner)} is not shifted by its "
            f"max; {_OVER} and inf / inf = NaN",
            node=exp_node,
            fix="use softmax(x) (it subtracts the max), or exp(x - max(x))",
        )

    def _log_of_exp(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0, "input")
        if node is None:
            return
        softplus = (call.op == "log" and v.kind == "one_plus_exp") or (
            call.op == "log1p" and v.kind == "exp"
        )
        if softplus:
            replacement = _softplus(call, node)
            yield call.hit(
                f"softplus written by hand: {call.op} of {snippet(call, node)}; {_OVER}, "
                "so the result is inf for large x (softplus(x) is x there)",
                fix="use softplus(x)",
                replacement=replacement,
                safe=replacement is not None,
            )
        elif call.op == "log" and v.kind == "sum_exp" and v.base == "exp":
            yield call.hit(
                f"logsumexp written by hand: log of {snippet(call, node)}; {_OVER}, and "
                "log(inf) = inf",
                fix="use logsumexp(x, dim) / tf.reduce_logsumexp(x, axis)",
            )


def _starts_negated(node: ast.AST) -> bool:
    while isinstance(node, ast.BinOp):
        node = node.left
    return isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)


def _softplus(call: OpCall, node: ast.AST) -> str | None:
    if len(call.operands) != 1 or call.keywords:
        return None
    if call.op == "log":
        if not isinstance(node, ast.BinOp):
            return None
        exp_call = node.right if isinstance(node.left, ast.Constant) else node.left
    else:
        exp_call = node
    v = call.value_of(exp_call)
    if v.kind != "exp" or v.node is not exp_call:
        return None
    arg = call_operand(exp_call)
    target = _SOFTPLUS.get(v.fw or "")
    if arg is None or target is None:
        return None
    module = call.alias(target[0])
    return f"{module}.{target[1]}({call.text(arg)})" if module else None
