"""Op-level tracing of an eagerly executed TensorFlow step, forward, backward and update.

``OpTrace`` is a context manager. Inside it every eager op is recorded through TensorFlow's
op-callback hook (the mechanism ``tf.debugging.enable_check_numerics`` is built on) with its
outputs checked for NaN/Inf on the host; gradient ops are tied to the forward op they
differentiate through the eager tape's gradient-function hook; the Keras layer running an op
comes from Keras' name-scope stack, and the user's source line from the Python stack.
Functions (``tf.function``, ``jit_compile``/XLA) run eagerly while tracing, so every op is
seen one by one.

This is a replay tool: it costs one host copy per op output. Detection during training is
done elsewhere, cheaply.

>>> with OpTrace(model) as tr:                   # doctest: +SKIP
...     logs = model.train_step((x, y))
>>> tr.origin().neutral_op                         # doctest: +SKIP
'log'
"""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
from tensorflow.python import pywrap_tfe
from tensorflow.python.eager import backprop
from tensorflow.python.framework import op_callbacks

from nantrap import ops as _ops
from nantrap.findings import Phase
from nantrap.guard.stats import TensorStats
from nantrap.tf._stats import as_array, is_finite, tensor_stats

__all__ = ["OpEvent", "OpTrace", "neutral_op"]

# Ops that move values without computing new ones: provenance looks through them.
PASS_THROUGH = frozenset(
    {
        "Identity",
        "IdentityN",
        "Reshape",
        "Cast",
        "ExpandDims",
        "Squeeze",
        "Transpose",
        "StridedSlice",
        "Slice",
        "ConcatV2",
        "Pack",
        "Unpack",
        "GatherV2",
        "Tile",
        "BroadcastTo",
        "ReadVariableOp",
        "Snapshot",
        "StopGradient",
        "PreventGradient",
    }
)
_GRAD_SUFFIXES = ("Grad", "GradGrad")


def neutral_op(op_type: str) -> str | None:
    """The neutral op name of a TF op type (``Log`` -> ``log``; ``SqrtGrad`` -> ``sqrt``)."""
    op = _ops.lookup("tf_op", op_type)
    if op is None:
        for suffix in _GRAD_SUFFIXES:
            if op_type.endswith(suffix):
                op = _ops.lookup("tf_op", op_type[: -len(suffix)])
                break
    return op.name if op is not None else None


@dataclass
class OpEvent:
    """One executed op. Keeps its tensors (a replay is short-lived) for statistics on demand."""

    index: int
    op: str  # TF op type: "Log", "SqrtGrad"
    phase: Phase
    module: str | None  # Keras layer path ("dense_1", "encoder/dense"), or a name scope
    layer_index: str | None  # "model.layers[2]"
    path: str | None
    line: int | None
    inputs: tuple[Any, ...]  # float tensors (others dropped), in argument order
    outputs: tuple[Any, ...]
    inputs_finite: tuple[bool, ...]
    outputs_finite: tuple[bool, ...]
    producers: tuple[int | None, ...]  # per input: index of the event that produced it
    leaves: tuple[str | None, ...]  # per input without producer: "input 0", "parameter ..."
    forward: int | None = None  # backward ops: the forward event being differentiated
    grad_seen: bool = False  # forward ops: a gradient flowed back through this op
    scope: str = ""

    @property
    def neutral_op(self) -> str | None:
        return neutral_op(self.op)

    @property
    def finite(self) -> bool:
        return all(self.outputs_finite)

    def bad_inputs(self) -> list[int]:
        return [i for i, ok in enumerate(self.inputs_finite) if not ok]

    @property
    def source_line(self) -> str | None:
        if self.path is None or self.line is None:
            return None
        return linecache.getline(self.path, self.line).strip() or None

    @property
    def dtype(self) -> str | None:
        tensors = self.outputs or self.inputs
        return tensors[0].dtype.name if tensors else None

    def input_stats(self, i: int) -> TensorStats:
        return tensor_stats(self.inputs[i])

    def output_stats(self, i: int = 0) -> TensorStats:
        return tensor_stats(self.outputs[i])


