"""NT102 clip-before-log: log of a clipped probability, the seed's fake-loss "fix"."""

from __future__ import annotations

import math
from collections.abc import Iterator

from nantrap.lint._describe import num, snippet, what
from nantrap.lint._rule import Example, Hit, OpCall, Rule
from nantrap.lint._values import PROB


class ClipBeforeLog(Rule):
    """What it does:
        Finds ``log(clip(p, eps, 1))`` (``tf.clip_by_value``, ``torch.clamp(p, min=eps)``,
        ``K.clip``, ``maximum(p, eps)``, ``clip(p, eps, reduce_max(p))``) on a probability,
        and ``clip(log(p), a, b)``.

    Why is this bad?
        Wherever p is below eps the clip's gradient is exactly 0: those elements add the
        constant -log(eps) (18.4 for 1e-8) to the loss and pass no gradient back. The loss
        moves, nothing is learned from the worst mistakes: a fake loss.

    Example:
        ``tf.log(tf.clip_by_value(y, 1e-8, 1.0))``

    Use instead:
        The loss on logits (``tf.nn.softmax_cross_entropy_with_logits``,
        ``F.cross_entropy``, ``F.binary_cross_entropy_with_logits``).

    Fix safety:
        No automatic fix: the loss on logits needs the logits, which the clip hides.
    """

    CODE = "NT102"
    OPS = ("log", "log2", "log10", "clip")
    SUPERSEDES = ("NT101",)
    VALID = (
        "import torch\ns = torch.log(torch.clamp(spec, min=1e-5))\n",
        "import torch\nx = torch.clamp(torch.softmax(z, 1), 0.0, 1.0)\n",
    )
    INVALID = (
        Example("import tensorflow as tf\nl = tf.log(tf.clip_by_value(y, 1e-8, 1.0))\n", ((2, 5),)),
        Example(
            "import torch\np = torch.sigmoid(z)\nl = torch.log(torch.clamp(p, min=1e-7))\n",
            ((3, 5),),
        ),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        node, v = call.operand(0)
        if node is None:
            return
        if call.op == "clip":
            if v.kind == "log" and v.base in PROB:
                _, lo = call.operand(1, "clip_value_min")
                low = num(lo.lo) if lo.kind == "const" else "lo"
                yield call.hit(
                    f"clip of {snippet(call, node)}, the log of a probability: log(p) <= 0, so "
                    f"a clip to [{low}, ...] is active wherever p < 1 and passes no "
                    "gradient there (a fake loss)",
                    fix="compute the loss from logits (log_softmax / cross_entropy)",
                )
            return
        if v.kind != "clip" or not v.lo > 0:
            return
        known = v.base in PROB
        bounded = v.hi <= 1.0 or v.base == "max"
        seed_style = v.hi == 1.0  # clip(y, 1e-8, 1.0): the seed post's "fix"
        if not (known or seed_style or (bounded and (call.negated or call.in_product))):
            return
        low = "eps" if v.lo == 5e-324 else num(v.lo)
        const = f" = {num(-math.log(v.lo))}" if v.lo > 5e-324 else ""
        yield call.hit(
            f"{call.op} of {what(call, node, v, 'a probability')} clipped to [{low}, "
            f"{'max' if v.base == 'max' else num(v.hi)}]: where it is below {low} the clip "
            f"passes no gradient, so those elements add the constant -log({low}){const} to the "
            "loss and nothing is learned from them (a fake loss)",
            fix="remove the clip and use the loss on logits (cross_entropy / "
            "softmax_cross_entropy_with_logits / binary_cross_entropy_with_logits)",
            evidence={"clip_lo": v.lo, "clip_hi": v.hi},
        )
