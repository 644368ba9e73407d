"""Keras ``LSTM`` / ``GRU`` / ``SimpleRNN`` in a traced TF graph -> one neutral op each.

Traced and frozen, a Keras RNN layer is a lowered ``while`` loop (Enter/Merge/Switch/Exit
around the cell's body, the sequence in TensorLists). Interval analysis cannot run a loop
body to a fixed point on its own, but the layer object says what the loop computes: the
loop is replaced by the layer's neutral op (``lstm``/``gru``/``rnn``) on the time-major
input, with the layer's weights in torch's layout. Loops that are not a recognized layer
(a hand-written ``tf.while_loop``, a TF1 graph, a cell with other activations) stay, and
their control-flow nodes share one label so the NT902 note names them once, plainly.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from nantrap.analyze.ir import Node

KERAS_RNN = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
LOOP_LABEL = "while loop (tf.while_loop or a recurrent layer; not analyzed)"
_CONTROL = {
    "Enter", "Exit", "Merge", "Switch", "NextIteration", "LoopCond", "While", "StatelessWhile",
    "TensorListFromTensor", "TensorListReserve", "TensorListStack", "TensorListGetItem",
    "TensorListSetItem", "TensorListLength", "TensorListElementShape",
}  # fmt: skip
_BODY = re.compile(r"(^|/)while(_\d+)?/")  # nodes of a lowered loop (its body's back edges
# are cut in the IR, so their values would be guesses: they are not analyzed)


def keras_layers(model: Any) -> dict[str, Any]:
    """The model's Keras recurrent layers by name (nested models and Bidirectional too)."""
    out, stack = {}, list(getattr(model, "layers", ()) or ())
    while stack:
        layer = stack.pop()
        if type(layer).__name__ in KERAS_RNN:
            out[layer.name] = layer
        stack.extend(getattr(layer, "layers", ()) or ())
        wrapped = (getattr(layer, f"{d}_layer", None) for d in ("forward", "backward"))
        stack.extend(sub for sub in wrapped if sub is not None)  # Bidirectional
    return out


def _array(v) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)


def _spec(layer) -> tuple[str, dict, list[np.ndarray | None]] | None:
    """(neutral op, attrs, [w_ih, w_hh, b_ih, b_hh]) in torch's layout, or None."""
    cls = type(layer).__name__
    cell = layer.cell
    act = getattr(cell.activation, "__name__", "")
    rec = getattr(getattr(cell, "recurrent_activation", None), "__name__", "sigmoid")
    if (cls == "SimpleRNN" and act not in ("tanh", "relu")) or (
        cls != "SimpleRNN" and (act != "tanh" or rec != "sigmoid")
    ):
        return None
    w_ih, w_hh = _array(cell.kernel).T, _array(cell.recurrent_kernel).T
    bias = _array(cell.bias) if getattr(cell, "use_bias", True) and cell.bias is not None else None
    b_ih, b_hh = bias, None
    attrs: dict[str, Any] = {
        "hidden_size": int(cell.units),
        "num_layers": 1,
        "bidirectional": False,
        "batch_first": False,  # the loop reads the time-major transpose
        "has_biases": True,
    }
    if cls == "LSTM":
        attrs["gate_order"] = "ifgo"  # Keras: i, f, c, o
    elif cls == "GRU":
        after = bool(getattr(cell, "reset_after", True))
        attrs.update(gate_order="zrn", linear_before_reset=after)
        if after and bias is not None and bias.ndim == 2:
            b_ih, b_hh = bias[0], bias[1]
    else:
        attrs["nonlinearity"] = act
    return KERAS_RNN[cls], attrs, [w_ih, w_hh, b_ih, b_hh]


def fold_loops(nodes: dict[str, Node], values: dict, layers: dict[str, Any]) -> None:
    """Replace each recognized layer's loop in ``nodes`` (in place); label the rest."""
    for name, layer in layers.items():
        _fold(nodes, values, name, layer)
    used = {i for n in nodes.values() for i in n.inputs}
    for key in [k for k, n in nodes.items() if n.kind == "input" and k not in used]:
        if key.startswith("unused_control_flow_input"):  # left behind by loop lowering
            del nodes[key]
    for key, n in list(nodes.items()):  # a loop that stays: body and control flow, one label
        if (n.op in _CONTROL and n.neutral is None) or (n.kind == "op" and _BODY.search(key)):
            nodes[key] = Node(
                n.name, LOOP_LABEL, None, n.inputs, dict(n.attrs), n.dtype, n.shape, n.kind,
                n.module, n.source,
            )  # fmt: skip


