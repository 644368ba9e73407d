"""NT103 log-of-nonpositive: log of a value that can be exactly 0."""

from __future__ import annotations

from collections.abc import Iterator

from nantrap.lint._describe import what
from nantrap.lint._rule import Example, Hit, OpCall, Rule

_WHEN = {
    "count": "nothing is counted",
    "masksum": "the mask is empty",
    "maskmean": "the mask is empty",
    "norm": "the vector is all zeros",
    "std": "all values are equal",
    "var": "all values are equal",
    "sqsum": "all entries are 0",
    "nonnegsum": "all entries are 0",
    "range": "all values are equal",
    "nonneg": "the input is 0 (relu of a negative, abs of 0)",
}


class LogOfNonpositive(Rule):
    """What it does:
        Finds ``log`` of a value that can be exactly 0 or is negative: a count, a sum of a
        mask, a norm, a std or variance, a relu/abs/square output, ``max - min``, a
        non-positive constant. Guarded forms (``+ eps``, ``clamp(min=eps)``) are fine.

    Why is this bad?
        log(0) = -inf and log of a negative number is NaN; the gradient 1/x is inf at 0.

    Example:
        ``torch.log(mask.float().sum())``

    Use instead:
        ``torch.log(x.clamp_min(eps))`` or ``torch.log(x + eps)`` with an eps the dtype keeps.

    Fix safety:
        No automatic fix: adding an eps changes the value.
    """

    CODE = "NT103"
    OPS = ("log", "log2", "log10")
    VALID = (
        "import torch\nn = torch.log(x.norm() + 1e-6)\n",
        "import numpy as np\ny = np.log(x)\n",
    )
    INVALID = (
        Example("import torch\nn = torch.log(torch.norm(x))\n", ((2, 5),)),
        Example("import numpy as np\nc = np.log(np.count_nonzero(a))\n", ((2, 5),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0, "input")
        if node is None or call.in_guard or call.tested(node):
            return
        if v.kind == "const" and v.lo <= 0:
            yield call.hit(f"{call.op} of the constant {v.lo:g}: log(x <= 0) is -inf or NaN")
            return
        if not v.may_be_zero or v.kind in ("var", "sqsum", "nonnegsum"):
            return
        if v.kind == "nonneg" and v.base != "relu":
            return
        yield call.hit(
            f"{call.op} of {what(call, node, v, v.zero_reason)}: it is exactly 0 when "
            f"{_WHEN.get(v.kind, 'its input is 0')}, and log(0) = -inf (gradient 1/0 = inf)",
            fix="keep it away from 0: log(x.clamp_min(eps)) or log(x + eps)",
            evidence={"kind": v.kind},
        )
