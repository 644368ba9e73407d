"""One pass over an IR graph: an interval per node, the hazards each op saw, the gaps.

The interpreter reads the graph and returns new data (:class:`Run`); it never writes into
the graph. Nodes whose op has no transfer function get the unknown interval and are
collected (all of them) into ``Run.unsupported``.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nantrap.analyze import _relations as relations
from nantrap.analyze.interval import Interval
from nantrap.analyze.ir import Graph, Node
from nantrap.analyze.transfer import Ctx, Hazard, apply, get_transfer
from nantrap.errors import AnalysisError, UnsupportedOpError
from nantrap.floats import FloatFormat, float_format
from nantrap.ops import get_op

# ops whose const inputs are folded to a const output (weights scaled, masks built)
_FOLD_KINDS = ("elementwise", "binary", "activation")
# ops whose reference stands in for a family (compare: eq/lt/..., round: floor/ceil/...)
_NO_FOLD = ("compare", "round", "cast")


@dataclass
class Run:
    """What one pass produced, keyed by node name."""

    intervals: dict[str, Interval] = field(default_factory=dict)
    hazards: dict[str, list[Hazard]] = field(default_factory=dict)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)  # node -> reason
    constant: set[str] = field(default_factory=set)  # op nodes whose value is known (weights)
    tainted: dict[str, set[str]] = field(default_factory=dict)  # node -> unsupported upstream
    defaulted_inputs: list[str] = field(default_factory=list)


def dtype_format(dtype: str | None) -> FloatFormat | None:
    if not dtype:
        return None
    try:
        return float_format(dtype)
    except ValueError:
        return None


def dtype_range(dtype: str | None) -> Interval:
    """The finite range of a dtype: [-max, max] for floats, the integer range, [0, 1] bool."""
    fmt = dtype_format(dtype)
    if fmt is not None:
        return Interval(-fmt.max, fmt.max)
    if dtype and "bool" in dtype:
        return Interval(0.0, 1.0)
    if dtype:
        with contextlib.suppress(TypeError):  # not an integer dtype either
            info = np.iinfo(np.dtype(dtype.replace("torch.", "")))
            return Interval(float(info.min), float(info.max))
    return Interval.unknown()


def interpret(
    graph: Graph,
    input_ranges: Mapping[str, Interval],
    *,
    weight_bound: float | None = None,
    strict: bool = False,
) -> Run:
    """Propagate intervals through ``graph`` from ``input_ranges`` (missing: dtype range)."""
    run = Run()
    consts: dict[str, np.ndarray] = {}
    index = {n.name: n for n in graph.nodes}
    for node in graph.nodes:
        if node.kind == "input":
            if node.name in input_ranges:
                run.intervals[node.name] = input_ranges[node.name]
            else:
                run.intervals[node.name] = dtype_range(node.dtype)
                if dtype_format(node.dtype) is not None:
                    run.defaulted_inputs.append(node.name)
            run.facts[node.name] = {}
            continue
        if node.kind in ("param", "const"):
            value = graph.values.get(node.name)
            if node.kind == "param" and weight_bound is not None:
                run.intervals[node.name] = Interval(-weight_bound, weight_bound)
            elif value is None and node.inputs and node.inputs[0] in run.intervals:
                run.intervals[node.name] = run.intervals[node.inputs[0]]  # its initializer
            elif value is None:
                run.intervals[node.name] = dtype_range(node.dtype)
            else:
                arr = np.asarray(value)
                if arr.dtype.kind != "f" or arr.size <= 1 << 20:
                    arr = arr.astype(np.float64)
                consts[node.name] = arr
                run.intervals[node.name] = Interval.hull(arr) if arr.size else Interval(0, 0)
            run.facts[node.name] = {}
            continue
        _step(graph, index, node, run, consts, strict)
    run.constant = {n for n in consts if index[n].kind == "op"}
    for node in graph.nodes:  # which values depend on an op we could not follow
        up = set().union(*(run.tainted.get(i, set()) for i in node.inputs if i is not None))
        if node.name in run.unsupported:
            up = up | {node.name}
        if up:
            run.tainted[node.name] = up
    if strict and run.unsupported:
        raise UnsupportedOpError(unsupported_message(graph, run.unsupported))
    return run


def unsupported_message(graph: Graph, unsupported: Mapping[str, str]) -> str:
    by_op: dict[str, list[str]] = {}
    for name, reason in unsupported.items():
        by_op.setdefault(reason, []).append(name)
    parts = [
        f"{op} ({len(nodes)}x: {', '.join(nodes[:3])}{'...' if len(nodes) > 3 else ''})"
        for op, nodes in sorted(by_op.items())
    ]
    return f"{len(unsupported)} node(s) of {graph.name!r} have no transfer function: " + "; ".join(
        parts
    )


def _step(graph: Graph, index: dict, node: Node, run: Run, consts: dict, strict: bool) -> None:
    entry = get_transfer(node.neutral) if node.neutral else None
    run.facts[node.name] = {}
    if entry is None:
        run.intervals[node.name] = _unknown(node)
        run.unsupported[node.name] = node.op
        return
    args = tuple(run.intervals[i] if i is not None else None for i in node.inputs)
    shapes = tuple(index[i].shape if i is not None else None for i in node.inputs)
    attrs = dict(node.attrs)
    attrs["_framework"] = graph.framework
    attrs["_op"] = node.op
    if node.neutral == "mul" and len(node.inputs) == 2 and node.inputs[0] == node.inputs[1]:
        attrs["same_input"] = True
    extreme = relations.own_extreme(index, node)
    if extreme is not None:
        attrs["own_extreme"] = extreme[0]
    if relations.sum_at_least_one(index, node, run.facts):
        attrs["at_least"] = 1.0
    ctx = Ctx(
        dtype_format(node.dtype),
        attrs=attrs,
        shapes=shapes,
        out_shape=node.shape,
        consts=tuple(consts.get(i) if i is not None else None for i in node.inputs),
        facts=tuple(run.facts.get(i, {}) if i is not None else {} for i in node.inputs),
    )
    try:
        out = apply(node.neutral, ctx, *args)
    except Exception as exc:  # a bug or an unexpected attr: one node, not the whole run
        if strict:
            raise AnalysisError(
                f"transfer {node.neutral!r} failed at node {node.name!r} ({node.op}): {exc}"
            ) from exc
        run.intervals[node.name] = _unknown(node)
        run.unsupported[node.name] = f"{node.op} (transfer failed: {exc})"
        return
    if dtype_format(node.dtype) is None and node.dtype is not None:
        out = out & dtype_range(node.dtype) or out
    run.intervals[node.name] = out
    run.hazards[node.name] = ctx.hazards
    run.facts[node.name] = {
        **(dict(ctx.out_facts) or _carried_facts(node, run, index)),
        **relations.facts_after(index, node, run.facts),
    }
    _fold(node, ctx, consts, entry)


def _unknown(node: Node) -> Interval:
    return (
        dtype_range(node.dtype)
        if node.dtype and "float" not in node.dtype
        else (Interval.unknown())
    )


def _carried_facts(node: Node, run: Run, index: dict) -> dict:
    """Reshape-like ops keep ``simplex`` (rows sum to 1) when the last axis is untouched."""
    if node.neutral != "reshape" or not node.inputs or node.inputs[0] is None:
        return {}
    src = run.facts.get(node.inputs[0], {})
    if not src.get("simplex"):
        return {}
    before = index[node.inputs[0]].shape
    after = node.shape
    if not before or not after or before[-1] != after[-1]:
        return {}
    dims = [node.attrs.get(k) for k in ("dim0", "dim1", "dim")]
    perm = node.attrs.get("dims") or node.attrs.get("perm")
    last = len(before) - 1
    if any(d in (-1, last) for d in dims if isinstance(d, int)) and "transpose" in node.op.lower():
        return {}
    if perm is not None and perm[-1] not in (-1, last):
        return {}
    return dict(src)


def _fold(node: Node, ctx: Ctx, consts: dict, entry) -> None:
    if node.neutral == "reshape":
        _fold_reshape(node, consts)
        return
    if get_op(node.neutral).kind.value not in _FOLD_KINDS or node.neutral in _NO_FOLD:
        return
    values = [consts.get(i) for i in node.inputs if i is not None]
    if not values or any(v is None for v in values) or sum(v.size for v in values) > 1 << 22:
        return
    try:
        with np.errstate(all="ignore"):
            alpha = {"alpha": node.attrs["alpha"]} if "alpha" in node.attrs else {}
            out = np.asarray(entry.ref(*values, **alpha), dtype=np.float64)
    except Exception:
        return
    if node.shape is not None and out.shape != node.shape:
        try:
            out = np.broadcast_to(out, node.shape)
        except ValueError:
            return
    if np.isfinite(out).all():
        consts[node.name] = out


_PURE_RESHAPE = re.compile(
    r"(^|\.)(view|reshape|_unsafe_view|flatten|unflatten|unsqueeze|squeeze|clone|contiguous|"
    r"detach|alias|lift_fresh_copy)(\.|$)|^(Identity|Reshape|Squeeze|ExpandDims|Flatten|"
    r"Unsqueeze|ReadVariableOp|Snapshot|StopGradient)$"
)


def _fold_reshape(node: Node, consts: dict) -> None:
    """Keep a weight known through Identity/Reshape/transpose, so matmul sees its rows."""
    src = consts.get(node.inputs[0]) if node.inputs and node.inputs[0] else None
    if src is None:
        return
    op = node.op
    out = None
    if _PURE_RESHAPE.search(op):
        out = (
            src
            if node.shape is None
            else (src.reshape(node.shape) if src.size == math.prod(node.shape) else None)
        )
    elif src.ndim == 2 and re.search(r"(^|\.)(t|transpose|numpy_T)(\.|$)|^Transpose$", op):
        out = src.T
    elif "permute" in op and node.attrs.get("dims") is not None:
        out = np.transpose(src, node.attrs["dims"])
    if out is not None:
        consts[node.name] = out


def ancestors(graph: Graph, name: str) -> list[str]:
    """Every node ``name`` depends on, nearest first."""
    index = {n.name: n for n in graph.nodes}
    seen, order, stack = set(), [], [name]
    while stack:
        cur = stack.pop(0)
        for i in index[cur].inputs:
            if i is not None and i not in seen:
                seen.add(i)
                order.append(i)
                stack.append(i)
    return order