def _fold(nodes: dict[str, Node], values: dict, name: str, layer) -> None:
    scope = re.compile(rf"(^|/){re.escape(name)}(_\d+)?/TensorArrayUnstack/TensorListFromTensor$")
    sources = [n for n in nodes.values() if scope.search(n.name) and "/while/" not in n.name]
    spec = _spec(layer)
    if len(sources) != 1 or not sources[0].inputs or spec is None:
        return
    prefix = sources[0].name.split("/TensorArrayUnstack/")[0]
    in_loop = {k for k in nodes if f"{prefix}/while/" in k}
    x = sources[0].inputs[0]
    neutral, attrs, weights = spec
    states = sorted(
        {
            e.inputs[0]
            for e in (nodes[k] for k in in_loop)
            if e.op == "Enter" and e.inputs and _is_state(nodes, e.inputs[0], attrs["hidden_size"])
        }
    )
    state = _union(nodes, f"{prefix}/initial_state", states)
    params = []
    for label, arr in zip(("w_ih", "w_hh", "b_ih", "b_hh"), weights, strict=True):
        key = f"{prefix}/{label}"
        if arr is not None:
            values[key] = arr
            nodes[key] = Node(key, "keras weight", kind="param", dtype="float32", shape=arr.shape)
        params.append(key if arr is not None else None)
    inputs = (x, state, state, *params) if neutral == "lstm" else (x, state, *params)
    op = f"keras.layers.{type(layer).__name__}"
    stack = f"{prefix}/TensorArrayV2Stack/TensorListStack"
    dtype = nodes[x].dtype if x in nodes else None
    if stack in nodes:  # the sequence of hidden states, (T, B, H)
        out = nodes[stack]
        nodes[stack] = Node(
            stack, op, neutral, inputs, {**attrs, "output": "seq"}, dtype, out.shape,
            module=name, source=out.source,
        )  # fmt: skip
    lists = {k for k, n in nodes.items() if n.op.startswith("TensorList") and k != stack}
    for k in in_loop | {k for k in lists if k.startswith(prefix + "/")}:
        del nodes[k]
    readers = [k for k, n in nodes.items() if any(i in in_loop for i in n.inputs)]
    if not readers:
        return
    final = f"{prefix}/final_state"  # return_state: h (an LSTM's h or c: the hull of both)
    which = {"output": "state" if neutral == "lstm" else "seq", "gate_notes": stack not in nodes}
    nodes[final] = Node(
        final, op, neutral, inputs, {**attrs, **which}, dtype, module=name,
        source=sources[0].source,
    )  # fmt: skip
    for k in readers:
        n = nodes[k]
        ins = tuple(final if i in in_loop else i for i in n.inputs)
        nodes[k] = Node(
            n.name, n.op, n.neutral, ins, dict(n.attrs), n.dtype, n.shape, n.kind, n.module,
            n.source,
        )  # fmt: skip


def _is_state(nodes: dict[str, Node], name: str | None, units: int) -> bool:
    """A float value entering the loop that is not a weight: an initial state.

    Every such value is taken (hull), so a state is never missed; ``units`` rules out
    values of another width when the shape is known.
    """
    node = nodes.get(name) if name else None
    if node is None or "ReadVariableOp" in node.name or "float" not in (node.dtype or ""):
        return False
    return not node.shape or node.shape[-1] == units


def _union(nodes: dict[str, Node], key: str, states: list[str]) -> str | None:
    """One node whose range is the hull of the initial states (None: zeros)."""
    if not states:
        return None
    if len(states) == 1:
        return states[0]
    nodes[key] = Node(key, "initial states", "cat", tuple(states), dtype=nodes[states[0]].dtype)
    return key
