"""NT107 epsilon-absorbed: log(1 + 1e-10 - p), where the eps is rounded away."""

from __future__ import annotations

from collections.abc import Iterator

from nantrap.lint._describe import F32, num, what
from nantrap.lint._rule import Example, Hit, OpCall, Rule


class EpsilonAbsorbed(Rule):
    """What it does:
        Finds an epsilon added to 1 before the cancellation it should protect:
        ``log(1 + 1e-10 - p)``, ``log(1e-10 + 1 - p)``, when the eps is below half of
        float32's spacing at 1 (5.96e-08).

    Why is this bad?
        The constant 1 + 1e-10 becomes exactly 1.0 in a float32 tensor, so
        1 + 1e-10 - p is 1 - p and is still 0 when p == 1.0 (a saturated sigmoid):
        log(0) = -inf. (Written as (1 - p) + 1e-10 the eps survives in float32; in
        float16 it is 0 either way, see NT202.)

    Example:
        ``torch.log(1 + 1e-10 - torch.sigmoid(z))``

    Use instead:
        The stable op (``F.logsigmoid(-z)``), or ``(1 - p) + eps``.

    Fix safety:
        No automatic fix.
    """

    CODE = "NT107"
    OPS = ("log", "log2", "log10", "div", "sqrt", "rsqrt")
    SUPERSEDES = ("NT101", "NT104")
    VALID = (
        "import torch\nl = torch.log(1 - torch.sigmoid(z) + 1e-10)\n",
        "import torch\nl = torch.log(1 + 1e-3 - torch.sigmoid(z))\n",
    )
    INVALID = (
        Example("import torch\nl = torch.log(1 + 1e-10 - torch.sigmoid(z))\n", ((2, 5),)),
        Example("import numpy as np\nq = np.log(1e-12 + 1. - p)\n", ((2, 5),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(1) if call.op == "div" else call.operand(0, "input")
        if node is None or v.eps is None or v.kind != "one_minus" or v.guarded:
            return
        if not F32.absorbs(v.eps, 1.0):
            return
        yield call.hit(
            f"the eps {num(v.eps)} in {what(call, node, v, '1 + eps - p')} is lost in float32: "
            f"near 1 its spacing is {num(F32.eps)}, so 1 + {num(v.eps)} is exactly 1.0 and the "
            "difference is still 0 when p == 1.0",
            fix="use the stable op (logsigmoid(-x)), or write (1 - p) + eps",
            evidence={"eps": v.eps, "dtype": "float32"},
        )
