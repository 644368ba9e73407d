"""Explain one bad op: an :class:`OpRecord` in, a :class:`~nantrap.findings.Diagnosis` out.

Framework-neutral: the torch tracer and the Keras guard both describe the first bad op as
an ``OpRecord`` (framework op name, neutral op from ``nantrap.ops``, phase, module, source,
dtype, input/output :class:`TensorStats`, the records that produced each input). Rules
here read the op table (domain, trap, safe alternative), the float facts and the catalog,
and put the incident in ONE category with numbers.

Rules are tried in order by :func:`diagnose`; each is one function registered with
``@rule`` that returns a Diagnosis or None.

>>> rec = OpRecord(op="Log", neutral_op="log", phase=Phase.FORWARD,
...                inputs=(TensorStats(640, "float32", min=0.0, max=0.9, zeros=37),),
...                outputs=(TensorStats(640, "float32", inf=37, neg_inf=37),))
>>> diagnose(rec).code
'NT103'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nantrap.findings import Category, Diagnosis, Location, Phase, Severity
from nantrap.floats import FloatFormat, float_format
from nantrap.guard.stats import TensorStats
from nantrap.ops import Kind, get_op
from nantrap.traps import get_trap

__all__ = ["OpRecord", "diagnose", "rule"]


@dataclass(frozen=True)
class OpRecord:
    """One recorded op, as every framework edge describes it.

    ``inputs``/``outputs`` are TensorStats; a stats with ``numel == -1`` is a light
    summary (min/max and NaN/Inf presence only, counts unknown). ``producers[i]`` is the
    record that produced input ``i`` (None for a leaf, named in ``leaves[i]``: ``"input 0"``,
    ``"parameter model.fc.weight"``...). Backward ops carry ``node`` (the autograd node) and
    ``forward`` (the forward op that node belongs to).
    """

    op: str
    neutral_op: str | None
    phase: Phase
    module: str | None = None
    path: str | None = None
    line: int | None = None
    source_line: str | None = None
    dtype: str | None = None
    inputs: tuple[TensorStats, ...] = ()
    outputs: tuple[TensorStats, ...] = ()
    scalars: tuple[float, ...] = ()
    producers: tuple[OpRecord | None, ...] = ()
    leaves: tuple[str | None, ...] = ()
    node: str | None = None
    forward: OpRecord | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.neutral_op or self.op

    def where(self) -> str:
        """``softmax in model.head (train.py:41)``."""
        text = self.name
        if self.module:
            text += f" in {self.module}"
        if self.path:
            text += f" ({_short(self.path)}:{self.line})"
        return text

    def producer(self, i: int) -> OpRecord | None:
        """The meaningful producer of input ``i``: views, copies and indexing skipped."""
        rec = self.producers[i] if i < len(self.producers) else None
        while rec is not None and _passthrough(rec) and rec.producers:
            rec = rec.producers[0]
        return rec


Rule = Callable[[OpRecord], "_Verdict | None"]
_RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    """Register a diagnosis rule (tried in registration order); refuse duplicates."""
    if any(r.__name__ == fn.__name__ for r in _RULES):
        raise RuntimeError(f"diagnosis rule {fn.__name__} is registered twice")
    _RULES.append(fn)
    return fn


@dataclass
class _Verdict:
    code: str
    message: str
    evidence: dict[str, Any]
    fix: str | None = None
    phase: Phase | None = None
    category: Category | None = None


def diagnose(record: OpRecord, *, step: int | None = None, rank: int | None = None) -> Diagnosis:
    """Put the first bad op in one category, with evidence numbers and a fix."""
    verdict = None
    for r in _RULES:
        verdict = r(record)
        if verdict is not None:
            break
    if verdict is None:
        verdict = _unexplained(record)
    trap = get_trap(verdict.code)
    anchor = record.forward if record.phase is Phase.BACKWARD and record.forward else record
    location = Location(
        path=anchor.path,
        line=anchor.line,
        source_line=anchor.source_line,
        module=anchor.module,
        node=record.node,
        op=anchor.op,
        neutral_op=anchor.neutral_op,
        phase=verdict.phase or record.phase,
        step=step,
        rank=rank,
    )
    evidence = {
        "op": record.op,
        "dtype": record.dtype,
        "inputs": [s.to_dict() for s in record.inputs],
        "outputs": [s.to_dict() for s in record.outputs],
        **verdict.evidence,
    }
    if record.node:
        evidence["autograd_node"] = record.node
    return Diagnosis(
        code=verdict.code,
        message=verdict.message,
        location=location,
        severity=Severity.ERROR,
        category=verdict.category or trap.category,
        evidence=evidence,
        fix=verdict.fix or _first_paragraph(trap.fix),
    )


# --- rules, in order --------------------------------------------------------------------


_RUNNING_STATS = (".running_var", ".running_mean", ".moving_variance", ".moving_mean")


@rule
def _bad_leaf(rec: OpRecord) -> _Verdict | None:
    """A non-finite tensor that no traced op produced: the batch (NT401) or the state (NT403)."""
    for i, s in enumerate(rec.inputs):
        if s.finite or i >= len(rec.producers) or rec.producers[i] is not None:
            continue
        leaf = rec.leaves[i] if i < len(rec.leaves) else None
        counts = _counts(s)
        if leaf and leaf.split()[0] in ("parameter", "buffer"):
            name = leaf.split(maxsplit=1)[1]
            message = f"{leaf} already holds {counts} before this step; it reaches "
            message += f"{rec.where()} as input {i}"
            fix = None
            if name.endswith(_RUNNING_STATS):
                # NB: BatchNorm writes these in every training forward: an earlier step did
                message += (
                    "; BatchNorm writes its running statistics in every training forward, so "
                    "an earlier step's forward put it there (activations whose variance "
                    "overflowed: weights grown by too high a learning rate)"
                )
                fix = (
                    "Roll back to a finite state (nantrap's rollback does this) and lower the "
                    "learning rate; check the activations feeding this BatchNorm."
                )
            return _Verdict(
                "NT403",
                message,
                {"tensor": name, "stats": s.to_dict()},
                fix=fix,
                phase=Phase.FORWARD,
            )
        what = "the model input" if leaf and leaf.startswith("input") else "a data tensor"
        if _is_loss(rec) and i > 0:
            what = "the target"
        return _Verdict(
            "NT401",
            f"{what} holds {counts}: it enters {rec.where()} (input {i}); every value it "
            "touches becomes non-finite",
            {"tensor": leaf or "tensor", "stats": s.to_dict()},
            phase=Phase.DATA,
        )
    return None


@rule
def _target_range(rec: OpRecord) -> _Verdict | None:
    """Targets outside the loss's range: BCE targets not in [0, 1], class index >= C."""
    if not _is_loss(rec) or len(rec.inputs) < 2:
        return None
    pred, target = rec.inputs[0], rec.inputs[1]
    name = rec.op.split(".")[1] if rec.op.startswith("aten.") else rec.name
    if "binary_cross_entropy" in name and target.numel >= 0 and (target.min < 0 or target.max > 1):
        return _Verdict(
            "NT402",
            f"{name} got targets in [{target.min:.4g}, {target.max:.4g}], outside [0, 1]"
            f" ({rec.where()})",
            {"target": target.to_dict(), "allowed": [0, 1]},
            phase=Phase.DATA,
        )
    if "nll_loss" in name and pred.shape and target.numel >= 0:
        classes = pred.shape[1] if len(pred.shape) > 1 else pred.shape[0]
        if target.max >= classes or (target.min < 0 and target.min != -100):
            raised = f"; {rec.error}" if rec.error else ""
            return _Verdict(
                "NT402",
                f"the targets of {rec.where()} hold class indices in [{target.min:.0f}, "
                f"{target.max:.0f}] for {classes} classes (valid: 0..{classes - 1}){raised}",
                {"target": target.to_dict(), "classes": classes},
                phase=Phase.DATA,
            )
    return None


