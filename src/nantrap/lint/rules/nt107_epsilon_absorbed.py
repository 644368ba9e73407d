"""NT107 epsilon-absorbed: log(1 - p + 1e-10), where the eps is rounded away."""

from __future__ import annotations

from collections.abc import Iterator

from nantrap.lint._describe import F16, F32, num, what
from nantrap.lint._rule import Example, Hit, OpCall, Rule


class EpsilonAbsorbed(Rule):
    """What it does:
        Finds an epsilon added to ``1 - p`` (a value near 1 that reaches 0 by
        cancellation) to protect a log, division or sqrt, when the eps is smaller than
        half the dtype's spacing at 1 (float32: 5.96e-08; float16: 4.88e-04).

    Why is this bad?
        1 - p + 1e-10 is computed as (1 - p) + 1e-10; when p is near 1 the sum rounds
        back: 1e-10 added to anything near 1 is a no-op in float32, so once p == 1.0 the
        log is still log(0).

    Example:
        ``torch.log(1 - torch.sigmoid(z) + 1e-10)``

    Use instead:
        The stable op (``F.logsigmoid(-z)``), or an eps the dtype keeps (>= 1e-7 in float32).

    Fix safety:
        No automatic fix: a larger eps changes the value.
    """

    CODE = "NT107"
    OPS = ("log", "log2", "log10", "div", "sqrt", "rsqrt")
    VALID = (
        "import torch\nl = torch.log(1 - torch.sigmoid(z) + 1e-6)\n",
        "import torch\nl = torch.log(torch.sigmoid(z) + 1e-10)\n",
    )
    INVALID = (
        Example("import torch\nl = torch.log(1 - torch.sigmoid(z) + 1e-10)\n", ((2, 5),)),
        Example("import numpy as np\nq = np.log(1. - p + 1e-12)\n", ((2, 5),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(1) if call.op == "div" else call.operand(0, "input")
        if node is None or v.eps is None or v.kind != "one_minus":
            return
        fmt = F16 if v.half else F32
        if not fmt.absorbs(v.eps, 1.0):
            return
        yield call.hit(
            f"the eps {num(v.eps)} in {what(call, node, v, '1 - p + eps')} is lost in "
            f"{fmt.name}: near 1 its spacing is {num(fmt.eps)}, so (1 - p) + {num(v.eps)} "
            f"rounds back to 1 - p and is still 0 when p == 1.0",
            fix=f"use the stable op (logsigmoid(-x)), or an eps >= {num(fmt.eps)} for {fmt.name}",
            evidence={"eps": v.eps, "dtype": fmt.name},
        )