class OpTrace:
    """Record every op executed eagerly inside ``with``; query the records afterwards.

    Args:
        model: a Keras model: names layers (``model.layers[2]``) and variables.
        inputs: the batch being replayed (any nest of tensors): its leaves are named
            ``input 0``, ``input 1``... when an op reads them.
    """

    def __init__(self, model: Any = None, *, inputs: Any = None):
        self.model = model
        self.events: list[OpEvent] = []
        self._producer: dict[int, tuple[int, int]] = {}  # id(tensor) -> (event, output)
        self._finite: dict[int, bool] = {}
        self._keep: list[Any] = []  # keeps ids valid while tracing
        self._leaf_names: dict[int, str] = {}
        self._by_inputs: dict[tuple[int, ...], int] = {}  # forward ops by their input ids
        self._by_scope: dict[tuple[str, str], int] = {}  # (op, name scope) -> last forward op
        self._grad_stack: list[int | None] = []
        self._layer_index: dict[int, str] = {}
        self._var_names: dict[int, str] = {}
        self._frames = _FrameFilter()
        self._entry = None
        self._active = False
        self._was_eager_functions = False
        self.result: Any = None  # what the traced run returned (set by the caller)
        for i, t in enumerate(tf.nest.flatten(inputs) if inputs is not None else ()):
            self._leaf_names[id(t)] = f"input {i}"
            self._keep.append(t)
        if model is not None:
            self._index_layers(model, "model")
            for v in _variables(model):
                self._var_names[id(v.handle)] = f"parameter {v.path}"

    # context manager ------------------------------------------------------------------
    def __enter__(self) -> OpTrace:
        if self._active:
            raise RuntimeError("OpTrace is not reentrant")
        self._active = True
        self._entry = sys._getframe(1)
        self._was_eager_functions = tf.config.functions_run_eagerly()
        tf.config.run_functions_eagerly(True)
        op_callbacks.add_op_callback(self._on_op)
        pywrap_tfe.TFE_Py_RegisterGradientFunction(self._on_gradient)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._active:
            return
        self._active = False
        op_callbacks.remove_op_callback(self._on_op)
        pywrap_tfe.TFE_Py_RegisterGradientFunction(backprop._gradient_function)
        tf.config.run_functions_eagerly(self._was_eager_functions)
        self._entry = None

    # queries --------------------------------------------------------------------------
    def producer(self, tensor: Any) -> OpEvent | None:
        hit = self._producer.get(id(tensor))
        return None if hit is None else self.events[hit[0]]

    def first_nonfinite(self) -> OpEvent | None:
        """The earliest event with a non-finite output and only finite inputs (naive)."""
        for ev in self.events:
            if not ev.finite and not ev.bad_inputs():
                return ev
        return None

    def origin(self, bad: Iterable[Any] | None = None) -> OpEvent | None:
        """The first bad op on the path to the non-finite tensors ``bad``.

        Without ``bad``: the path to every non-finite gradient and update, or, when none is
        non-finite, to every non-finite result no op consumed (the loss). Walks producers
        back through non-finite inputs; a root is an event with no non-finite input, or one
        where a non-finite leaf (data, parameter) enters; the earliest root wins. Constants
        written non-finite on purpose (``-inf`` masks) are leaves named ``tensor`` and are
        not blamed.
        """
        if bad is not None:
            starts = [hit[0] for t in bad if (hit := self._producer.get(id(t))) is not None]
        else:
            starts = [e.index for e in self.events if not e.finite and e.phase is not Phase.FORWARD]
            if not starts:  # forward only: the non-finite results nothing consumed (the loss)
                used = {p for e in self.events for p in e.producers if p is not None}
                starts = [e.index for e in self.events if not e.finite and e.index not in used]
        return self.origin_of(starts)

    def origin_of(self, starts: Iterable[int]) -> OpEvent | None:
        seen: set[int] = set()
        stack = list(starts)
        roots: list[int] = []
        masked: list[int] = []
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            ev = self.events[i]
            bad_inputs = ev.bad_inputs()
            if not bad_inputs:
                roots.append(i)
                continue
            for pos in bad_inputs:
                producer = ev.producers[pos]
                if producer is not None:
                    stack.append(producer)
                elif ev.leaves[pos] == "tensor":
                    masked.append(i)  # an intentional non-finite constant flows in here
                else:
                    roots.append(i)  # non-finite data or parameter enters here
        if roots:
            return self.events[min(roots)]
        return self.events[min(masked)] if masked else None

    def root_leaf(self, ev: OpEvent) -> tuple[int, str] | None:
        """(input position, leaf name) if ``ev`` is where non-finite data/parameters enter."""
        for pos in ev.bad_inputs():
            if ev.producers[pos] is None and ev.leaves[pos] not in (None, "tensor"):
                return pos, ev.leaves[pos]
        return None

    def source_of(self, tensor: Any, *, max_hops: int = 8) -> OpEvent | None:
        """The event that computed ``tensor``, looking through reshapes/casts/identities."""
        ev = self.producer(tensor)
        hops = 0
        while ev is not None and ev.op in PASS_THROUGH and ev.producers and hops < max_hops:
            nxt = ev.producers[0]
            if nxt is None:
                break
            ev = self.events[nxt]
            hops += 1
        return ev

    def ancestors(self, tensor: Any) -> set[int]:
        """Indices of the events ``tensor`` was computed from (itself included)."""
        hit = self._producer.get(id(tensor))
        seen: set[int] = set()
        stack = [hit[0]] if hit is not None else []
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(p for p in self.events[i].producers if p is not None)
        return seen

    def forward_of(self, ev: OpEvent) -> OpEvent:
        """For a backward op, the forward op it differentiates (else ``ev`` itself)."""
        return self.events[ev.forward] if ev.forward is not None else ev

    # recording ------------------------------------------------------------------------
    def _on_op(self, op_type, inputs, attrs, outputs, op_name=None, graph=None):
        if graph is not None or not self._active:
            return None  # graph construction (a function being traced): not executed yet
        op = op_type.decode() if isinstance(op_type, bytes) else str(op_type)
        index = len(self.events)
        float_in = [t for t in (inputs or ()) if _is_float(t)]
        float_out = [t for t in (outputs or ()) if _is_float(t)]
        producers, leaves, in_ok = [], [], []
        for t in float_in:
            hit = self._producer.get(id(t))
            producers.append(None if hit is None else hit[0])
            leaves.append(None if hit is not None else self._leaf_names.get(id(t), "tensor"))
            in_ok.append(self._is_finite(t))
        out_ok = []
        for j, t in enumerate(float_out):
            ok = self._is_finite(t)
            out_ok.append(ok)
            self._producer[id(t)] = (index, j)
        if op == "ReadVariableOp" and inputs:
            name = self._var_names.get(id(inputs[0]))
            if name is not None and float_out and not all(out_ok):
                # a non-finite parameter: make it a leaf of the ops that read it
                for t in float_out:
                    self._producer.pop(id(t), None)
                    self._leaf_names[id(t)] = name
                self._keep.extend(float_out)
                return None
        phase, module, layer_index, scope = self._where()
        forward = self._grad_stack[-1] if self._grad_stack else None
        if self._grad_stack:
            phase = Phase.BACKWARD
        if forward is not None:
            fwd = self.events[forward]
            module, layer_index, path, line = fwd.module, fwd.layer_index, fwd.path, fwd.line
        elif self._grad_stack:
            module, layer_index, path, line = None, None, None, None
        else:
            path, line = self._frames.user_frame(sys._getframe(1), self._entry)
        ev = OpEvent(
            index=index,
            op=op,
            phase=phase,
            module=module,
            layer_index=layer_index,
            path=path,
            line=line,
            inputs=tuple(float_in),
            outputs=tuple(float_out),
            inputs_finite=tuple(in_ok),
            outputs_finite=tuple(out_ok),
            producers=tuple(producers),
            leaves=tuple(leaves),
            forward=forward,
            scope=scope,
        )
        self.events.append(ev)
        self._keep.extend(inputs or ())
        self._keep.extend(outputs or ())
        if phase is Phase.FORWARD:
            if inputs:
                self._by_inputs.setdefault(tuple(id(t) for t in inputs), index)
            self._by_scope[(op, scope)] = index
        return None

    def _on_gradient(self, *args):
        # TFE gradient-function signature: (op_name, attr_tuple, num_inputs, inputs,
        # outputs, out_grads, skip_input_indices, forward_pass_name_scope)
        inputs = args[3] if len(args) > 3 else None
        outputs = args[4] if len(args) > 4 else None
        forward = None
        for t in outputs or ():
            hit = self._producer.get(id(t))
            if hit is not None:
                forward = hit[0]
                break
        if forward is None and inputs:
            forward = self._by_inputs.get(tuple(id(t) for t in inputs))
        if forward is None and len(args) > 7 and args[7]:
            op = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
            forward = self._by_scope.get((op, str(args[7]).rstrip("/")))
        if forward is not None:
            self.events[forward].grad_seen = True
        self._grad_stack.append(forward)
        try:
            return backprop._gradient_function(*args)
        finally:
            self._grad_stack.pop()

    def _is_finite(self, t: Any) -> bool:
        key = id(t)
        ok = self._finite.get(key)
        if ok is None:
            arr = as_array(t)
            ok = True if arr is None else is_finite(arr)
            self._finite[key] = ok
            self._keep.append(t)
        return ok

    def _where(self) -> tuple[Phase, str | None, str | None, str]:
        scope = tf.get_current_name_scope()
        callers = _scope_callers()
        if any(_is_optimizer(c) for c in callers):
            return Phase.UPDATE, None, None, scope
        layers = [c for c in callers if _is_layer(c)]
        if self.model is not None and layers and layers[0] is self.model:
            layers = layers[1:]
        if layers:
            module = "/".join(layer.name for layer in layers)
            return Phase.FORWARD, module, self._layer_index.get(id(layers[-1])), scope
        return Phase.FORWARD, (scope or None), None, scope

    def _index_layers(self, layer: Any, prefix: str) -> None:
        for i, sub in enumerate(getattr(layer, "layers", None) or ()):
            key = f"{prefix}.layers[{i}]"
            self._layer_index.setdefault(id(sub), key)
            self._index_layers(sub, key)


