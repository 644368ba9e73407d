"""PyTorch -> IR via ``torch.export`` (ATen graph, module paths, source lines).

Arguments are named by the ATen schema: tensors (and scalars of arithmetic ops) become
inputs in schema order, everything else becomes attrs under the schema's names. The
model is exported in its current train/eval mode and is not modified.
"""

from __future__ import annotations

import operator
import os
import re
import warnings
from typing import Any

import numpy as np

from nantrap.analyze.ir import Graph, Node
from nantrap.errors import AnalysisError, ConfigError
from nantrap.ops import lookup

# neutral ops whose Scalar arguments are values (become constant inputs), not settings
_SCALAR_INPUTS = {
    "add", "sub", "mul", "div", "pow", "clip", "masked_fill", "where", "maximum", "minimum",
    "compare", "bias_add",
}  # fmt: skip
_REORDER = {"aten.addmm": (1, 2, 0), "aten.baddbmm": (1, 2, 0), "aten.rsub": (1, 0)}
_TRACE = re.compile(r'File "([^"]+)", line (\d+)')


def to_graph(model: Any, example_inputs: Any = None, **export_kwargs: Any) -> Graph:
    """Export ``model`` (or take an ``ExportedProgram``) and convert it."""
    import torch

    if isinstance(model, torch.export.ExportedProgram):
        ep, name = model, "ExportedProgram"
    else:
        if example_inputs is None:
            raise ConfigError(
                f"analyzing a torch module ({type(model).__name__}) needs example inputs: "
                "analyze(model, (x,)) or a factory returning (model, inputs)"
            )
        if not isinstance(example_inputs, tuple):
            example_inputs = (example_inputs,)
        name = type(model).__name__
        try:
            with warnings.catch_warnings():  # nn.LSTM/GRU/RNN re-list their weights on export
                warnings.filterwarnings("ignore", message=r".*_flat_weights.*assigned during")
                ep = torch.export.export(model, example_inputs, **export_kwargs)
        except Exception as exc:
            raise AnalysisError(f"torch.export failed for {name}: {exc}") from exc
    return _convert(ep, name)


def _np(t) -> np.ndarray:
    import torch

    t = t.detach()
    if t.is_floating_point():  # float32 keeps big models small; sums accumulate in float64
        t = t.to(torch.float32 if t.numel() > 1 << 20 else torch.float64)
    return t.cpu().numpy()


def _dtype(val) -> str | None:
    dtype = getattr(val, "dtype", None)
    return str(dtype).replace("torch.", "") if dtype is not None else None


def _meta(fx_node) -> tuple[str | None, tuple[int, ...] | None]:
    val = fx_node.meta.get("val")
    if isinstance(val, (tuple, list)):
        val = next((v for v in val if hasattr(v, "shape")), None)
    if val is None or not hasattr(val, "shape"):
        return None, None
    try:
        shape = tuple(int(d) for d in val.shape)
    except TypeError:  # symbolic sizes
        shape = None
    return _dtype(val), shape


def _module(fx_node) -> str | None:
    stack = fx_node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return path or None


def _source(fx_node) -> str | None:
    trace = fx_node.meta.get("stack_trace") or ""
    hits = _TRACE.findall(trace)
    # the innermost frame that is the user's code, not torch's own modules
    user = [h for h in hits if f"{os.sep}torch{os.sep}" not in h[0]] or hits
    return f"{user[-1][0]}:{user[-1][1]}" if user else None


class _Builder:
    def __init__(self, name: str) -> None:
        self.nodes: list[Node] = []
        self.values: dict[str, np.ndarray] = {}
        self.names: dict[str, str] = {}  # fx name -> IR name
        self.items: dict[str, dict[int, str]] = {}  # fx name -> {tuple index: IR name}
        self.name = name

    def const(self, name: str, value: Any) -> str:
        self.values[name] = np.asarray(value, dtype=np.float64)
        self.nodes.append(Node(name, "constant", kind="const", shape=np.shape(value)))
        return name


def _convert(ep, name: str) -> Graph:
    sig = ep.graph_signature
    params = dict(sig.inputs_to_parameters)
    buffers = dict(sig.inputs_to_buffers)
    lifted = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    state, constants = ep.state_dict, getattr(ep, "constants", {}) or {}
    b = _Builder(name)
    outputs: list[str] = []
    for fx in ep.graph.nodes:
        dtype, shape = _meta(fx)
        if fx.op == "placeholder":
            target = params.get(fx.name) or buffers.get(fx.name) or lifted.get(fx.name)
            if target is None:
                b.names[fx.name] = fx.name
                b.nodes.append(Node(fx.name, "placeholder", kind="input", dtype=dtype, shape=shape))
                continue
            tensor = state.get(target) if target in state else constants.get(target)
            kind = "param" if fx.name in params else "const"
            b.names[fx.name] = target
            if tensor is not None:
                b.values[target] = _np(tensor)
            b.nodes.append(Node(target, "placeholder", kind=kind, dtype=dtype, shape=shape))
        elif fx.op == "call_function":
            _call(b, fx, dtype, shape)
        elif fx.op == "output":
            outs = fx.args[0] if isinstance(fx.args[0], (tuple, list)) else (fx.args[0],)
            outputs = [b.names[o.name] for o in outs if hasattr(o, "name") and o.name in b.names]
    return Graph.build(b.nodes, outputs=outputs, values=b.values, framework="torch", name=name)


