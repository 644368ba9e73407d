"""Value facts: what the linter knows about an expression's value, and how ops change it.

A :class:`Value` is a small, immutable summary ("output of softmax: in [0, 1], reaches
exactly 0 in float"; "clipped to [1e-8, 1]"; "a norm: >= 0, may be 0"). The engine
computes one per expression and binds them to names across simple assignments and
returns; rules read them. Transfers are keyed by neutral op name (``nantrap.ops``).
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, replace

INF = math.inf

PROB = frozenset({"softmax", "sigmoid"})
# kinds of value that are >= 0 and can be exactly 0, with the reason in words
MAY_ZERO = {
    "mask": "a boolean mask",
    "count": "a count",
    "norm": "a norm",
    "std": "a standard deviation",
    "var": "a variance",
    "sqsum": "a sum of squares",
    "nonneg": "a non-negative value (relu / abs / square)",
    "range": "a max - min difference",
    "masksum": "a sum of a mask (a count)",
    "nonnegsum": "a sum of non-negative values",
    "maskmean": "a mean of a mask (a fraction)",
}


@dataclass(frozen=True, slots=True)
class CallSite:
    """Where a parameter's fact came from: ``p`` of ``cross_entropy``, passed at line 12.

    ``maybe``: only some call sites pass it (or the function is also used as a value, so
    some calls are unseen); findings that rest on it are warnings, never errors.
    """

    param: str
    function: str
    line: int
    maybe: bool = False
    path: str | None = None  # the calling file, when it is another file of the project
    what: str = ""  # the fact in words ("a softmax output")


@dataclass(frozen=True, slots=True)
class Value:
    """Facts about one value. The defaults mean "nothing known"."""

    kind: str = ""  # softmax, sigmoid, one_minus, clip, exp, sum_exp, norm, linear, ...
    lo: float = -INF
    hi: float = INF
    base: str = ""  # kind of the operand (what was clipped, complemented, summed)
    line: int = 0  # where the value was produced
    name: str | None = None  # the variable it was read from
    node: ast.AST | None = None  # the producing expression
    inner: ast.AST | None = None  # the producing op's main operand (softmax's logits)
    fw: str | None = None  # framework of the producing op
    guarded: bool = False  # an eps was added, or it was clamped away from 0
    eps: float | None = None  # the literal eps that was added
    half: bool = False  # float16 / bfloat16
    shifted: bool = False  # x - max(x): <= 0, safe for exp
    qual: str | None = None  # a reference to a module / function (``torch.nn.functional``)
    layer: str | None = None  # a layer / loss object that applies this neutral op
    layer_out: Value | None = None  # what calling the object returns (nn.Sequential)
    func: ast.AST | None = None  # a user function / class defined in this file
    instance: ast.ClassDef | None = None  # an instance of a class defined in this file
    items: tuple[Value, ...] | None = None  # a tuple's elements (``return probs, logits``)
    picked: bool = False  # elements picked by index (p[range(n), y], p.gather(1, y))
    via: CallSite | None = None  # a parameter's fact, brought by a call site

    @property
    def is_prob(self) -> bool:
        return self.kind in PROB and not self.guarded

    @property
    def may_be_zero(self) -> bool:
        """>= 0 and can be exactly 0 (unguarded)."""
        return not self.guarded and (
            self.kind in MAY_ZERO or (self.kind == "const" and self.lo == 0 == self.hi)
        )

    @property
    def zero_reason(self) -> str:
        return MAY_ZERO.get(self.kind, "zero")

    @property
    def nonneg(self) -> bool:
        return self.lo >= 0

    @property
    def unbounded(self) -> bool:
        """Large positive values are possible and nothing bounds them."""
        return self.kind == "linear" and not self.shifted

    def named(self, name: str) -> Value:
        return replace(self, name=name)


UNKNOWN = Value()


def const(x: float, node: ast.AST) -> Value:
    return Value(kind="const", lo=x, hi=x, node=node, line=getattr(node, "lineno", 0))


def prob(kind: str, node: ast.AST, inner: ast.AST | None, fw: str | None, half: bool) -> Value:
    return Value(
        kind=kind, lo=0.0, hi=1.0, node=node, inner=inner, fw=fw, half=half, line=node.lineno
    )


def result(op: str, args: list[Value], node: ast.AST, fw: str | None, inner=None) -> Value:
    """The value an op produces from its operand values (the transfer table)."""
    a = args[0] if args else UNKNOWN
    half = any(v.half for v in args)
    line = getattr(node, "lineno", 0)

    def mk(kind: str, lo: float = -INF, hi: float = INF, **kw) -> Value:
        return Value(
            kind=kind, lo=lo, hi=hi, node=node, inner=inner, fw=fw, half=half, line=line, **kw
        )

    if op in ("softmax", "sigmoid"):
        return prob(op, node, inner, fw, half)
    if op in ("log_softmax", "logsigmoid"):
        return mk("logprob", -INF, 0.0)
    if op in ("log", "log2", "log10", "log1p"):
        return mk("log", base=a.kind)
    if op == "exp":
        if a.shifted or a.hi <= 0:
            return mk("exp_small", 0.0, 1.0)
        return mk("exp", 0.0, INF, base=a.kind)
    if op in ("relu", "abs"):
        return mk("nonneg", 0.0, INF, base=op)
    if op == "square":
        return mk("square", 0.0, INF, base=a.kind)
    if op == "softplus":
        return mk("pos", 0.0, INF)
    if op == "tanh":
        return mk("tanh", -1.0, 1.0)
    if op in ("norm",):
        if a.kind == "random":
            return mk("pos", 0.0, INF)
        return mk("norm", 0.0, INF, base=a.kind)
    if op == "std":
        return mk("std", 0.0, INF)
    if op == "var":
        return mk("var", 0.0, INF)
    if op == "count_nonzero":
        return mk("count", 0.0, INF)
    if op == "cosine_similarity":
        return mk("cos", -1.0, 1.0)
    if op in ("sum", "mean"):
        return _reduction(op, a, mk)
    if op == "logsumexp":
        return mk("lse")
    if op == "amax":
        return mk("max", a.lo, a.hi, base=a.kind)
    if op in ("matmul", "linear", "conv"):
        if args and all(v.kind == "unit" for v in args):
            return mk("unitdot", -1.0, 1.0)
        return mk("linear")
    if op == "sqrt":
        kind = "norm" if a.kind in ("sqsum", "var", "nonneg", "nonnegsum") else "sqrt"
        return mk(kind, 0.0, INF, guarded=a.guarded)
    if op in ("cross_entropy", "binary_cross_entropy_with_logits", "nll_loss"):
        return mk("loss", 0.0, INF)
    return Value(fw=fw, half=half, node=node, line=line)


def _reduction(op: str, a: Value, mk) -> Value:
    if op == "sum":
        if a.kind in ("exp", "exp_small"):
            return mk("sum_exp", 0.0, INF, base=a.kind)
        if a.kind == "mask":
            return mk("masksum", 0.0, INF)
        if a.kind == "nonneg":
            return mk("nonnegsum", 0.0, INF, base=a.base)
        if a.kind == "square":
            return mk("sqsum", 0.0, INF, base=a.base)
        if a.kind in PROB:
            return mk("probsum", 0.0, INF)
        if a.kind == "unitprod":
            return mk("unitdot", -1.0, 1.0)
        return mk("sum", a.lo if a.lo >= 0 else -INF, INF, base=a.kind)
    if a.kind == "mask":
        return mk("maskmean", 0.0, 1.0)
    if a.kind == "square":
        return mk("sqsum", 0.0, INF, base=a.base)
    return mk("mean", a.lo, a.hi, base=a.kind)


def clip(arg: Value, lo: float, hi: float, node: ast.AST, fw: str | None, hi_is_max=False) -> Value:
    """clip(arg, lo, hi): guarded from 0 when lo > 0; remembers what was clipped."""
    new_lo = max(lo, arg.lo) if lo > -INF else arg.lo
    new_hi = min(hi, arg.hi) if hi < INF else arg.hi
    return Value(
        kind="clip",
        lo=new_lo,
        hi=new_hi,
        base="max" if hi_is_max else arg.kind,
        node=node,
        inner=getattr(arg, "node", None),
        fw=fw,
        half=arg.half,
        line=node.lineno,
        guarded=lo > 0,
        shifted=arg.shifted or new_hi <= 0,
    )


def add(a: Value, b: Value, node: ast.AST) -> Value:
    """a + b: an eps added to a value guards it from 0 (if the dtype keeps the eps)."""
    for x, y in ((a, b), (b, a)):
        if y.kind == "const" and y.lo > 0:
            if x.kind == "exp" or (x.kind == "const" and x.lo == 1):
                # 1 + exp(x): softplus written by hand
                kind = "one_plus_exp" if x.kind == "exp" else "const"
                if kind == "const":
                    return const(x.lo + y.lo, node)
                return Value(
                    kind=kind, lo=1.0, node=node, line=node.lineno, inner=x.node, half=x.half
                )
            lo = x.lo + y.lo if x.lo > -INF else -INF
            return replace(
                x,
                lo=lo,
                hi=x.hi + y.lo,
                guarded=x.lo >= 0 or x.kind in MAY_ZERO or x.is_prob or y.lo <= 1e-3,
                eps=y.lo,
                node=node,
                line=node.lineno,
                name=None,
            )
    if a.kind == "const" and b.kind == "const":
        return const(a.lo + b.lo, node)
    lo = a.lo + b.lo if a.lo > -INF and b.lo > -INF else -INF
    nonneg_zero = a.kind in MAY_ZERO and b.kind in MAY_ZERO
    kind = "nonneg" if nonneg_zero else ("linear" if "linear" in (a.kind, b.kind) else "")
    return Value(
        kind=kind,
        lo=lo,
        node=node,
        line=node.lineno,
        half=a.half or b.half,
        guarded=(a.guarded and b.lo >= 0) or (b.guarded and a.lo >= 0),
    )


def sub(a: Value, b: Value, node: ast.AST) -> Value:
    """a - b: 1 - p keeps the probability's saturation; x - max(x) is safe for exp."""
    line = node.lineno
    half = a.half or b.half
    if a.kind == "const" and a.lo != 1 and abs(a.lo - 1) < 6e-8 and b.kind != "const":
        return Value(
            kind="one_minus",
            lo=0.0,
            hi=1.0,
            base=b.kind,
            node=node,
            inner=b.node,
            line=line,
            half=half,
            fw=b.fw,
            eps=a.lo - 1,
        )
    if a.kind == "const" and a.lo == 1 and b.kind != "const":
        lo, hi = (0.0, 1.0) if b.lo >= 0 and b.hi <= 1 else (-INF, INF)
        return Value(
            kind="one_minus",
            lo=lo,
            hi=hi,
            base=b.kind,
            node=node,
            inner=b.node,
            line=line,
            half=half,
            fw=b.fw,
        )
    if a.kind == "const" and b.kind == "const":
        return const(a.lo - b.lo, node)
    if b.kind in ("max", "lse") or (b.kind == "clip" and b.base == "max"):
        kind = "logprob" if b.kind == "lse" else "shifted"
        return Value(kind=kind, hi=0.0, node=node, line=line, half=half, shifted=True)
    if a.kind == "max" and b.kind == "min":
        return Value(kind="range", lo=0.0, node=node, line=line, half=half)
    if a.kind == "min" and b.kind == "max":
        return Value(kind="shifted", hi=0.0, node=node, line=line, half=half, shifted=True)
    if b.kind == "const" and b.lo > 0 and a.kind != "const":
        keep = a.kind if a.kind in ("linear", "shifted", "logprob", "neg") else ""
        return replace(
            a,
            lo=a.lo - b.lo,
            hi=a.hi - b.lo,
            guarded=False,
            node=node,
            line=line,
            name=None,
            kind=keep,
            eps=None,
            base=a.kind,
        )
    return Value(kind="diff", node=node, line=line, half=half, base=b.kind, inner=b.node)