# --- helpers ---------------------------------------------------------------------------------


def _is_float(t: Any) -> bool:
    dtype = getattr(t, "dtype", None)
    return bool(getattr(dtype, "is_floating", False))


def _variables(model: Any) -> list[Any]:
    seen, out = set(), []
    optimizer = getattr(model, "optimizer", None)
    for v in list(getattr(model, "variables", ())) + list(getattr(optimizer, "variables", ())):
        v = getattr(v, "value", v) if not hasattr(v, "handle") else v
        if hasattr(v, "handle") and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _scope_callers() -> list[Any]:
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # Keras absent: plain TF
        return []
    stack = global_state.get_global_attribute("name_scope_stack") or []
    return [c for s in stack if (c := getattr(s, "caller", None)) is not None]


def _is_layer(obj: Any) -> bool:
    import keras

    return isinstance(obj, keras.layers.Layer)


def _is_optimizer(obj: Any) -> bool:
    import keras

    return isinstance(obj, keras.optimizers.Optimizer)


_LAYER_CALL = os.path.join("keras", "src", "layers", "layer.py")


class _FrameFilter:
    """Tells the user's frames from those of TensorFlow, Keras, the stdlib and nantrap."""

    def __init__(self) -> None:
        import nantrap

        roots = [os.path.dirname(nantrap.__file__)]
        for name in ("tensorflow", "keras", "tf_keras", "absl", "numpy", "optree", "ml_dtypes"):
            mod = sys.modules.get(name)
            if mod is not None and getattr(mod, "__file__", None):
                roots.append(os.path.dirname(mod.__file__))
        roots += [sysconfig.get_paths()["stdlib"]]
        self._roots = tuple(os.path.join(os.path.realpath(r), "") for r in roots)
        self._user_in_nantrap = ("demo.py",)
        self._cache: dict[str, bool] = {}

    def is_user(self, filename: str) -> bool:
        hit = self._cache.get(filename)
        if hit is None:
            real = os.path.realpath(filename)
            hit = not real.startswith(self._roots) or os.path.basename(real) in (
                self._user_in_nantrap
            )
            hit = hit and not filename.startswith("<")
            self._cache[filename] = hit
        return hit

    def user_frame(self, frame: Any, stop: Any) -> tuple[str | None, int | None]:
        """The innermost user frame between ``frame`` and ``stop`` (exclusive).

        An op inside a built-in Keras layer has no line of its own: the search stops at the
        layer's ``__call__`` rather than blame the line that called the whole model.
        """
        while frame is not None and frame is not stop:
            code = frame.f_code
            if self.is_user(code.co_filename):
                return code.co_filename, frame.f_lineno
            if code.co_name == "__call__" and code.co_filename.endswith(_LAYER_CALL):
                return None, None
            frame = frame.f_back
        return None, None