@rule
def _absorbed_epsilon(rec: OpRecord) -> _Verdict | None:
    """An eps meant to keep a domain op away from its pole was rounded away by the dtype."""
    op = _op(rec)
    if op is None or op.domain is None or not rec.inputs:
        return None
    arg = min(op.domain.arg, len(rec.inputs) - 1)
    if _inside_domain(rec.inputs[arg], op) is not False:
        return None
    for chain in _chain(rec.producer(arg), depth=4):
        fmt = _format(chain.dtype)
        if fmt is None:
            continue
        for s in chain.scalars:
            anchor = float(round(s))
            eps = abs(s - anchor)
            if s == 0 or eps == 0:
                continue
            if anchor == 0 and chain.name in ("add", "sub") and abs(s) < fmt.smallest_subnormal / 2:
                return _Verdict(
                    "NT202",
                    f"the epsilon {s:g} in {chain.where()} is 0 in {fmt.name} (smallest "
                    f"subnormal {fmt.smallest_subnormal:.3g}), so the input of {rec.where()} "
                    f"is {_domain_miss(rec.inputs[arg], op)}",
                    {"epsilon": s, "dtype": fmt.name, "smallest": fmt.smallest_subnormal},
                    phase=Phase.FORWARD,
                )
            if anchor != 0 and fmt.absorbs(eps, anchor):
                return _Verdict(
                    "NT107",
                    f"{s!r} in {chain.where()} rounds to {anchor:g} in {fmt.name} (spacing "
                    f"near {anchor:g} is {fmt.eps * abs(anchor):.3g}): the epsilon {eps:.3g} "
                    f"is absorbed, so the input of {rec.where()} is "
                    f"{_domain_miss(rec.inputs[arg], op)}",
                    {"scalar": s, "epsilon": eps, "dtype": fmt.name, "spacing": fmt.eps},
                    phase=Phase.FORWARD,
                )
    return None


