"""NT106 bce-on-probabilities: binary cross-entropy on a sigmoid output."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from nantrap.lint._describe import F32, call_operand, num, what
from nantrap.lint._rule import Example, Hit, OpCall, Rule


class BceOnProbabilities(Rule):
    """What it does:
        Finds ``F.binary_cross_entropy(torch.sigmoid(z), y)``, ``nn.BCELoss()(p, y)`` where
        ``p`` is a sigmoid output (also through variables and a model whose ``forward``
        returns a sigmoid), and ``keras.losses.binary_crossentropy(y, tf.sigmoid(z))``.

    Why is this bad?
        sigmoid(z) is exactly 1.0 in float32 for z > 16.64; log(1 - 1.0) = -inf, which
        PyTorch clamps to -100: a constant with zero gradient (the NT102 fake loss), and
        autocast refuses binary_cross_entropy as unsafe.

    Example:
        ``loss = F.binary_cross_entropy(torch.sigmoid(z), y)``

    Use instead:
        ``F.binary_cross_entropy_with_logits(z, y)`` / ``nn.BCEWithLogitsLoss()``.

    Fix safety:
        Safe when the sigmoid call is the loss's argument: the with-logits loss is the
        same function computed stably (same ``weight`` / ``reduction`` arguments).
    """

    CODE = "NT106"
    OPS = ("binary_cross_entropy",)
    VALID = (
        "import torch.nn.functional as F\nl = F.binary_cross_entropy_with_logits(z, y)\n",
        "import torch.nn as nn\nl = nn.BCELoss()(p, y)\n",
    )
    INVALID = (
        Example(
            "import torch\nimport torch.nn.functional as F\n"
            "l = F.binary_cross_entropy(torch.sigmoid(z), y, reduction='sum')\n",
            ((3, 5),),
            "import torch\nimport torch.nn.functional as F\n"
            "l = F.binary_cross_entropy_with_logits(z, y, reduction='sum')\n",
        ),
        Example(
            "import torch\nimport torch.nn as nn\n"
            "crit = nn.BCELoss()\nout = torch.sigmoid(h)\nl = crit(out, y)\n",
            ((5, 5),),
        ),
        Example(
            "import torch\nimport torch.nn as nn\nl = nn.BCELoss()(torch.sigmoid(h), y)\n",
            ((3, 5),),
            "import torch\nimport torch.nn as nn\nl = nn.BCEWithLogitsLoss()(h, y)\n",
        ),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        keras = call.qual.startswith("keras.")
        node, v = call.operand(1, "y_pred") if keras else call.operand(0, "input")
        if node is None or v.kind != "sigmoid" or v.guarded:
            return
        if keras:
            logits = call.keywords.get("from_logits")
            if logits is not None and not (
                isinstance(logits, ast.Constant) and logits.value is False
            ):
                return
        replacement = None if keras else _with_logits(call, node)
        yield call.hit(
            f"binary cross-entropy on {what(call, node, v)}: sigmoid is exactly 1.0 in "
            f"float32 for logits > {num(F32.sigmoid_one)}, log(1 - 1.0) = -inf is clamped "
            "to -100 and passes no gradient (a fake loss)",
            fix="binary_cross_entropy(..., from_logits=True) on the logits"
            if keras
            else "use binary_cross_entropy_with_logits / BCEWithLogitsLoss on the logits",
            replacement=replacement,
            safe=replacement is not None,
        )


def _with_logits(call: OpCall, sig: ast.AST) -> str | None:
    node = call.node
    if not isinstance(node, ast.Call) or not node.args or node.args[0] is not sig:
        return None
    if call.value_of(sig).node is not sig:
        return None
    logits = call_operand(sig)
    if logits is None:
        return None
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "binary_cross_entropy":
        head = call.text(func) + "_with_logits"
    elif (
        isinstance(func, ast.Call)
        and isinstance(func.func, ast.Attribute)
        and func.func.attr == "BCELoss"
    ):
        ctor = call.text(func.func)
        head = ctor[: -len("BCELoss")] + "BCEWithLogitsLoss" + call.text(func)[len(ctor) :]
    else:
        return None
    args = [call.text(logits)] + [call.text(a) for a in node.args[1:]]
    args += [
        f"{k.arg}={call.text(k.value)}" if k.arg else f"**{call.text(k.value)}"
        for k in node.keywords
    ]
    return f"{head}({', '.join(args)})"
