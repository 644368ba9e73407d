"""TensorFlow / Keras -> IR: Keras models, ``tf.function``s, TF1 ``GraphDef``s and files.

Keras models and functions are traced to a concrete function whose variables are frozen
into constants (the actual weights). A TF1 graph keeps its variables: each variable's
range is derived from its initializer subgraph (``truncated_normal * 0.1`` -> [-0.2, 0.2]),
unless ``weights=B`` is given. Unknown batch dimensions are analyzed as 1. Gradient and
optimizer ops (``gradients/...``, ``Apply*``) are left out: the analysis is of the forward
graph.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np

from nantrap.analyze.frontends import _tf_recurrent as recurrent
from nantrap.analyze.ir import Graph, Node
from nantrap.errors import AnalysisError, ConfigError
from nantrap.ops import lookup

_RENAME = {
    "epsilon": "eps",
    "is_training": "training",
    "transpose_a": "trans_a",
    "transpose_b": "trans_b",
    "adj_x": "trans_a",
    "adj_y": "trans_b",
    "reduction_indices": "dim",
}
_SKIP_TYPES = {
    "NoOp", "Assign", "AssignVariableOp", "VarIsInitializedOp", "IsVariableInitialized",
    "SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin",
    "AssignAdd", "AssignSub", "AssignAddVariableOp", "AssignSubVariableOp",
}  # fmt: skip
_VARIABLES = {"VariableV2", "Variable", "VarHandleOp"}
_READS = {"ReadVariableOp", "Identity", "Snapshot", "StopGradient", "PreventGradient"}


def to_graph(model: Any, example_inputs: Any = None, **_: Any) -> Graph:
    """Convert a Keras model, a ``tf.function``, a ``GraphDef`` or a .pb/.pbtxt/.keras path."""
    import tensorflow as tf

    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.suffix.lower() in (".keras", ".h5"):
            import keras

            return to_graph(keras.models.load_model(path), example_inputs)
        return _from_graph_def(_read_graph_def(path), path.stem)
    if isinstance(model, tf.compat.v1.GraphDef):
        return _from_graph_def(model, "graph")
    if isinstance(model, tf.Graph):
        return _from_graph_def(model.as_graph_def(), "graph")
    concrete, name = _concrete(model, example_inputs)
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(concrete)
    layer_names = {layer.name for layer in getattr(model, "layers", ())}
    return _from_tf_graph(
        frozen.graph,
        name,
        frozen=True,
        layer_names=layer_names,
        recurrent_layers=recurrent.keras_layers(model),
    )


def _read_graph_def(path: Path):
    import tensorflow as tf
    from google.protobuf import text_format

    if not path.exists():
        raise ConfigError(f"no such graph file: {path}")
    gd = tf.compat.v1.GraphDef()
    data = path.read_bytes()
    try:
        if path.suffix.lower() == ".pbtxt":
            text_format.Merge(data.decode(), gd)
        else:
            gd.ParseFromString(data)
    except Exception as exc:
        raise AnalysisError(f"cannot read TensorFlow graph {path}: {exc}") from exc
    return gd


def _concrete(model: Any, example_inputs: Any):
    import tensorflow as tf

    if hasattr(model, "get_concrete_function"):  # a tf.function
        if example_inputs is None:
            return model.get_concrete_function(), getattr(model, "__name__", "function")
        args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        return model.get_concrete_function(*args), getattr(model, "__name__", "function")
    if hasattr(model, "inputs") and callable(model):  # a Keras model
        names = [_input_name(t, i) for i, t in enumerate(model.inputs)]
        if example_inputs is not None:
            args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
            specs = [
                tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype), name=n)
                for a, n in zip(args, names, strict=False)
            ]
        else:
            specs = [
                tf.TensorSpec([1 if d is None else d for d in t.shape], t.dtype, name=n)
                for t, n in zip(model.inputs, names, strict=True)
            ]
        fn = tf.function(lambda *xs: model(xs[0] if len(xs) == 1 else list(xs), training=False))
        return fn.get_concrete_function(*specs), getattr(model, "name", type(model).__name__)
    raise ConfigError(f"cannot trace a {type(model).__name__}: pass a Keras model or tf.function")


def _input_name(t, i: int) -> str:
    name = getattr(t, "name", None) or f"input_{i}"
    return name.split(":")[0].replace("/", "_")


def _from_graph_def(gd, name: str) -> Graph:
    """Import a TF1 GraphDef with unknown batch dims set to 1, then convert."""
    import tensorflow as tf

    gd = copy.deepcopy(gd)  # never touch the caller's graph
    for node in gd.node:
        if node.op == "Placeholder" and "shape" in node.attr:
            shape = node.attr["shape"].shape
            if not shape.unknown_rank:
                for d in shape.dim:
                    if d.size < 0:
                        d.size = 1
    graph = tf.Graph()
    with graph.as_default():
        try:
            tf.compat.v1.import_graph_def(gd, name="")
        except Exception as exc:
            raise AnalysisError(f"cannot import TensorFlow graph {name}: {exc}") from exc
    return _from_tf_graph(graph, name, frozen=False)


def _tensor_name(t) -> str:
    name = t.name
    return name[:-2] if name.endswith(":0") else name


def _from_tf_graph(
    graph, name: str, *, frozen: bool, layer_names=frozenset(), recurrent_layers=None
) -> Graph:
    import tensorflow as tf

    ops = [op for op in graph.get_operations() if _keep(op)]
    initializers = {}
    for op in graph.get_operations():  # var <- value, from Assign / AssignVariableOp
        if op.type in ("Assign", "AssignVariableOp") and len(op.inputs) == 2:
            initializers[op.inputs[0].op.name] = _tensor_name(op.inputs[1])
    root = _root_scope(ops)
    nodes: dict[str, Node] = {}
    values: dict[str, np.ndarray] = {}
    for op in ops:
        out = op.outputs[0] if op.outputs else None
        dtype = out.dtype.base_dtype.name if out is not None else None
        shape = _shape(out)
        module = _module(op.name, root, layer_names)
        extra = {"module": module, "source": op.name}
        if op.type in ("Placeholder", "PlaceholderWithDefault") and not op.inputs:
            nodes[op.name] = Node(op.name, op.type, kind="input", dtype=dtype, shape=shape)
        elif op.type == "Const":
            arr = tf.make_ndarray(op.get_attr("value"))
            values[op.name] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
            kind = "param" if frozen and arr.dtype.kind == "f" and arr.size > 1 else "const"
            nodes[op.name] = Node(
                op.name, "Const", kind=kind, dtype=dtype, shape=arr.shape, **extra
            )
        elif op.type in _VARIABLES:
            init = initializers.get(op.name)
            dtype = op.get_attr("dtype").name if op.type == "VarHandleOp" else dtype
            if op.type == "VarHandleOp":
                shape = (
                    tuple(int(d) for d in op.get_attr("shape").dim_sizes())
                    if hasattr(op.get_attr("shape"), "dim_sizes")
                    else _shape_attr(op)
                )
            nodes[op.name] = Node(
                op.name,
                op.type,
                kind="param",
                inputs=(init,) if init else (),
                dtype=dtype,
                shape=shape,
                **extra,
            )
        else:
            neutral = lookup("tf_op", op.type)
            neutral_name = neutral.name if neutral else None
            if op.type in _READS:
                neutral_name = "reshape"
            attrs = _attrs(op, neutral_name)
            inputs = tuple(_tensor_name(t) for t in op.inputs)
            if op.type == "ConcatV2":  # the axis is a setting, not a value joined in
                inputs = inputs[:-1]
            elif op.type == "Concat":
                inputs = inputs[1:]
            nodes[op.name] = Node(
                op.name,
                op.type,
                neutral=neutral_name,
                inputs=inputs,
                attrs=attrs,
                dtype=dtype,
                shape=shape,
                **extra,
            )
    recurrent.fold_loops(nodes, values, recurrent_layers or {})
    order = _topo(nodes)
    outputs = [n for n in order if not any(n in nodes[m].inputs for m in order)]
    return Graph.build(
        (nodes[n] for n in order), outputs=outputs, values=values, framework="tensorflow", name=name
    )


def _keep(op) -> bool:
    if op.type in _SKIP_TYPES or op.name.startswith(("gradients", "save", "init")):
        return False
    if op.type.startswith(("Apply", "ResourceApply")) or "/optimizer" in op.name.lower():
        return False
    if (
        op.outputs
        and op.outputs[0].dtype.name in ("string", "resource")
        and op.type not in (_VARIABLES)
    ):
        return False
    return not (op.name.startswith(("GradientDescent", "Adam", "beta", "train")))


def _shape(t) -> tuple[int, ...] | None:
    if t is None:
        return None
    try:
        dims = t.shape.as_list()
    except ValueError:  # unknown rank
        return None
    return tuple(1 if d is None else d for d in dims)


def _shape_attr(op) -> tuple[int, ...] | None:
    try:
        return tuple(1 if d is None else d for d in op.get_attr("shape").as_list())
    except Exception:
        return None


def _attrs(op, neutral: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key in op.node_def.attr:
        if key in ("T", "dtype", "_class", "Tidx", "SrcT", "DstT", "Truncate", "_output_shapes"):
            continue
        try:
            value = op.get_attr(key)
        except Exception:
            continue
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, (bool, int, float, str)):
            attrs[_RENAME.get(key, key)] = value
        elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            attrs[_RENAME.get(key, key)] = tuple(value)
    if neutral == "conv":
        attrs["filter_layout"] = "HWIO"
    if neutral in ("sum", "mean", "amax", "amin") and len(op.inputs) > 1:
        attrs.update(_count(op))
    return attrs


def _count(op) -> dict[str, int]:
    """Elements per output of a reduction with constant axes (batch dims count as 1)."""
    from tensorflow.python.framework import tensor_util

    axes = tensor_util.constant_value(op.inputs[1])
    dims = _shape(op.inputs[0])
    if axes is None or dims is None:
        return {}
    count = 1
    for a in np.atleast_1d(axes):
        count *= dims[int(a)]
    return {"count": count, "dim": tuple(int(a) for a in np.atleast_1d(axes))}


def _root_scope(ops) -> str | None:
    # "Func/..." names are the inputs/outputs of lowered loop bodies, not the model's scope
    heads = {op.name.split("/")[0] for op in ops if "/" in op.name} - {"Func"}
    return heads.pop() if len(heads) == 1 else None


def _module(name: str, root: str | None, layer_names=frozenset()) -> str | None:
    """``cnn_1/head_1/MatMul`` -> ``head`` (Keras suffixes scopes with ``_1``)."""
    parts = name.split("/")[:-1]
    if root and parts and parts[0] == root:
        parts = parts[1:]
    if parts and layer_names and parts[0] not in layer_names:
        bare = re.sub(r"_\d+$", "", parts[0])
        if bare in layer_names:
            parts = [bare, *parts[1:]]
    return "/".join(parts) or None


def _topo(nodes: dict[str, Node]) -> list[str]:
    """Kahn order; inputs that were left out (gradients, strings) are dropped."""
    order, state = [], {}

    def visit(n: str) -> None:
        stack = [(n, False)]
        while stack:
            cur, done = stack.pop()
            if done:
                if state.get(cur) != 2:
                    state[cur] = 2
                    order.append(cur)
                continue
            if state.get(cur):
                continue
            state[cur] = 1
            stack.append((cur, True))
            for i in reversed(nodes[cur].inputs):
                if i in nodes and not state.get(i):
                    stack.append((i, False))

    for n in nodes:
        visit(n)
    fixed = {}
    for n in order:
        node = nodes[n]
        ins = tuple(i if i in fixed else None for i in node.inputs)
        if ins != node.inputs:
            node = Node(
                node.name,
                node.op,
                node.neutral,
                ins,
                dict(node.attrs),
                node.dtype,
                node.shape,
                node.kind,
                node.module,
                node.source,
            )
        fixed[n] = node
    nodes.update(fixed)
    return order