@rule
def _backward_pole(rec: OpRecord) -> _Verdict | None:
    """A backward op made Inf/NaN from finite values: name the forward op it belongs to."""
    if rec.phase is not Phase.BACKWARD or rec.forward is None:
        return None
    fwd = rec.forward
    op = _op(fwd)
    zeros = max((s.zeros for s in rec.inputs if s.numel >= 0), default=0)
    numel = max((s.numel for s in rec.inputs if s.numel >= 0), default=-1)
    where = fwd.where()
    node = rec.node or "its backward"
    x = fwd.inputs[0] if fwd.inputs else None
    at = f" (forward input min {x.min:.4g})" if x is not None and not math.isnan(x.min) else ""
    base = {"backward_op": rec.op, "zeros": zeros, "numel": numel}
    if fwd.name in ("sqrt", "norm", "std", "rsqrt", "pow"):
        return _Verdict(
            "NT111",
            f"the gradient of {where} is infinite: {node} divides by the forward value, "
            f"which is exactly 0 in {zeros} of {numel} elements{at}; inf * 0 then gives NaN "
            "upstream",
            base,
            fix=op.safe_alternative if op is not None else None,
        )
    if fwd.name in ("log", "log1p", "log2", "log10", "div", "reciprocal"):
        code = "NT110" if fwd.name in ("div", "reciprocal") else "NT103"
        return _Verdict(
            code,
            f"the gradient of {where} is non-finite: {node} divides by a value that is "
            f"exactly 0 in {zeros} of {numel} elements{at}, though the forward result was "
            "masked or finite",
            base,
        )
    if fwd.name in ("acos", "asin", "atanh"):
        reached = f": its input reached [{x.min:.4g}, {x.max:.4g}]" if x is not None else ""
        return _Verdict("NT114", f"the gradient of {where} is infinite at ±1{reached}", base)
    return None


