"""``nantrap analyze``: every layer's value range, and which ops can leave their domain.

Sound interval analysis over a model's graph, float-format aware, with the hazards as
Findings (provenance path, fix, the input bound that makes the op safe).

>>> from nantrap.analyze import analyze          # doctest: +SKIP
>>> result = analyze(model, (x,), input_ranges={"x": (0, 1)})
>>> result.findings[0].code, result.layer("log").interval
('NT101', Interval(lo=-inf, hi=0.0))

Inputs: a PyTorch ``nn.Module`` with example inputs (``torch.export``), an
``ExportedProgram``, a Keras model, a ``tf.function``, a TF1 ``GraphDef`` or a
``.pb``/``.pbtxt`` file, an ONNX ``ModelProto`` or ``.onnx`` file, or an :class:`ir.Graph`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nantrap.analyze._findings import Layer, findings, layers
from nantrap.analyze._interpreter import Run, interpret
from nantrap.analyze.interval import Interval
from nantrap.analyze.ir import Graph, Node
from nantrap.errors import ConfigError
from nantrap.findings import Finding, Report, Severity

__all__ = [
    "Analysis",
    "Graph",
    "Interval",
    "Layer",
    "Node",
    "analyze",
    "analyze_graph",
    "load_graph",
    "parse_range",
]


@dataclass
class Analysis:
    """The result: the per-layer table, the findings, and each node's interval."""

    graph: Graph
    layers: list[Layer]
    findings: list[Finding]
    intervals: dict[str, Interval]
    warnings: list[str] = field(default_factory=list)
    input_ranges: dict[str, Interval] = field(default_factory=dict)
    seconds: float = 0.0

    def layer(self, name: str) -> Layer:
        """The row of node ``name`` (or of the last node of module ``name``, or op ``name``)."""
        for pick in (
            lambda r: r.node == name,
            lambda r: r.module == name,
            lambda r: r.op == name,
        ):
            rows = [r for r in self.layers if pick(r)]
            if rows:
                return rows[-1]
        raise KeyError(f"no layer, module or op {name!r} in {self.graph.name!r}")

    def by_code(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    @property
    def problems(self) -> list[Finding]:
        """Findings of warning or error severity (not coverage/saturation notes)."""
        return [f for f in self.findings if f.severity != Severity.INFO]

    def report(self) -> Report:
        return Report(
            engine="analyze",
            findings=list(self.findings),
            meta={
                "model": self.graph.name,
                "framework": self.graph.framework,
                "nodes": len(self.graph.nodes),
                "inputs": {k: v.to_list() for k, v in self.input_ranges.items()},
                "warnings": list(self.warnings),
                "layers": [r.to_dict() for r in self.layers],
            },
        )


def parse_range(text: Any) -> Interval:
    """``"0:1"``, ``"-3:3"``, ``"±5"``, ``(0, 1)`` or an Interval -> Interval."""
    if isinstance(text, Interval):
        return text
    if isinstance(text, (tuple, list)) and len(text) == 2:
        lo, hi = (float(v) for v in text)
    else:
        s = str(text).strip()
        try:
            if s.startswith(("±", "+-", "+/-")):
                b = float(s.removeprefix("±").removeprefix("+/-").removeprefix("+-"))
                lo, hi = -b, b
            else:
                a, _, b = s.partition(":")
                lo, hi = float(a), float(b)
        except ValueError:
            raise ConfigError(f"bad range {text!r}: write lo:hi (0:1, -3:3) or ±B") from None
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ConfigError(f"bad range {text!r}: need lo <= hi")
    return Interval(lo, hi)


def load_graph(model: Any, example_inputs: Any = None, **kw: Any) -> Graph:
    """Convert any supported model object or file into the IR (frameworks imported lazily)."""
    if isinstance(model, Graph):
        return model
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise ConfigError(f"no such model file: {path}")
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            from nantrap.analyze.frontends import onnx

            return onnx.to_graph(path)
        if suffix in (".pb", ".pbtxt", ".keras", ".h5"):
            from nantrap.analyze.frontends import tensorflow

            return tensorflow.to_graph(path, example_inputs, **kw)
        raise ConfigError(f"{path}: unknown model file type {suffix!r} (.onnx .pb .pbtxt .keras)")
    mod = type(model).__module__.split(".")[0]
    if "torch" in sys.modules and _is_torch(model):
        from nantrap.analyze.frontends import torch_export

        return torch_export.to_graph(model, example_inputs, **kw)
    if mod == "onnx":
        from nantrap.analyze.frontends import onnx

        return onnx.to_graph(model)
    if mod in ("keras", "tensorflow", "tf_keras") or (
        "tensorflow" in sys.modules and _is_tf(model)
    ):
        from nantrap.analyze.frontends import tensorflow

        return tensorflow.to_graph(model, example_inputs, **kw)
    raise ConfigError(
        f"cannot analyze a {type(model).__module__}.{type(model).__qualname__}: pass a torch "
        "nn.Module (with example inputs), a Keras model, a tf.function, a GraphDef, an ONNX "
        "model, or a .onnx/.pb/.pbtxt path"
    )


def _is_torch(model: Any) -> bool:
    """An nn.Module or ExportedProgram, told by its classes (torch is imported at the edge)."""
    return any(
        c.__module__.startswith("torch") and c.__name__ in ("Module", "ExportedProgram")
        for c in type(model).__mro__
    )


def _is_tf(model: Any) -> bool:
    return any(c.__module__.startswith(("tensorflow", "keras")) for c in type(model).__mro__)


def analyze(
    model: Any,
    example_inputs: Any = None,
    *,
    input_ranges: Mapping[str, Any] | None = None,
    weights: float | None = None,
    strict: bool = False,
    preconditions: bool = True,
    **frontend_options: Any,
) -> Analysis:
    """Analyze ``model``: per-layer ranges and the hazards, as an :class:`Analysis`.

    Args:
        model: a torch ``nn.Module``/``ExportedProgram``, a Keras model, a ``tf.function``,
            a ``GraphDef``, an ONNX model, a model file path, or an ``ir.Graph``.
        example_inputs: a tuple of example tensors (torch; optional for TF functions).
        input_ranges: input name -> ``(lo, hi)``/``"lo:hi"``; ``"*"`` sets every input.
            Inputs left out get the dtype's whole finite range (with a warning).
        weights: analyze for any weights in ``[-weights, weights]`` instead of the actual ones.
        strict: raise ``UnsupportedOpError`` listing every op without a transfer function.
        preconditions: for each error, search the input range that makes the op safe.
    """
    graph = load_graph(model, example_inputs, **frontend_options)
    return analyze_graph(
        graph,
        input_ranges=input_ranges,
        weights=weights,
        strict=strict,
        preconditions=preconditions,
    )


def analyze_graph(
    graph: Graph,
    *,
    input_ranges: Mapping[str, Any] | None = None,
    weights: float | None = None,
    strict: bool = False,
    preconditions: bool = True,
) -> Analysis:
    """Analyze an IR graph (see :func:`analyze`)."""
    start = time.perf_counter()
    ranges = _resolve_ranges(graph, input_ranges or {})
    if weights is not None and not (weights > 0):
        raise ConfigError(f"weights bound must be > 0, got {weights!r}")
    run = interpret(graph, ranges, weight_bound=weights, strict=strict)
    found = findings(graph, run)
    warnings = []
    if run.defaulted_inputs:
        warnings.append(
            f"no range given for input(s) {', '.join(run.defaulted_inputs)}: assumed the "
            "dtype's whole finite range, so most ops will look unsafe; pass "
            "--input NAME=LO:HI"
        )
    if preconditions:
        deadline = time.perf_counter() + _PRECONDITION_BUDGET_S  # shared by all findings
        found = [_with_precondition(graph, ranges, weights, f, deadline) for f in found]
    used = {n.name: run.intervals[n.name] for n in graph.inputs}
    return Analysis(
        graph,
        layers(graph, run),
        found,
        run.intervals,
        warnings,
        used,
        time.perf_counter() - start,
    )


def _resolve_ranges(graph: Graph, given: Mapping[str, Any]) -> dict[str, Interval]:
    names = [n.name for n in graph.inputs]
    out = {}
    for key, value in given.items():
        if key == "*":
            for n in names:
                out.setdefault(n, parse_range(value))
            continue
        if key not in names:
            raise ConfigError(
                f"--input {key}: the model has no input {key!r} (inputs: {', '.join(names)})"
            )
        out[key] = parse_range(value)
    return out


_PRECONDITION_BUDGET_S = 3.0  # seconds for all findings of one analysis


def _with_precondition(
    graph: Graph,
    ranges: dict[str, Interval],
    weights: float | None,
    finding: Finding,
    deadline: float,
) -> Finding:
    """RANUM's precondition, in user terms: the widest input box (each range shrunk toward
    its point nearest 0), and the largest weight bound ±B, for which this op's hazard
    disappears."""
    if (
        finding.severity != Severity.ERROR
        or finding.location.node is None
        or finding.location.phase is None
        or finding.location.phase.value != "forward"
        or len(graph.nodes) > 3000
        or time.perf_counter() > deadline
    ):
        return finding
    from nantrap.analyze._interpreter import ancestors

    node = finding.location.node
    upstream = set(ancestors(graph, node))
    fixed = {k: v for k, v in ranges.items() if k not in upstream}
    moving = {k: v for k, v in ranges.items() if k in upstream and v.is_finite}

    def safe(input_scale: float, bound: float | None) -> bool:
        shrunk = {**ranges, **{k: _shrink(v, input_scale) for k, v in moving.items()}}
        run: Run = interpret(graph, {**shrunk, **fixed}, weight_bound=bound)
        return not any(h.nonfinite and not h.grad for h in run.hazards.get(node, ()))

    notes, evidence = [], {}
    t = _largest(lambda s: safe(s, weights), deadline) if moving else None
    if t is not None:
        box = {k: _shrink(v, t).to_list() for k, v in moving.items()}
        evidence["safe_inputs"] = box
        text = ", ".join(f"{k} in [{a:.4g}, {b:.4g}]" for k, (a, b) in box.items())
        notes.append(f" Safe (for these weights) while {text}.")
    params = [n for n in upstream if graph.node(n).kind == "param" and n in graph.values]
    biggest = max((float(np.max(np.abs(graph.values[n]))) for n in params), default=0.0)
    if weights is None and biggest > 0:
        w = _largest(lambda s: safe(1.0, s * biggest), deadline)
        if w is not None:
            evidence["safe_weight_bound"] = w * biggest
            notes.append(
                f" For the given input ranges it is safe for any weights within "
                f"±{w * biggest:.3g} (now max |w| = {biggest:.3g})."
            )
    if not notes:
        notes.append(
            " The search found no input range or weight bound that removes it: treat it "
            "as a design problem (change the layer, not the data)."
        )
    return _amend(finding, "".join(notes), evidence)


def _largest(safe, deadline: float) -> float | None:
    """The largest t in (0, 1] with ``safe(t)`` (bisection), or None if even t ~ 0 fails."""
    if safe(1.0):
        return 1.0
    if not safe(1e-6):
        return None
    lo, hi = 1e-6, 1.0
    while hi - lo > 1e-3 * hi and time.perf_counter() < deadline:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if safe(mid) else (lo, mid)
    return lo


def _amend(finding: Finding, note: str, extra: dict) -> Finding:
    from dataclasses import replace

    evidence = {**finding.evidence, **extra}
    fix = (finding.fix or "").rstrip()
    fix = fix + ("" if fix.endswith(".") else ".") + note
    return replace(finding, fix=fix, evidence=evidence)


def _shrink(v: Interval, t: float) -> Interval:
    a = min(max(0.0, v.lo), v.hi)
    return Interval(a + t * (v.lo - a), a + t * (v.hi - a))
