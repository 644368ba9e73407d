"""Turn an interpreter run into the per-layer table and Findings with provenance and fixes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nantrap.analyze._interpreter import Run, dtype_format, unsupported_message
from nantrap.analyze.interval import Interval
from nantrap.analyze.ir import Graph, Node
from nantrap.analyze.transfer import Hazard
from nantrap.findings import Finding, Location, Phase, Severity
from nantrap.ops import get_op
from nantrap.traps import get_trap

LOGS = ("log", "log2", "log10")
PASS_THROUGH = ("reshape", "cast", "cat")  # looked through when naming a value's producer


@dataclass(frozen=True)
class Layer:
    """One row of the per-layer table."""

    node: str
    module: str | None
    op: str  # neutral name, or the framework's op when unknown
    lo: float
    hi: float
    dtype: str | None
    flags: tuple[str, ...] = ()
    source: str | None = None

    @property
    def interval(self) -> Interval:
        return Interval(self.lo, self.hi)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "module": self.module,
            "op": self.op,
            "range": [self.lo, self.hi],
            "dtype": self.dtype,
            "flags": list(self.flags),
            "source": self.source,
        }


def layers(graph: Graph, run: Run) -> list[Layer]:
    fed = set()  # nodes that depend on a model input; the rest compute weights
    for node in graph.nodes:
        if node.kind == "input" or any(i in fed for i in node.inputs if i is not None):
            fed.add(node.name)
    rows = []
    for node in graph.nodes:
        if node.kind != "op" or node.name in run.constant or node.name not in fed:
            continue
        iv = run.intervals[node.name]
        rows.append(
            Layer(
                node.name,
                node.module,
                node.neutral if node.neutral and node.name not in run.unsupported else node.op,
                iv.lo,
                iv.hi,
                node.dtype,
                _flags(node, iv, run),
                node.source,
            )
        )
    return rows


def _single(node: Node) -> bool:
    if node.neutral != "softmax" or not node.shape:
        return False
    try:
        return node.shape[node.attrs.get("dim", -1)] == 1
    except (IndexError, TypeError):
        return False


def _flags(node: Node, iv: Interval, run: Run) -> tuple[str, ...]:
    flags = []
    if node.name in run.unsupported:
        flags.append("unknown")
    if node.neutral and node.name not in run.unsupported and not _single(node):
        op = get_op(node.neutral)
        lo, hi = op.output_range
        if (op.saturates and iv.is_finite) or (op.saturates and node.neutral == "exp"):
            if lo > -math.inf and iv.lo == lo:
                flags.append(f"reaches {lo:g}")
            if hi < math.inf and iv.hi == hi:
                flags.append(f"reaches {hi:g}")
    if any(h.nonfinite and not h.grad for h in run.hazards.get(node.name, ())):
        flags.append("nan/inf")
    elif not iv.is_finite and node.name not in run.unsupported and dtype_format(node.dtype):
        flags.append("inf")
    return tuple(flags)


# --- findings ---------------------------------------------------------------------------------


class _View:
    """Graph lookups the finding builder needs (index, producers, parameters upstream)."""

    def __init__(self, graph: Graph, run: Run) -> None:
        self.graph, self.run = graph, run
        self.index = {n.name: n for n in graph.nodes}

    def producer(self, name: str | None) -> Node | None:
        """The op behind a value, looking through reshape/cast."""
        node = self.index.get(name) if name else None
        while node is not None and node.neutral in PASS_THROUGH and node.inputs:
            node = self.index.get(node.inputs[0]) if node.inputs[0] else None
        return node

    def label(self, node: Node) -> str:
        what = node.neutral or node.op
        if node.kind == "input":
            what = f"input {node.name}"
        elif node.kind in ("param", "const"):
            what = f"{node.kind} {node.name}"
        return f"{what} {node.module}" if node.module and node.kind == "op" else what

    def path(self, node: Node, arg: int = 0, hops: int = 4) -> list[str]:
        """``["log", "softmax", "linear head.fc"]``: the value's provenance, newest first."""
        out = [self.label(node)]
        cur, i = node, arg
        for _ in range(hops):
            if not cur.inputs or i >= len(cur.inputs) or cur.inputs[i] is None:
                break
            nxt = self.producer(cur.inputs[i])
            if nxt is None:
                break
            out.append(self.label(nxt))
            if nxt.kind != "op":
                break
            cur, i = nxt, self._main_input(nxt)
        return out

    def _main_input(self, node: Node) -> int:
        """Follow the data, not the weights: the first input that is not a param/const."""
        for i, name in enumerate(node.inputs):
            if name is not None and self.index[name].kind not in ("param", "const"):
                return i
        return 0

    def params_upstream(self, name: str) -> list[str]:
        seen, stack, found = set(), [name], []
        while stack:
            cur = self.index[stack.pop()]
            for i in cur.inputs:
                if i is None or i in seen:
                    continue
                seen.add(i)
                if self.index[i].kind == "param":
                    found.append(i)
                stack.append(i)
        return sorted(found)