@rule
def _domain(rec: OpRecord) -> _Verdict | None:
    """An op left its domain: log(0), sqrt(-1), x / 0, acos(1.2), pow(-1, 0.5)."""
    op = _op(rec)
    if op is None or not rec.inputs or rec.phase is Phase.BACKWARD:
        return None
    if op.name == "pow":
        return _fractional_pow(rec)
    if op.domain is None:
        return None
    if op.name == "div" and len(rec.inputs) == 1:  # div.Scalar: the divisor is a constant
        if rec.scalars and rec.scalars[0] == 0:
            return _Verdict("NT110", f"{rec.where()} divides by the constant 0", {"divisor": 0})
        return None
    arg = min(op.domain.arg, len(rec.inputs) - 1)
    x = rec.inputs[arg]
    if _inside_domain(x, op) is not False:
        return None
    miss = _domain_miss(x, op)
    producer = rec.producer(arg)
    ev: dict[str, Any] = {"input": x.to_dict(), "domain": op.domain.describe()}
    if producer is not None:
        ev["producer"] = {
            "op": producer.op,
            "neutral_op": producer.neutral_op,
            "module": producer.module,
            "path": producer.path,
            "line": producer.line,
        }
    is_log = op.name in ("log", "log2", "log10", "log1p")
    if is_log and producer is not None and producer.name == "softmax":
        return _Verdict(
            "NT101",
            f"input of {rec.where()} is the output of {producer.where()}, which underflowed "
            f"to {miss}: log(0) = -inf",
            ev,
            fix="take log_softmax of the logits that feed this softmax (or use "
            "cross_entropy on them) instead of log(softmax(...)); do not clamp p",
        )
    sig = _sigmoid_in(producer) if is_log else None
    if sig is not None:
        side = "sigmoid" if sig is producer else "1 - sigmoid"
        return _Verdict(
            "NT104",
            f"input of {rec.where()} is {side}(x) from {sig.where()}, which saturated: "
            f"{miss}, so log gives -inf",
            {**ev, "sigmoid_one_above": _sig_one(sig.dtype)},
            fix="use logsigmoid(x) for log(sigmoid(x)) and logsigmoid(-x) for "
            "log(1 - sigmoid(x)), or binary_cross_entropy_with_logits",
        )
    provenance = f"; it is the output of {producer.where()}" if producer is not None else ""
    return _Verdict(
        op.trap or "NT903",
        f"input of {rec.where()} is {miss} (domain {op.domain.describe()}){provenance}",
        ev,
        fix=op.safe_alternative,
    )


@rule
def _overflow(rec: OpRecord) -> _Verdict | None:
    """A finite input became Inf: exp / matmul / sum past the dtype's max."""
    if not rec.outputs or not any(s.inf for s in rec.outputs):
        return None
    if any(not s.finite for s in rec.inputs):
        return None
    fmt = _format(rec.dtype)
    if fmt is None:
        return None
    op = _op(rec)
    big = max(
        (max(abs(s.min), abs(s.max)) for s in rec.inputs if not math.isnan(s.min)), default=math.nan
    )
    ev = {"dtype": fmt.name, "dtype_max": fmt.max, "input_max_abs": big}
    # NB: bfloat16 keeps float32's exponent range: what overflows it overflows float32 too
    half = fmt.max < float_format("float32").max / 2
    fp32 = float_format("float32")
    exp_like = op is not None and op.name in ("exp", "expm1", "cosh", "sinh")
    if exp_like:
        ev["threshold"] = fmt.exp_overflow
        fits = big < fp32.exp_overflow
    else:
        fits = True  # float16's max (65504) is far below float32's
    if half and fits:
        return _Verdict(
            "NT201",
            f"{rec.where()} overflowed {fmt.name} (max {fmt.max:.6g}) from inputs up to "
            f"{big:.4g}; the same value fits in float32",
            ev,
            phase=rec.phase,
        )
    if exp_like:
        return _Verdict(
            "NT113",
            f"{rec.where()} got inputs up to {big:.4g}; exp overflows {fmt.name} above "
            f"{fmt.exp_overflow:.2f} (max {fmt.max:.4g})",
            ev,
            fix=op.safe_alternative if op else None,
        )
    return _Verdict(
        "NT116",
        f"{rec.where()} overflowed {fmt.name} (max {fmt.max:.4g}) from finite inputs up to "
        f"{big:.4g}",
        ev,
    )


def _fractional_pow(rec: OpRecord) -> _Verdict | None:
    base = rec.inputs[0]
    exps = [s for s in rec.scalars if not float(s).is_integer()]
    if base.numel != 0 and (base.negatives > 0 or base.min < 0) and exps:
        return _Verdict(
            "NT115",
            f"{rec.where()} raises negative values (min {base.min:.4g}) to the fractional "
            f"power {exps[0]:g}: NaN",
            {"base": base.to_dict(), "exponent": exps[0]},
        )
    return None


def _unexplained(rec: OpRecord) -> _Verdict:
    out = next((s for s in rec.outputs if not s.finite), None)
    what = _counts(out) if out is not None else "a non-finite value"
    return _Verdict(
        "NT903",
        f"{rec.where()} produced {what} from finite inputs; no rule explains it"
        + (f" ({rec.error})" if rec.error else ""),
        {},
        category=Category.COVERAGE,
    )


