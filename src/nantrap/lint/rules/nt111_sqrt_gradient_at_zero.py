"""NT111 sqrt-gradient-at-zero: sqrt of a value that can be exactly 0, differentiated."""

from __future__ import annotations

from collections.abc import Iterator

from nantrap.lint._describe import what
from nantrap.lint._rule import Example, Hit, OpCall, Rule

_KINDS = ("sqsum", "square")
# of a difference (the distance of a point to itself) or of a gradient (WGAN-GP's norm)
_BASES = ("diff", "grad")
_BETTER = {
    "torch": "torch.linalg.vector_norm(d) (its gradient at 0 is 0) or sqrt(x + eps)",
    "tf": "tf.sqrt(x + eps) (tf.norm has the same NaN gradient at 0)",
    "keras": "keras.ops.sqrt(x + eps)",
    "jax": "jnp.sqrt(x + eps), or jnp.where(x > 0, x, 1) inside the sqrt (double where)",
}


class SqrtGradientAtZero(Rule):
    """What it does:
        Finds ``sqrt`` (or ``x ** 0.5``) of a sum of squared differences (a Euclidean
        distance written by hand) and of ``clamp(x, min=0)``, on a gradient path (torch,
        TensorFlow, Keras, JAX; not inside ``no_grad``). A std computed from a variance is
        left alone: ``torch.std`` has the same gradient at 0.

    Why is this bad?
        d sqrt(x)/dx = 1 / (2 sqrt(x)) is inf at x = 0; chained with the 0 gradient of
        the sum of squares it gives inf * 0 = NaN, e.g. the distance of a point to itself.

    Example:
        ``torch.sqrt(((a - b) ** 2).sum(-1))``

    Use instead:
        ``torch.linalg.vector_norm(a - b, dim=-1)`` or ``torch.sqrt(x + eps)``.

    Fix safety:
        No automatic fix.
    """

    CODE = "NT111"
    OPS = ("sqrt", "pow")
    VALID = (
        "import torch\nd = torch.sqrt(((a - b) ** 2).sum(-1) + 1e-12)\n",
        "import numpy as np\nd = np.sqrt(((a - b) ** 2).sum(-1))\n",
        "import torch\nwith torch.no_grad():\n    d = torch.sqrt((x ** 2).sum())\n",
    )
    INVALID = (
        Example("import torch\nd = torch.sqrt(((a - b) ** 2).sum(-1))\n", ((2, 5),)),
        Example(
            "import tensorflow as tf\nd = tf.sqrt(tf.reduce_sum(tf.square(a - b), 1))\n",
            ((2, 5),),
        ),
        Example("import torch\nr = ((a - b).pow(2).sum()) ** 0.5\n", ((2, 5),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0, "input")
        if call.op == "pow":
            _, p = call.operand(1, "exponent")
            if p.kind != "const" or not 0 < p.lo < 1:
                return
        clamped_at_zero = v.kind == "clip" and v.lo == 0 and not v.guarded
        if node is None or not (clamped_at_zero or (v.kind in _KINDS and v.base in _BASES)):
            return
        if v.guarded or not call.differentiable or call.in_guard or call.tested(node):
            return
        if "var" in call.text(node).lower():
            return  # a std from a variance: torch.std has the same gradient at 0
        what_ = what(call, node, v, v.zero_reason if v.kind != "square" else "a square")
        if clamped_at_zero:
            what_ = what(call, node, v, "a value clamped to >= 0")
        yield call.hit(
            f"sqrt of {what_} on a gradient path: it is exactly 0 when its inputs are (a "
            "point's distance to itself), d sqrt(x)/dx = 1/(2 sqrt(x)) = inf there, and "
            "inf * 0 = NaN in the backward pass",
            fix=f"use {_BETTER.get(call.fw or 'torch', _BETTER['torch'])}",
            evidence={"kind": v.kind},
        )
