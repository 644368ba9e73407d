"""NT105 hand-written-cross-entropy: -sum(y * log(p)) on probabilities."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from nantrap.lint._describe import snippet
from nantrap.lint._rule import Example, Hit, OpCall, Rule
from nantrap.lint._values import PROB

_LOSS = {
    "torch": "F.cross_entropy(logits, {y}) (or F.binary_cross_entropy_with_logits)",
    "tf": "tf.nn.softmax_cross_entropy_with_logits(labels={y}, logits=logits)",
    "keras": "keras.losses.categorical_crossentropy({y}, logits, from_logits=True)",
    "jax": "optax.softmax_cross_entropy(logits, {y}) or -({y} * jax.nn.log_softmax(logits)).sum()",
    "numpy": "-({y} * log_softmax(logits)).sum() with log_softmax = x - logsumexp(x)",
}


def _loss(fw: str | None, labels: str | None = None) -> str:
    """The fused loss on logits for framework ``fw``, naming ``labels`` where known."""
    template = _LOSS.get(fw or "", _LOSS["torch"])
    return template.format(y=labels or ("target" if template is _LOSS["torch"] else "y"))


class HandWrittenCrossEntropy(Rule):
    """What it does:
        Finds a cross-entropy (or entropy) summed by hand from probabilities:
        ``-tf.reduce_sum(y_ * tf.log(y))``, ``-(t * torch.log(p)).sum(1).mean()``,
        ``np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))``.

    Why is this bad?
        p underflows to exactly 0 for a confident wrong prediction; log(0) = -inf makes
        the loss inf and 0 * -inf = NaN poisons the gradient. The seed post's NaN.

    Example:
        ``cross_entropy = -tf.reduce_sum(y_ * tf.log(y_conv))``

    Use instead:
        ``tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=logits)`` /
        ``F.cross_entropy(logits, target)``.

    Fix safety:
        No automatic fix: the fused loss needs the logits and its own reduction.
    """

    CODE = "NT105"
    OPS = ("sum", "mean", "log")
    SUPERSEDES = ("NT101", "NT103")
    VALID = (
        "import torch\nl = -(y * torch.log_softmax(z, 1)).sum(1).mean()\n",
        "import torch\nl = -(y * torch.log(p + 1e-8)).sum()\n",
        "import numpy as np\nh = -np.sum(p * np.log(p))\n",
    )
    INVALID = (
        Example(
            "import tensorflow as tf\ny = tf.nn.softmax(tf.matmul(x, W) + b)\n"
            "ce = -tf.reduce_sum(y_ * tf.log(y))\n",
            ((3, 7),),
        ),
        Example("import torch\nloss = -(t * torch.log(p)).sum(dim=1).mean()\n", ((2, 9),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        if call.op == "log":
            yield from self._nll(call)
            return
        node, _ = call.operand(0, "input_tensor")
        if node is None:
            return
        logs = _logs_in_products(node, call)
        binary = len(logs) >= 2  # y * log(p) + (1 - y) * log(1 - p)
        labels = next(  # y in y * log(p), not the (1 - y) of the complement term
            (call.text(o) for _, a, o in logs if call.value_of(a).kind != "one_minus"), None
        )
        for log_call, arg, _ in logs:
            v = call.value_of(arg)
            if v.guarded or v.kind in ("clip", "const", "logprob"):
                continue
            if v.kind in ("sigmoid",) or v.base == "sigmoid":
                continue  # NT104 says it better
            fw = call.value_of(log_call).fw or call.fw
            known = v.kind in PROB or (v.kind == "one_minus" and v.base in PROB)
            if not known and (
                v.kind
                or (fw not in ("torch", "tf", "keras", "jax") and not binary)
                or not (call.negated or binary or _negated(node))
            ):
                continue
            origin = f", a softmax output (line {v.line})" if v.kind == "softmax" else ""
            loss = _loss(fw, labels)
            if v.kind == "softmax" and v.inner is not None:
                loss += f", with logits = `{call.text(v.inner)}`"
            yield call.hit(
                f"cross-entropy written by hand: log of {snippet(call, arg)}{origin} reaches "
                "log(0) = -inf as soon as a probability underflows to 0.0 (confident wrong "
                "prediction), and 0 * -inf = NaN in the loss and its gradient",
                fix=f"use the loss on logits: {loss}",
                evidence={"fw": fw},
            )
            return

    def _nll(self, call: OpCall) -> Iterator[Hit]:
        """-log(p[target]) / -log(p.gather(1, y)): the NLL of the target class by hand."""
        node, v = call.operand(0, "input")
        if node is None or v.guarded or not (call.negated and call.differentiable):
            return
        if v.kind and not (v.kind == "one_minus" and not v.base):
            return
        complement = (  # -log(1 - d): a GAN's generator loss on a discriminator output
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Sub)
            and isinstance(node.left, ast.Constant)
            and node.left.value == 1
        )
        if not (v.picked or complement):
            return
        what = "the probability picked for the target" if v.picked else "a probability"
        yield call.hit(
            f"negative log-likelihood written by hand: -log of {snippet(call, node)}, "
            f"{what}, is inf as soon as it underflows to 0.0 (and its gradient 1/p with it)",
            fix=f"use the loss on logits: {_loss(call.fw)}",
        )


def _negated(node: ast.AST) -> bool:
    """The summed expression carries the minus: sum(-y * log(p))."""
    return any(isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub) for n in ast.walk(node))


def _logs_in_products(node: ast.AST, call: OpCall):
    """(log call, its argument, the factor it is multiplied by: the labels) for each log(...)
    multiplied into the summed expression."""
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    terms = [node]
    out = []
    while terms:
        n = terms.pop()
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            terms.append(n.operand)
        elif isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub)):
            terms += [n.left, n.right]
        elif isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult):
            for side, other in ((n.left, n.right), (n.right, n.left)):
                while isinstance(side, ast.UnaryOp) and isinstance(side.op, ast.USub):
                    side = side.operand
                if isinstance(side, ast.BinOp) and isinstance(side.op, ast.Mult):
                    terms.append(side)  # y * log(p) * w
                elif isinstance(side, ast.Call) and call.value_of(side).kind == "log":
                    arg = side.args[0] if side.args else None
                    if arg is None and isinstance(side.func, ast.Attribute):
                        arg = side.func.value
                    if arg is not None:
                        out.append((side, arg, other))
    return out
