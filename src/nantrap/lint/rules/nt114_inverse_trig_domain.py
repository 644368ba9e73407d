"""NT114 inverse-trig-domain: acos/asin of a cosine that rounding pushes past 1."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from nantrap.lint._describe import snippet
from nantrap.lint._rule import Example, Hit, OpCall, Rule

_SOURCES = {
    "cos": "a cosine similarity",
    "ratio": "a ratio to a norm",
    "unitdot": "a dot product of unit vectors",
}


class InverseTrigDomain(Rule):
    """What it does:
        Finds ``acos`` / ``asin`` of a cosine similarity, a dot product of normalized
        vectors or a ratio to a norm, and ``atanh`` of a tanh output, with no clamp.

    Why is this bad?
        Rounding gives |cos| = 1.0000001 for parallel vectors: acos is NaN outside
        [-1, 1] and its gradient -1/sqrt(1 - x**2) is inf at ±1. tanh is exactly ±1.0
        in float32 for |x| > 9.01, where atanh is ±inf.

    Example:
        ``angle = torch.acos(F.cosine_similarity(a, b))``

    Use instead:
        ``torch.acos(c.clamp(-1 + 1e-7, 1 - 1e-7))``, or ``atan2(|a x b|, a . b)``.

    Fix safety:
        No automatic fix.
    """

    CODE = "NT114"
    OPS = ("acos", "asin", "atanh")
    VALID = (
        "import torch\nimport torch.nn.functional as F\n"
        "a = torch.acos(F.cosine_similarity(u, v).clamp(-0.9999, 0.9999))\n",
        "import numpy as np\na = np.arccos(x)\n",
    )
    INVALID = (
        Example(
            "import torch\nimport torch.nn.functional as F\n"
            "a = torch.acos(F.cosine_similarity(u, v))\n",
            ((3, 5),),
        ),
        Example("import numpy as np\nc = np.arccos(np.dot(a, b) / np.linalg.norm(a))\n", ((2, 5),)),
        Example("import torch\ny = torch.atanh(torch.tanh(x))\n", ((2, 5),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0, "input")
        if node is None or call.in_guard or v.guarded or v.kind == "clip":
            return
        if call.op == "atanh":
            if v.kind == "tanh":
                yield call.hit(
                    f"atanh of {snippet(call, node)}, a tanh output: tanh is exactly ±1.0 in "
                    "float32 for |x| > 9.01, and atanh(±1) = ±inf",
                    fix="keep the pre-activation, or clamp to (-1 + 1e-6, 1 - 1e-6)",
                )
            return
        computed = (
            isinstance(node, ast.BinOp)
            and call.differentiable
            and v.kind in ("", "diff", "ratio", "linear")
        )
        if v.kind not in _SOURCES and not computed:
            return
        source = _SOURCES.get(v.kind, "a computed value")
        yield call.hit(
            f"{call.op} of {snippet(call, node)}, {source}: rounding gives |x| = "
            f"1.0000001 for parallel vectors, where {call.op} is NaN, and its gradient "
            "1/sqrt(1 - x**2) is inf at ±1",
            fix="clamp to [-1 + 1e-7, 1 - 1e-7] first, or use atan2",
        )