def mul(a: Value, b: Value, node: ast.AST) -> Value:
    line = node.lineno
    if a.kind == "const" and b.kind == "const":
        return const(a.lo * b.lo, node)
    if a.node is not None and b.node is not None and _same(a, b):
        return Value(kind="square", lo=0.0, node=node, line=line, half=a.half, base=a.kind)
    for x, y in ((a, b), (b, a)):
        if y.kind == "const":
            if y.lo > 0:
                return replace(
                    x,
                    node=node,
                    line=line,
                    name=None,
                    lo=x.lo * y.lo,
                    hi=x.hi * y.lo,
                    kind=x.kind if x.kind not in PROB else "",
                )
            if y.lo < 0 and x.lo >= 0:  # -0.5 * x**2 <= 0
                return Value(hi=0.0, node=node, line=line, half=x.half, shifted=True)
            return Value(node=node, line=line, half=x.half)
    if "linear" in (a.kind, b.kind):
        return Value(kind="linear", node=node, line=line, half=a.half or b.half)
    if (a.hi <= 0 and b.lo >= 0) or (b.hi <= 0 and a.lo >= 0):
        return Value(hi=0.0, node=node, line=line, half=a.half or b.half, shifted=True)
    if a.kind in ("norm", "std") and b.kind in ("norm", "std"):
        return Value(kind="norm", lo=0.0, node=node, line=line, fw=a.fw or b.fw)
    if a.kind == "unit" and b.kind == "unit":
        return Value(kind="unitprod", lo=-1.0, hi=1.0, node=node, line=line)
    if a.kind in PROB and b.kind in PROB:
        return Value(kind="probprod", lo=0.0, hi=1.0, node=node, line=line)
    if a.nonneg and b.nonneg and (a.may_be_zero or b.may_be_zero):
        return Value(kind="nonneg", lo=0.0, node=node, line=line, half=a.half or b.half)
    return Value(node=node, line=line, half=a.half or b.half)


def _same(a: Value, b: Value) -> bool:
    if a.name and a.name == b.name:
        return True
    return ast.dump(a.node) == ast.dump(b.node) if a.node is not b.node else True


def power(a: Value, p: float | None, node: ast.AST) -> Value:
    line = node.lineno
    if p == 2:
        return Value(kind="square", lo=0.0, node=node, line=line, half=a.half, base=a.kind)
    if p is not None and p > 0 and a.nonneg:
        kind = "norm" if a.kind in ("sqsum", "var", "nonnegsum") and p == 0.5 else "nonneg"
        return Value(kind=kind, lo=0.0, node=node, line=line, half=a.half, guarded=a.guarded)
    return Value(node=node, line=line, half=a.half)


def join(a: Value, b: Value) -> Value:
    """The value of a name assigned in two branches: facts both agree on."""
    if a == b:
        return a
    if a.kind and a.kind == b.kind:
        return replace(a, guarded=a.guarded and b.guarded, lo=min(a.lo, b.lo), hi=max(a.hi, b.hi))
    return UNKNOWN
