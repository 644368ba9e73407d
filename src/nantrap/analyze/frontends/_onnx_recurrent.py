"""ONNX ``LSTM`` / ``GRU`` / ``RNN`` -> the neutral recurrent ops (torch's flat signature).

ONNX stacks the directions in one tensor (``W`` is ``(dirs, G*H, in)``, ``B`` is ``(dirs,
2*G*H)`` = input then recurrent bias) and orders the gates ``iofc`` / ``zrh``. Known
weights are split per direction into new parameter nodes; unknown ones are passed whole
(their interval bounds every slice). The outputs ``Y`` and ``Y_h`` are the hidden states,
``Y_c`` the LSTM cell, which gets its own node. Variants the transfer does not model
(peepholes, ``clip``, ``input_forget``, other activations) keep the op unsupported, so it
is listed in the NT902 note with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nantrap.analyze.ir import Node

OP_TYPES = ("LSTM", "GRU", "RNN")
_NEUTRAL = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
_GATES = {"LSTM": "iofg", "GRU": "zrn", "RNN": "h"}
_DEFAULT_ACTS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "RNN": ("tanh",)}


def _why_not(op: str, attrs: dict[str, Any], inputs: list[str]) -> str | None:
    """Why this node is outside what the transfer models (None: it is inside)."""
    if attrs.get("clip") is not None:
        return "cell clip"
    if attrs.get("input_forget"):
        return "input_forget"
    if op == "LSTM" and len(inputs) > 7 and inputs[7]:
        return "peepholes"
    acts = tuple(a.lower() for a in attrs.get("activations", ()))
    if acts:
        default = _DEFAULT_ACTS[op]
        dirs = 2 if attrs.get("direction") == "bidirectional" else 1
        if op == "RNN" and acts in (("relu",) * dirs,):
            return None
        if acts != default * dirs:
            return f"activations {', '.join(acts)}"
    return None


def convert(node, i: int, nodes: list, values: dict, types: dict, dynamic: dict, known: set):
    from onnx import helper

    from nantrap.analyze.frontends.onnx import _module, _plain

    op = node.op_type
    attrs = {a.name: _plain(helper.get_attribute_value(a)) for a in node.attribute}
    ins = list(node.input)
    outs = list(node.output) + [""] * (3 - len(node.output))
    module = _module(node.name)
    source = node.name or f"node {i}"
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    batch_first = bool(attrs.get("layout", 0))
    why = _why_not(op, attrs, ins)

    def get(j: int) -> str | None:
        return ins[j] if j < len(ins) and ins[j] in known else None

    x, w, r, b = get(0), get(1), get(2), get(3)
    states = [get(5)] + ([get(6)] if op == "LSTM" else [])
    params: list[str | None] = []
    for d in range(dirs):
        params += [
            _slice(nodes, values, known, w, (d,), f"{w}_dir{d}"),
            _slice(nodes, values, known, r, (d,), f"{r}_dir{d}"),
        ]
        if b is None:
            params += [None, None]
        else:
            half = values[b].shape[-1] // 2 if b in values else None
            params += [
                _slice(nodes, values, known, b, (d, slice(0, half)), f"{b}_w_dir{d}"),
                _slice(nodes, values, known, b, (d, slice(half, None)), f"{b}_r_dir{d}"),
            ]
    hidden = attrs.get("hidden_size")
    x_dyn = dynamic.get(ins[0], ()) if ins else ()
    seq_axis = 1 if batch_first else 0
    norm: dict[str, Any] = {
        "hidden_size": hidden,
        "gate_order": _GATES[op],
        "bidirectional": dirs == 2,
        "num_layers": 1,
        "batch_first": batch_first,
        "has_biases": True,
        "seq_dynamic": len(x_dyn) > seq_axis and x_dyn[seq_axis],
    }
    if op == "GRU":
        norm["linear_before_reset"] = bool(attrs.get("linear_before_reset", 0))
    if op == "RNN" and tuple(a.lower() for a in attrs.get("activations", ())[:1]) == ("relu",):
        norm["nonlinearity"] = "relu"
    neutral = None if why else _NEUTRAL[op]
    shown = op if not why else f"{op} ({why})"
    inputs = (x, *states, *params)
    main = outs[0] or outs[1]
    if main:
        dtype, shape = types.get(main, (None, None))
        padded = bool(outs[0]) and len(ins) > 4 and bool(ins[4])  # sequence_lens: 0 after
        nodes.append(
            Node(
                main,
                shown,
                neutral=neutral,
                inputs=inputs,
                attrs={**norm, "output": "seq", "padded": padded},
                dtype=dtype,
                shape=shape,
                module=module,
                source=source,
            )
        )
        known.add(main)
    if outs[0] and outs[1]:  # Y_h: the last hidden state, inside Y's range
        dtype, shape = types.get(outs[1], (None, None))
        nodes.append(
            Node(
                outs[1],
                shown,
                neutral="reshape" if neutral else None,
                inputs=(main,),
                dtype=dtype,
                shape=shape,
                module=module,
            )
        )
        known.add(outs[1])
    if op == "LSTM" and outs[2]:
        dtype, shape = types.get(outs[2], (None, None))
        nodes.append(
            Node(
                outs[2],
                shown,
                neutral=neutral,
                inputs=inputs,
                attrs={**norm, "output": "cell", "gate_notes": not main},
                dtype=dtype,
                shape=shape,
                module=module,
                source=source,
            )
        )
        known.add(outs[2])


def _slice(nodes, values, known, name: str | None, index: tuple, new: str) -> str | None:
    """A known weight's slice as a new parameter node, else the whole tensor's node."""
    if name is None or name not in values:
        return name
    arr = np.asarray(values[name])[index]
    if new not in known:
        values[new] = arr
        nodes.append(Node(new, "initializer", kind="param", dtype="float32", shape=arr.shape))
        known.add(new)
    return new