def findings(graph: Graph, run: Run) -> list[Finding]:
    view = _View(graph, run)
    out: list[Finding] = []
    for node in graph.nodes:
        hazards = run.hazards.get(node.name, [])
        for hazard in hazards:
            finding = _from_hazard(view, node, hazard)
            if finding is not None:
                out.append(finding)
        if node.neutral in LOGS and node.name not in run.unsupported:
            out.extend(_log_patterns(view, node, hazards))
        saturation = _saturation(view, node)
        if saturation is not None:
            out.append(saturation)
    if run.unsupported:
        out.append(_coverage(graph, run))
    return out


def _location(node: Node, phase: Phase) -> Location:
    path, line = None, None
    if node.source and ":" in node.source:
        path, _, rest = node.source.rpartition(":")
        line = int(rest) if rest.isdigit() else None
    return Location(
        path=path,
        line=line,
        module=node.module,
        node=node.name,
        op=node.op,
        neutral_op=node.neutral,
        phase=phase,
    )


def _from_hazard(view: _View, node: Node, hazard: Hazard) -> Finding | None:
    run = view.run
    code = hazard.code
    producer = view.producer(node.inputs[hazard.arg]) if node.inputs else None
    if node.neutral in LOGS and code == "NT103" and producer is not None:
        code = {"softmax": "NT101", "sigmoid": "NT104"}.get(producer.neutral, code)
    path = view.path(node, hazard.arg)
    evidence: dict[str, Any] = dict(hazard.evidence)
    arg_name = node.inputs[hazard.arg] if hazard.arg < len(node.inputs) else None
    if arg_name is not None:
        evidence["input_range"] = run.intervals[arg_name].to_list()
    evidence["output_range"] = run.intervals[node.name].to_list()
    evidence["dtype"] = node.dtype
    evidence["path"] = path
    phase = Phase.BACKWARD if hazard.grad else Phase.FORWARD
    if hazard.grad:
        params = view.params_upstream(node.name)
        if not params:
            return None  # no parameter's gradient passes through this op
        evidence["parameters"] = params
    trap = get_trap(code)
    severity = hazard.severity or (Severity.WARNING if hazard.grad else trap.severity)
    where = f"{node.neutral or node.op} ({node.name}{', ' + node.module if node.module else ''})"
    text = f"{where}: {hazard.message}; path {' ← '.join(path)}"
    if code == "NT110" and producer is not None and producer.neutral == "norm":
        inner = run.intervals[producer.inputs[0]] if producer.inputs[0] else Interval(0, 0)
        if inner.lo < 0 < inner.hi:  # zero only if every element is exactly 0 at once
            severity = Severity.WARNING
            text += "; the norm is 0 only when the whole vector is 0"
    unknown = sorted(run.tainted.get(arg_name, ())) if arg_name else []
    if unknown:  # the range is the unknown one of an op we could not follow: not proven
        evidence["depends_on_unsupported"] = unknown
        severity = Severity.WARNING if severity == Severity.ERROR else severity
        text += f"; unproven: the input's range depends on unsupported {', '.join(unknown[:3])}"
    if hazard.grad:
        shown = ", ".join(evidence["parameters"][:4])
        more = len(evidence["parameters"]) - 4
        text += f"; backward reaches {shown}{f' and {more} more' if more > 0 else ''}"
    return Finding(
        code=code,
        message=text,
        location=_location(node, phase),
        severity=severity,
        evidence=evidence,
        fix=hazard.fix or _fix(code, node, producer, run),
        engine="analyze",
    )