# --- helpers ------------------------------------------------------------------------------

_PASSTHROUGH = (
    "view",
    "_unsafe_view",
    "reshape",
    "t",
    "transpose",
    "permute",
    "expand",
    "squeeze",
    "unsqueeze",
    "slice",
    "select",
    "gather",
    "index",
    "clone",
    "contiguous",
    "_to_copy",
    "alias",
    "detach",
    "as_strided",
    "narrow",
    "split",
    "split_with_sizes",
    "unbind",
    "index_select",
    "masked_select",
    "take_along_dim",
    "Identity",
    "Reshape",
    "GatherV2",
    "StridedSlice",
    "Cast",
    "Squeeze",
    "ExpandDims",
    "Transpose",
    "clamp",
    "clip",
    "clamp_min",
    "clamp_max",
    "ClipByValue",
)


def _passthrough(rec: OpRecord) -> bool:
    base = rec.op.split(".")[1] if rec.op.startswith("aten.") else rec.op
    return base.rstrip("_") in _PASSTHROUGH or rec.neutral_op == "clip"


def _op(rec: OpRecord | None):
    if rec is None or rec.neutral_op is None:
        return None
    try:
        return get_op(rec.neutral_op)
    except KeyError:
        return None


def _is_loss(rec: OpRecord) -> bool:
    op = _op(rec)
    return (op is not None and op.kind is Kind.LOSS) or "loss" in rec.op.lower()


def _format(dtype: str | None) -> FloatFormat | None:
    if not dtype:
        return None
    try:
        return float_format(dtype)
    except ValueError:
        return None


def _inside_domain(x: TensorStats, op) -> bool | None:
    """False if ``x`` holds values outside ``op``'s domain; None if unknown."""
    d = op.domain
    if x.numel < 0 and math.isnan(x.min):
        return None
    if d.nonzero and x.zeros > 0:
        return False
    if not math.isnan(x.min) and not d.contains(x.min):
        return False
    if not math.isnan(x.max) and not d.contains(x.max):
        return False
    return not (d.lo == 0 and d.lo_open and x.zeros > 0)


def _domain_miss(x: TensorStats, op) -> str:
    """``exactly 0 in 37 of 640 elements`` / ``negative in 3 of 64 (min -0.2)``."""
    d = op.domain
    n = f" of {x.numel}" if x.numel >= 0 else ""
    if (d.nonzero or (d.lo == 0 and d.lo_open)) and x.zeros > 0:
        return f"exactly 0 in {x.zeros}{n} elements"
    if d.lo == 0 and x.negatives > 0:
        return f"negative in {x.negatives}{n} elements (min {x.min:.4g})"
    return f"outside {d.describe()} (range [{x.min:.4g}, {x.max:.4g}])"


def _chain(rec: OpRecord | None, depth: int):
    """``rec`` and its producers (first input), ``depth`` levels, including passthroughs."""
    seen = 0
    while rec is not None and seen < depth:
        yield rec
        rec = rec.producers[0] if rec.producers else None
        seen += 1


def _sigmoid_in(rec: OpRecord | None, depth: int = 4) -> OpRecord | None:
    """The sigmoid behind ``rec``: rec itself, or reached through 1 - p, -p, p + c and
    views/clamps, following every tensor operand."""
    if rec is None or depth == 0:
        return None
    if rec.name == "sigmoid":
        return rec
    if rec.name not in ("sub", "add", "neg") and not _passthrough(rec):
        return None
    for producer in rec.producers:
        found = _sigmoid_in(producer, depth - 1)
        if found is not None:
            return found
    return None


def _sig_one(dtype: str | None) -> float | None:
    fmt = _format(dtype)
    return fmt.sigmoid_one if fmt else None


def _counts(s: TensorStats) -> str:
    if s.numel < 0:
        kinds = [k for k, v in (("NaN", s.nan), ("Inf", s.inf)) if v]
        return " and ".join(kinds) or "non-finite values"
    parts = []
    if s.nan:
        parts.append(f"{s.nan} NaN")
    if s.inf:
        parts.append(f"{s.inf} Inf")
    return " and ".join(parts) + f" of {s.numel} elements"


def _short(path: str) -> str:
    import os

    return os.path.basename(path)


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())
