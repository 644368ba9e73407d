"""The few relations between values that plain intervals lose, for the idioms that need them.

Interval arithmetic forgets that ``x - max(x)`` is at most 0 (it sees ``[lo - hi, hi - lo]``)
and that ``sum(exp(x - max(x)))`` is at least 1 (the max element contributes exactly
``exp(0)``). Hand-written stable softmax / logsumexp code relies on both; without them it
would be reported as an exp overflow and a log of 0. The interpreter asks these helpers for
a hint before a node's transfer (``own_extreme``) and records a fact after it.
"""

from __future__ import annotations

from nantrap.analyze.ir import Node

_THROUGH = ("reshape", "cast")


def source(index: dict[str, Node], name: str | None) -> str | None:
    """The value behind ``name``, looking through reshape-like ops (getitem, expand, view)."""
    while name is not None:
        node = index[name]
        if node.neutral not in _THROUGH or not node.inputs:
            return name
        name = node.inputs[0]
    return None


def reduced_dims(node: Node, ndim: int | None) -> tuple[int, ...] | None:
    """The dims a reduction node reduces over, normalized to 0..ndim-1 (None: unknown)."""
    if not ndim:
        return None
    dim = node.attrs.get("dim")
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    try:
        return tuple(sorted(int(d) % ndim for d in dims))
    except (TypeError, ValueError):
        return None


def own_extreme(index: dict[str, Node], node: Node) -> tuple[str, tuple[int, ...]] | None:
    """For ``a - amax(a)`` (or ``amin``): ``("max", dims)``, else None."""
    if node.neutral != "sub" or len(node.inputs) < 2 or None in node.inputs[:2]:
        return None
    b = source(index, node.inputs[1])
    red = index[b] if b is not None else None
    if red is None or red.neutral not in ("amax", "amin") or not red.inputs:
        return None
    if source(index, red.inputs[0]) != source(index, node.inputs[0]):
        return None
    shape = index[red.inputs[0]].shape
    dims = reduced_dims(red, len(shape) if shape else None)
    if dims is None:
        return None
    return ("max" if red.neutral == "amax" else "min"), dims


def facts_after(index: dict[str, Node], node: Node, facts: dict[str, dict]) -> dict:
    """Facts a node's value has because of the relations above."""
    rel = own_extreme(index, node)
    if rel is not None and rel[0] == "max":
        return {"row_max_zero": rel[1]}
    src = node.inputs[0] if node.inputs else None
    if node.neutral == "exp" and src is not None and facts.get(src, {}).get("row_max_zero"):
        return {"row_max_one": facts[src]["row_max_zero"]}
    if node.neutral in _THROUGH and src is not None:
        kept = {k: v for k, v in facts.get(src, {}).items() if k.startswith("row_max")}
        if kept and node.shape == index[src].shape:
            return kept
    return {}


def sum_at_least_one(index: dict[str, Node], node: Node, facts: dict[str, dict]) -> bool:
    """``sum(exp(x - max(x)))`` over the same dims as the max: at least 1."""
    if node.neutral != "sum" or not node.inputs or node.inputs[0] is None:
        return False
    dims = facts.get(node.inputs[0], {}).get("row_max_one")
    shape = index[node.inputs[0]].shape
    return dims is not None and reduced_dims(node, len(shape) if shape else None) == dims