def _fix(code: str, node: Node, producer: Node | None, run: Run) -> str:
    where = f" in {producer.module}" if producer is not None and producer.module else ""
    if producer is None:
        arg = "its input"
    elif producer.kind != "op":
        arg = f"{producer.kind} {producer.name}"
    else:
        arg = f"{producer.neutral or producer.op}{where}"
    fixes = {
        "NT101": "replace log(softmax(x)) by log_softmax(x), or compute the loss from the "
        "logits with cross_entropy (tf.nn.softmax_cross_entropy_with_logits)",
        "NT104": "replace log(sigmoid(x)) by logsigmoid(x); for a loss use "
        "binary_cross_entropy_with_logits on the logits",
        "NT103": f"make {arg} positive by design (softplus/exp output), or move the log "
        "into a stable op (log_softmax, logsigmoid, log1p); do not clip (NT102)",
        "NT110": f"keep the divisor {arg} away from 0: divide by (y + eps) with an eps the "
        "dtype keeps, or by clamp_min(y, eps)",
        "NT112": f"make the input of {node.neutral} non-negative by design ({arg} can be "
        "negative), e.g. sqrt(x * x + eps) or a softplus",
        "NT111": f"add an eps inside the root: sqrt({arg} + eps), or use a norm with eps",
        "NT113": "bound the input of exp (it overflows above the dtype's log(max)), or "
        "use logsumexp/softplus/log_softmax",
        "NT114": f"keep {arg} strictly inside (-1, 1): clamp(x, -1 + eps, 1 - eps), or use atan2",
        "NT115": "raise only non-negative bases to fractional powers (x.clamp_min(0) or "
        "abs(x)), or use an integer power",
        "NT116": f"rescale {arg}: normalize its input (LayerNorm/BatchNorm), lower the weight "
        "scale, or accumulate in float32",
        "NT201": "compute this op in float32 (autocast keeps it there) or rescale its input "
        "to stay below the half-precision max 65504",
        "NT202": "use an eps the dtype can hold (>= 1e-5 for float16), or normalize in float32",
        "NT106": "pass logits to binary_cross_entropy_with_logits instead of probabilities",
    }
    return fixes.get(code, get_trap(code).fix)


