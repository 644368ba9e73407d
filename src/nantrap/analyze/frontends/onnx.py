"""ONNX -> IR (any framework that exports ONNX is covered).

Initializers become parameters (float tensors of 2+ elements) or constants; ``Constant``
nodes become constants; op types map through ``nantrap.ops.lookup("onnx", ...)``;
attributes are renamed to the neutral names (``axis`` -> ``dim``, ``epsilon`` -> ``eps``,
``transB`` -> ``trans_b``). Shapes and dtypes come from ONNX shape inference. Module
paths are read from the exporter's scoped node names (``/layer1/layer1.0/conv1/Conv``).
Symbolic (dynamic) dimensions are analyzed as 1.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from nantrap.analyze.frontends import _onnx_recurrent as recurrent
from nantrap.analyze.ir import Graph, Node
from nantrap.errors import AnalysisError
from nantrap.ops import lookup

_RENAME = {
    "axis": "dim",
    "epsilon": "eps",
    "transA": "trans_a",
    "transB": "trans_b",
    "pads": "padding",
}
_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64", 7: "int64", 6: "int32",
           9: "bool", 2: "uint8", 3: "int8", 5: "int16", 12: "uint32", 13: "uint64"}  # fmt: skip


def to_graph(model: Any) -> Graph:
    """Convert an ONNX ``ModelProto`` or the path of a ``.onnx`` file."""
    import onnx
    from onnx import numpy_helper, shape_inference

    name = "model"
    if isinstance(model, (str, Path)):
        name = Path(model).stem
        try:
            model = onnx.load(str(model))
        except Exception as exc:
            raise AnalysisError(f"cannot read ONNX file {model}: {exc}") from exc
    with contextlib.suppress(Exception):  # shapes are a help, not a need
        model = shape_inference.infer_shapes(model)
    g = model.graph
    types, dynamic = {}, {}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        shape = None
        if t.HasField("shape"):
            # NB: symbolic dims (a dynamic batch) are analyzed as 1, as in the TF frontend
            shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim)
            dynamic[vi.name] = tuple(not d.HasField("dim_value") for d in t.shape.dim)
        types[vi.name] = (_DTYPES.get(t.elem_type), shape)
    nodes: list[Node] = []
    values: dict[str, np.ndarray] = {}
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        values[init.name] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
        kind = "param" if arr.dtype.kind == "f" and arr.size > 1 else "const"
        nodes.append(
            Node(
                init.name,
                "initializer",
                kind=kind,
                dtype=_DTYPES.get(init.data_type),
                shape=arr.shape,
            )
        )
    known = {n.name for n in nodes}
    for inp in g.input:
        if inp.name not in known:
            dtype, shape = types.get(inp.name, (None, None))
            nodes.append(Node(inp.name, "input", kind="input", dtype=dtype, shape=shape))
            known.add(inp.name)
    for i, node in enumerate(g.node):
        if node.op_type in recurrent.OP_TYPES:
            recurrent.convert(node, i, nodes, values, types, dynamic, known)
            continue
        _convert(node, i, nodes, values, types, known, numpy_helper)
    outputs = [o.name for o in g.output if o.name in known]
    return Graph.build(nodes, outputs=outputs, values=values, framework="onnx", name=g.name or name)


def _convert(node, i, nodes, values, types, known, numpy_helper) -> None:
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    outs = [o for o in node.output if o]
    if not outs:
        return
    out = outs[0]
    dtype, shape = types.get(out, (None, None))
    module = _module(node.name)
    if node.op_type == "Constant":
        tensor = attrs.get("value")
        if tensor is not None and hasattr(tensor, "data_type"):
            arr = numpy_helper.to_array(tensor)
        else:
            arr = np.asarray(next(iter(attrs.values())))
        values[out] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
        nodes.append(
            Node(
                out,
                "Constant",
                kind="const",
                dtype=_DTYPES.get(getattr(tensor, "data_type", 1)),
                shape=arr.shape,
            )
        )
        known.add(out)
        return
    if node.op_type == "Shape" and node.input[0] in types and types[node.input[0]][1]:
        values[out] = np.asarray(types[node.input[0]][1], dtype=np.int64)
        nodes.append(Node(out, "Shape", kind="const", dtype="int64"))
        known.add(out)
        return
    inputs = tuple(n if n in known else None for n in node.input)
    neutral_op = lookup("onnx", node.op_type)
    neutral = neutral_op.name if neutral_op else None
    norm = {_RENAME.get(k, k): _plain(v) for k, v in attrs.items()}
    if node.op_type == "ConstantOfShape":
        tensor = attrs.get("value")
        norm = {"value": float(numpy_helper.to_array(tensor).reshape(-1)[0]) if tensor else 0.0}
    if node.op_type == "Range" and all(x in values for x in node.input[:2]):
        norm = {"start": float(values[node.input[0]]), "end": float(values[node.input[1]])}
    if node.op_type == "Clip" and ("min" in attrs or "max" in attrs):  # opset < 11
        extra = []
        for key in ("min", "max"):
            name = f"{out}_{key}"
            values[name] = np.asarray(attrs.get(key, np.inf if key == "max" else -np.inf))
            nodes.append(Node(name, "attr", kind="const", shape=()))
            known.add(name)
            extra.append(name)
        inputs = (inputs[0], *extra)
    if node.op_type == "ConvTranspose":
        neutral, norm["transposed"] = "conv", True
    if node.op_type == "InstanceNormalization":
        norm["num_groups"] = (types.get(node.input[0], (None, None))[1] or (0, 0))[1] or None
    if "auto_pad" in attrs and attrs["auto_pad"] not in (b"NOTSET", "NOTSET"):
        norm["padding"] = _plain(attrs["auto_pad"])
    nodes.append(
        Node(
            out,
            node.op_type,
            neutral=neutral,
            inputs=inputs,
            attrs=norm,
            dtype=dtype,
            shape=shape,
            module=module,
            source=node.name or f"node {i}",
        )
    )
    known.add(out)
    for extra_out in outs[1:]:  # Split/Dropout/BatchNorm extra outputs: within the same hull
        dt, sh = types.get(extra_out, (None, None))
        nodes.append(
            Node(
                extra_out,
                node.op_type,
                neutral="reshape" if neutral else None,
                inputs=(out,),
                dtype=dt,
                shape=sh,
                module=module,
            )
        )
        known.add(extra_out)


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return v


def _module(scoped: str) -> str | None:
    """``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``."""
    parts = [p for p in scoped.split("/") if p][:-1]
    path = ""
    for p in parts:
        path = p if not path or p.startswith(path + ".") else f"{path}.{p}"
    return path or None
