"""NT202 epsilon-below-dtype-resolution: an eps that is 0 in float16."""

from __future__ import annotations

from collections.abc import Iterator

from nantrap.lint._describe import F16, num, snippet
from nantrap.lint._rule import Example, Hit, OpCall, Rule

_OPTIMIZERS = {
    "Adam": 1e-8,
    "AdamW": 1e-8,
    "RMSprop": 1e-8,
    "Adagrad": 1e-10,
    "Adamax": 1e-8,
    "NAdam": 1e-8,
    "RAdam": 1e-8,
    "Adadelta": 1e-6,
}


class EpsilonBelowDtypeResolution(Rule):
    """What it does:
        Finds an eps that float16 rounds to 0 (below its smallest subnormal, 5.96e-08):
        ``x_half + 1e-8`` protecting a log, division or sqrt, and Adam-family optimizers
        (default eps=1e-8) over the parameters of a model converted with ``.half()``.

    Why is this bad?
        1e-8 is 0.0 in float16, so x + eps == x and the guard protects nothing; Adam's
        m / (sqrt(v) + eps) divides by 0 once v underflows.

    Example:
        ``opt = torch.optim.Adam(model.half().parameters())``

    Use instead:
        Keep float32 master weights (autocast + GradScaler), or eps >= 1e-4 in float16.

    Fix safety:
        No automatic fix.
    """

    CODE = "NT202"
    OPS = ("log", "log2", "log10", "div", "sqrt", "rsqrt")
    NAMES = tuple(f"torch.optim.{name}" for name in _OPTIMIZERS)
    VALID = (
        "import torch\nopt = torch.optim.Adam(model.parameters())\n",
        "import torch\nh = x.half()\ny = torch.log(h + 1e-3)\n",
    )
    INVALID = (
        Example(
            "import torch\nmodel = Net().half()\nopt = torch.optim.Adam(model.parameters())\n",
            ((3, 7),),
        ),
        Example("import torch\nh = x.half()\ny = torch.log(h + 1e-8)\n", ((3, 5),)),
    )

    def check(self, call: OpCall) -> Iterator[Hit]:
        if call.op is None:
            yield from self._optimizer(call)
            return
        node, v = call.operand(1) if call.op == "div" else call.operand(0, "input")
        if node is None or not v.half or v.eps is None:
            return
        if v.eps >= F16.smallest_subnormal / 2:
            return
        yield call.hit(
            f"the eps {num(v.eps)} in {snippet(call, node)} is 0.0 in float16 (smallest "
            f"subnormal {num(F16.smallest_subnormal)}): x + eps == x, the guard does nothing",
            fix="use an eps float16 keeps (>= 1e-4 for a divisor), or compute in float32",
        )

    def _optimizer(self, call: OpCall) -> Iterator[Hit]:
        node, params = call.operand(0, "params")
        if node is None or not params.half:
            return
        name = call.qual.rsplit(".", 1)[-1]
        eps_node, eps = call.operand(99, "eps")
        value = eps.lo if eps.kind == "const" else (None if eps_node else _OPTIMIZERS[name])
        if value is None or value >= 1e-4:
            return
        shown = "the default eps" if eps_node is None else "eps"
        yield call.hit(
            f"{name} with {shown}={num(value)} over float16 parameters "
            f"({snippet(call, node)}): {num(value)} is below float16's resolution (smallest "
            f"subnormal {num(F16.smallest_subnormal)}, normal min {num(F16.tiny)}), so "
            "m / (sqrt(v) + eps) divides by ~0 once v underflows",
            fix="keep float32 master weights (autocast + GradScaler), or eps >= 1e-4",
            evidence={"eps": value},
        )