def _log_patterns(view: _View, node: Node, hazards: list[Hazard]) -> list[Finding]:
    """log(softmax), log(sigmoid), log(clip(...)): reported even when this range is safe."""
    producer = view.producer(node.inputs[0]) if node.inputs else None
    if producer is None or producer.kind != "op":
        return []
    run = view.run
    x = run.intervals[node.inputs[0]]
    fmt = dtype_format(node.dtype)
    if _is_clip(view, producer):
        return [
            Finding(
                code="NT102",
                message=f"log ({node.name}) of a clip ({producer.name}): clipped elements get "
                f"no gradient, so the loss stays finite while the model stops learning; "
                f"path {' ← '.join(view.path(node))}",
                location=_location(node, Phase.FORWARD),
                severity=Severity.WARNING,
                evidence={"input_range": x.to_list(), "path": view.path(node)},
                fix=_fix("NT101", node, producer, run)
                + "; drop the clip once the log is computed stably",
                engine="analyze",
            )
        ]
    code = {"softmax": "NT101", "sigmoid": "NT104"}.get(producer.neutral or "")
    if code is None or any(h.code == "NT103" for h in hazards):
        return []
    src = producer.inputs[0] if producer.inputs else None
    logits = run.intervals[src] if src else Interval.unknown()
    limit = _spread_limit(producer, fmt)
    bound = logits.width if producer.neutral == "softmax" else -logits.lo
    what = "logit spread" if producer.neutral == "softmax" else "-logit"
    return [
        Finding(
            code=code,
            message=f"log ({node.name}) of a {producer.neutral} ({producer.name}): finite for "
            f"the current ranges ({what} <= {bound:.4g}), but {producer.neutral} rounds to "
            f"exactly 0 in {fmt.name if fmt else 'the dtype'} once the {what} passes "
            f"{limit:.4g}, and training moves the logits; path {' ← '.join(view.path(node))}",
            location=_location(node, Phase.FORWARD),
            severity=Severity.WARNING,
            evidence={
                "input_range": x.to_list(),
                "logit_range": logits.to_list(),
                "safe_while": f"{what} < {limit:.6g}",
                "path": view.path(node),
            },
            fix=_fix(code, node, producer, run),
            engine="analyze",
        )
    ]


def _is_clip(view: _View, node: Node) -> bool:
    """clip, or max/min against a constant (TF's clip_by_value is Minimum + Maximum)."""
    if node.neutral == "clip":
        return True
    if node.neutral not in ("maximum", "minimum"):
        return False
    return any(
        (i is not None and view.index[i].kind == "const") or i in view.run.constant
        for i in node.inputs
    )


def _spread_limit(producer: Node, fmt) -> float:
    """Where softmax/sigmoid first rounds to exactly 0 in the dtype."""
    if fmt is None:
        return math.inf
    if producer.neutral == "sigmoid":
        return fmt.exp_overflow
    n = producer.shape[producer.attrs.get("dim", -1)] if producer.shape else 2
    return -fmt.exp_underflow - math.log(max(n - 1, 1))


def _saturation(view: _View, node: Node) -> Finding | None:
    if node.neutral not in ("sigmoid", "softmax", "tanh") or node.name in view.run.unsupported:
        return None
    iv = view.run.intervals[node.name]
    if _single(node):  # a softmax over one element is exactly 1 by definition
        return None
    lo, hi = get_op(node.neutral).output_range
    ends = [v for v in (lo, hi) if v in (iv.lo, iv.hi)]
    if not ends:
        return None
    code = "NT204" if node.neutral == "softmax" else "NT203"
    src = node.inputs[0] if node.inputs else None
    x = view.run.intervals[src] if src else Interval.unknown()
    if x.lo == -math.inf and node.neutral == "softmax":
        return None  # a -inf mask (causal attention) makes exact 0s on purpose
    return Finding(
        code=code,
        message=f"{node.neutral} ({node.name}{', ' + node.module if node.module else ''}) "
        f"rounds to exactly {' and '.join(f'{v:g}' for v in ends)} in {node.dtype} for inputs "
        f"in {x.describe()}: its gradient vanishes there, and a later log or 1 - p is not "
        "finite",
        location=_location(node, Phase.FORWARD),
        severity=Severity.INFO,
        evidence={"input_range": x.to_list(), "output_range": iv.to_list()},
        fix="keep the logits and use a loss on logits; normalize the input of the "
        f"{node.neutral} so it stays out of the saturated region",
        engine="analyze",
    )


def _coverage(graph: Graph, run: Run) -> Finding:
    ops = sorted({reason for reason in run.unsupported.values()})
    return Finding(
        code="NT902",
        message=unsupported_message(graph, run.unsupported)
        + "; their outputs got the unknown range",
        location=Location(node=next(iter(run.unsupported))),
        severity=Severity.INFO,
        evidence={"ops": ops, "nodes": sorted(run.unsupported)},
        fix="use --strict to make this an error; report the ops so a transfer function "
        "can be added",
        engine="analyze",
    )