def _call(b: _Builder, fx, dtype, shape) -> None:
    target = fx.target
    common = dict(dtype=dtype, shape=shape, module=_module(fx), source=_source(fx))
    if target is operator.getitem:
        src = b.items.get(fx.args[0].name, {}).get(fx.args[1]) or b.names[fx.args[0].name]
        b.names[fx.name] = fx.name
        b.nodes.append(
            Node(
                fx.name,
                "getitem",
                neutral="reshape",
                inputs=(src,),
                attrs={"index": fx.args[1]},
                **common,
            )
        )
        return
    op_name = str(target)
    packet = ".".join(op_name.split(".")[:2])
    op = lookup("aten", op_name)
    if op is None and packet.endswith("_"):  # in-place twin (relu_) computes the same values
        op = lookup("aten", packet[:-1])
    neutral = op.name if op is not None else None
    inputs: list[str | None] = []
    attrs: dict[str, Any] = {}
    schema = getattr(target, "_schema", None)
    if schema is None:
        b.names[fx.name] = fx.name
        b.nodes.append(Node(fx.name, op_name, inputs=_all_nodes(b, fx), **common))
        return
    for i, arg in enumerate(schema.arguments):
        if i < len(fx.args) and not arg.kwarg_only:
            value = fx.args[i]
        elif arg.name in fx.kwargs:
            value = fx.kwargs[arg.name]
        else:
            value = arg.default_value if arg.has_default_value() else None
        kind = str(arg.type)
        if _is_node(value):
            inputs.append(b.names[value.name])
        elif (
            isinstance(value, (list, tuple))
            and value
            and all(_is_node(v) or v is None for v in value)
        ):
            inputs.extend(b.names[v.name] if v is not None else None for v in value)
        elif _valued(arg.name, kind, arg.kwarg_only, neutral):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            inputs.append(b.const(f"{fx.name}_{arg.name}", value) if number else None)
        else:
            attrs[arg.name] = _attr(value)
    if packet in _REORDER:
        order = _REORDER[packet]
        inputs = [inputs[j] for j in order] + inputs[len(order) :]
    if packet == "aten.clamp_max":
        inputs = [inputs[0], None, inputs[1]]
    if neutral == "full":
        attrs.update(_fill(packet, attrs))
    if packet == "aten.relu6":
        attrs.update(min_val=0.0, max_val=6.0)
    if packet == "aten.dropout" and attrs.get("train") and attrs.get("p"):
        # kept elements are scaled by 1/(1-p), dropped ones are 0: the union of both
        scaled = f"{fx.name}_scaled"
        k = b.const(f"{fx.name}_scale", 1.0 / (1.0 - float(attrs["p"])))
        b.nodes.append(Node(scaled, op_name, neutral="mul", inputs=(inputs[0], k), **common))
        zero = b.const(f"{fx.name}_zero", 0.0)
        b.names[fx.name] = fx.name
        b.nodes.append(Node(fx.name, op_name, neutral="cat", inputs=(scaled, zero), **common))
        return
    if packet == "aten.rnn_relu":
        attrs["nonlinearity"] = "relu"
    b.names[fx.name] = fx.name
    b.nodes.append(
        Node(fx.name, op_name, neutral=neutral, inputs=tuple(inputs), attrs=attrs, **common)
    )
    if packet == "aten.lstm":  # (output, h_n, c_n): the cell state gets its own node
        cell = f"{fx.name}_cell"
        vals = fx.meta.get("val")
        c_shape = tuple(vals[2].shape) if isinstance(vals, (tuple, list)) else None
        b.items[fx.name] = {2: cell}
        b.nodes.append(
            Node(
                cell,
                op_name,
                neutral=neutral,
                inputs=tuple(inputs),
                attrs={**attrs, "output": "cell", "gate_notes": False},
                **{**common, "shape": c_shape},
            )
        )


def _valued(name: str, kind: str, kwarg_only: bool, neutral: str | None) -> bool:
    """A tensor position, or a scalar that is an operand of arithmetic (not a setting)."""
    if "Tensor" in kind:
        return True
    scalar = kind in ("number", "Optional[number]") and not kwarg_only
    return scalar and name != "alpha" and neutral in _SCALAR_INPUTS


def _fill(packet: str, attrs: dict) -> dict:
    if "zeros" in packet:
        return {"value": 0.0}
    if "ones" in packet:
        return {"value": 1.0}
    if "arange" in packet:
        return {"start": attrs.get("start", 0), "end": attrs.get("end")}
    for key in ("fill_value", "s"):
        if attrs.get(key) is not None:
            return {"value": float(attrs[key])}
    return {}


def _is_node(v: Any) -> bool:
    return hasattr(v, "op") and hasattr(v, "target") and hasattr(v, "meta")


def _all_nodes(b: _Builder, fx) -> tuple[str, ...]:
    return tuple(b.names[a.name] for a in fx.all_input_nodes if a.name in b.names)


def _attr(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_attr(v) for v in value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)
