"""The one small IR every frontend produces and the interpreter reads.

A :class:`Graph` is a topologically ordered tuple of :class:`Node`. Inputs, parameters and
constants are nodes too (``kind``); a parameter or constant carries its value (a numpy
array) in ``Graph.values``. Op nodes name their tensor inputs by node name, in the order of
the neutral op's signature (``matmul(a, b, bias)``, ``clip(x, lo, hi)``); non-tensor
arguments are ``attrs`` under neutral names (``dim``, ``eps``, ``trans_b``...). Nothing in
the analysis writes into a graph.

>>> g = Graph.build([Node("x", "input", kind="input"), Node("y", "aten.exp.default",
...     neutral="exp", inputs=("x",))], outputs=("y",))
>>> g.node("y").inputs
('x',)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Graph", "Node"]

KINDS = ("input", "param", "const", "op")


@dataclass(frozen=True)
class Node:
    """One value of the graph: an input, a parameter, a constant or an op's result."""

    name: str
    op: str  # the framework's spelling: ``aten.log.default``, ``Log``, ``placeholder``
    neutral: str | None = None  # the op's name in ``nantrap.ops`` (None: unknown op)
    inputs: tuple[str | None, ...] = ()  # producer node names; None for an absent optional
    attrs: Mapping[str, Any] = field(default_factory=dict)
    dtype: str | None = None  # ``float32``, ``float16``, ``bfloat16``, ``int64``, ``bool``
    shape: tuple[int, ...] | None = None
    kind: str = "op"  # input | param | const | op
    module: str | None = None  # ``layer1.0.conv1`` / a Keras layer name
    source: str | None = None  # ``model.py:41``

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"node {self.name!r}: kind {self.kind!r} not in {KINDS}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def numel(self) -> int | None:
        if self.shape is None:
            return None
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Graph:
    """Nodes in topological order, the values of parameters/constants, and the outputs."""

    nodes: tuple[Node, ...]
    outputs: tuple[str, ...] = ()
    values: Mapping[str, Any] = field(default_factory=dict)  # node name -> numpy array
    framework: str = "ir"
    name: str = "model"

    @classmethod
    def build(
        cls,
        nodes: Iterable[Node],
        outputs: Iterable[str] = (),
        values: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> Graph:
        """Check names are unique and inputs defined before use, then freeze."""
        nodes = tuple(nodes)
        seen: set[str] = set()
        for n in nodes:
            if n.name in seen:
                raise ValueError(f"node name {n.name!r} is used twice")
            for i in n.inputs:
                if i is not None and i not in seen:
                    raise ValueError(f"node {n.name!r} reads {i!r} before it is defined")
            seen.add(n.name)
        outputs = tuple(outputs)
        for o in outputs:
            if o not in seen:
                raise ValueError(f"output {o!r} is not a node")
        return cls(nodes, outputs, MappingProxyType(dict(values or {})), **kw)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in graph {self.name!r}")

    @property
    def inputs(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.kind == "input")

    def users(self) -> dict[str, list[str]]:
        """Node name -> names of the nodes that read it."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                if i is not None:
                    out[i].append(n.name)
        return out
