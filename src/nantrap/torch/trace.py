"""Op-level tracing of a training step, forward AND backward, for localizing NaN/Inf.

``OpTrace`` is a plain context manager (flop_counter's shape); inside it enters a private
``TorchDispatchMode`` that runs each aten op, summarizes its outputs (one fused aminmax
pass), and records an :class:`OpEvent`: aten op, neutral op, phase, module path, the
user's source line, input/output summaries and provenance (which recorded op produced
each input). Backward ops are mapped to the forward op whose autograd node runs them.

Per-op behaviour that differs from the default (allocation ops, intentional -inf
constants, ops that overwrite their input, losses, collectives) lives in handlers
registered with :func:`op_handler`, keyed by op packet or qualified name; duplicates are
refused.

Under FSDP2 (``fully_shard``) the mode sees the plain tensors of the compute: parameters
are all-gathered into unsharded plain tensors before each module's forward, which are
named after the module parameter they gather (``parameter model.head.fc.weight``);
DTensor arguments are summarized and keyed by their local shard; a collective whose
output went non-finite while this rank's inputs were finite is marked: the values came
from another rank.

The trace returns data and never prints. It is not reentrant: one ``OpTrace`` at a time
per thread.

>>> with OpTrace(model) as tr:            # doctest: +SKIP
...     loss = loss_fn(model(x), y); loss.backward()
>>> tr.origin([loss]).neutral_op          # doctest: +SKIP
'log'
"""

from __future__ import annotations

import linecache
import logging
import math
import os
import sys
import sysconfig
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nantrap import ops as _ops
from nantrap.findings import Phase
from nantrap.guard.diagnose import OpRecord
from nantrap.guard.stats import TensorStats
from nantrap.torch._tensor_stats import (
    CLEAN,
    Summary,
    dtype_name,
    local_tensor,
    summarize,
    tensor_stats,
)

__all__ = ["OpCall", "OpEvent", "OpTrace", "exit_mode", "named_modules", "op_handler"]

aten = torch.ops.aten

# --- handlers -------------------------------------------------------------------------------


@dataclass
class OpCall:
    """What a handler sees of one op call, and the flags it may set."""

    func: Any
    args: tuple
    kwargs: dict
    out: Any
    uninitialized: bool = False  # outputs hold garbage (empty*): neither checked nor blamed
    intentional: bool = False  # non-finite output wanted (an -inf mask constant)
    overwrites: frozenset[int] = frozenset()  # tensor-input positions whose values are unread
    full_stats: bool = False  # record full TensorStats of inputs (losses: targets)
    collective: bool = False  # outputs combine other ranks' values (all-gather, all-reduce)


Handler = Callable[[OpCall], None]
HANDLERS: dict[Any, Handler] = {}


def op_handler(*packets: Any) -> Callable[[Handler], Handler]:
    """Register ``fn`` for the given op packets (``aten.empty_like``) or qualified names
    of ops that may not be loaded (``"fsdp::chunk_cat"``); refuse duplicates."""

    def register(fn: Handler) -> Handler:
        for packet in packets:
            named = isinstance(packet, str) and "::" in packet
            if not (named or isinstance(packet, torch._ops.OpOverloadPacket)):
                raise ValueError(
                    f"op_handler expects op packets or 'namespace::name', got {packet!r}"
                )
            if packet in HANDLERS:
                raise RuntimeError(f"a tracer handler for {packet} is already registered")
            HANDLERS[packet] = fn
        return fn

    return register


def _handler(handlers: Mapping[Any, Handler], func: Any) -> Handler | None:
    packet = func.overloadpacket
    found = handlers.get(packet)
    return found if found is not None else handlers.get(packet._qualified_op_name)


@op_handler(
    aten.empty,
    aten.empty_like,
    aten.empty_strided,
    aten.new_empty,
    aten.new_empty_strided,
    aten.empty_permuted,
)
def _allocation(call: OpCall) -> None:
    """NB: uninitialized memory may hold NaN before it is filled (dropout's empty_like)."""
    call.uninitialized = True


@op_handler(
    aten.scalar_tensor,
    aten.full,
    aten.full_like,
    aten.new_full,
    aten.fill,
    aten.fill_,
    aten.masked_fill,
    aten.masked_fill_,
    aten.index_put,
    aten.index_put_,
)
def _constant(call: OpCall) -> None:
    """A non-finite scalar written on purpose (attention masks use -inf) is not an incident."""
    scalars = [a for a in tree_leaves((call.args, call.kwargs)) if isinstance(a, (int, float))]
    if any(isinstance(s, float) and not math.isfinite(s) for s in scalars):
        call.intentional = True
    if call.func.overloadpacket in (aten.fill, aten.fill_):
        call.overwrites = frozenset({0})


@op_handler(
    aten.bernoulli,
    aten.bernoulli_,
    aten.uniform,
    aten.uniform_,
    aten.normal,
    aten.normal_,
    aten.random,
    aten.random_,
    aten.exponential,
    aten.exponential_,
    aten.zero,
    aten.zero_,
    aten.zeros_like,
    aten.ones_like,
    aten.rand_like,
    aten.randn_like,
)
def _overwrite(call: OpCall) -> None:
    """Ops that only read their input's shape: its (possibly uninitialized) values don't count."""
    call.overwrites = frozenset({0})


@op_handler(aten.copy, aten.copy_)
def _copy(call: OpCall) -> None:
    call.overwrites = frozenset({0})  # the destination


@op_handler(
    "c10d::_allgather_base_",
    "c10d::_reduce_scatter_base_",
    "c10d::alltoall_base_",
)
def _collective_into(call: OpCall) -> None:
    """Collectives that fill their first argument from every rank's second."""
    call.collective = True
    call.overwrites = frozenset({0})


@op_handler(
    "c10d::allgather_into_tensor_coalesced_",
    "c10d::reduce_scatter_tensor_coalesced_",
)
def _collective_into_many(call: OpCall) -> None:
    call.collective = True
    call.overwrites = frozenset(range(len(call.args[0])))


@op_handler(
    "c10d::allreduce_",
    "c10d::broadcast_",
    "c10d::reduce_",
    "_c10d_functional::wait_tensor",
)
def _collective(call: OpCall) -> None:
    call.collective = True


@op_handler(
    "_c10d_functional::all_gather_into_tensor",
    "_c10d_functional::reduce_scatter_tensor",
    "_c10d_functional::all_reduce",
    "_c10d_functional::all_reduce_",
    "_c10d_functional::broadcast",
    "_c10d_functional::all_to_all_single",
)
def _collective_async(call: OpCall) -> None:
    """Functional collectives return before the values arrive: ``wait_tensor`` has them."""
    call.collective = True
    call.uninitialized = True


@op_handler("fsdp::all_gather_copy_in")
def _fsdp_copy_in(call: OpCall) -> None:
    """FSDP2 packs this rank's shards into the all-gather buffer (its 2nd argument)."""
    call.overwrites = frozenset({len(call.args[0])})


@op_handler("fsdp::split_with_sizes_copy")
def _fsdp_split_copy(call: OpCall) -> None:
    """FSDP2 copies the all-gathered buffer (1st argument) out to the unsharded tensors."""
    out = call.kwargs.get("out", call.args[3] if len(call.args) > 3 else ())
    call.overwrites = frozenset(range(1, 1 + len(out)))


@op_handler("fsdp::chunk_cat")
def _fsdp_chunk_cat(call: OpCall) -> None:
    """FSDP2 packs the unsharded gradients into the reduce-scatter buffer (``out``)."""
    call.overwrites = frozenset({len(call.args[0])})


@op_handler(
    aten.nll_loss_forward,
    aten.nll_loss2d_forward,
    aten.binary_cross_entropy,
    aten.binary_cross_entropy_with_logits,
    aten.mse_loss,
    aten.l1_loss,
    aten.smooth_l1_loss,
    aten.huber_loss,
    aten.kl_div,
    aten.cross_entropy_loss,
)
def _loss(call: OpCall) -> None:
    """Losses keep full statistics of their targets (range checks: BCE in [0, 1], CE < C)."""
    call.full_stats = True


_METADATA = {
    aten.size,
    aten.stride,
    aten.sym_size,
    aten.sym_stride,
    aten.sym_numel,
    aten.sym_storage_offset,
    aten.is_same_size,
    aten._local_scalar_dense,
    aten.dim,
    aten.is_contiguous,
}

# Ops whose outputs are finite whenever their inputs are (no overflow, no pole): their
# outputs need no scan when every input is known finite.
_FINITE_PRESERVING = {
    aten.relu,
    aten.threshold_backward,
    aten.gelu,
    aten.silu,
    aten.sigmoid,
    aten.tanh,
    aten._softmax,
    aten._log_softmax,
    aten.max_pool2d_with_indices,
    aten.clone,
    aten.cat,
    aten.stack,
    aten.slice,
    aten.select,
    aten.index,
    aten.index_select,
    aten.gather,
    aten.embedding,
    aten.where,
    aten.abs,
    aten.neg,
    aten.clamp,
    aten.clamp_min,
    aten.clamp_max,
    aten.amax,
    aten.amin,
    aten.max,
    aten.min,
    aten.sort,
    aten.topk,
    aten.flip,
    aten.roll,
    aten.repeat,
    aten.constant_pad_nd,
    aten.split,
    aten.split_with_sizes,
    aten.unbind,
}
_UNKNOWN_FINITE = Summary(math.nan, math.nan, False, False)

_ALIASES = {
    "detach",
    "alias",
    "view",
    "_unsafe_view",
    "reshape",
    "t",
    "transpose",
    "permute",
    "expand",
    "unsqueeze",
    "squeeze",
    "contiguous",
    "clone",
    "_to_copy",
    "as_strided",
}

# --- events ---------------------------------------------------------------------------------


@dataclass
class OpEvent:
    """One recorded aten op. Holds numbers and indices, never tensors."""

    index: int
    op: str  # "aten.log.default"
    neutral_op: str | None
    phase: Phase
    module: str | None
    path: str | None
    line: int | None
    source_line: str | None
    dtype: str | None
    inputs: tuple[Summary, ...]  # per tensor input, in argument order
    outputs: tuple[Summary, ...]
    producers: tuple[int | None, ...]  # per tensor input: the event that produced it
    leaves: tuple[str | None, ...]  # per tensor input without producer: what it is
    scalars: tuple[float, ...] = ()
    node: str | None = None  # autograd node running this op (backward)
    forward: int | None = None  # backward: the forward event that created the node
    intentional: bool = False
    uninitialized: bool = False
    overwrites: frozenset[int] = frozenset()
    collective: bool = False  # a collective: non-finite from finite inputs = another rank's
    full_inputs: tuple[TensorStats | None, ...] = ()  # only where recorded (see OpTrace)
    full_outputs: tuple[TensorStats | None, ...] = ()
    error: str | None = None  # the op raised this

    @property
    def finite(self) -> bool:
        return all(s.finite for s in self.outputs)

    def bad_inputs(self) -> list[int]:
        return [i for i, s in enumerate(self.inputs) if not s.finite and i not in self.overwrites]


@dataclass
class _Entry:
    event: int | None
    summary: Summary
    leaf: str | None = None
    seen: int = -1  # the last event when this was recorded; a later write makes it stale


# --- the public tracer --------------------------------------------------------------------


class OpTrace:
    """Trace every aten op of forward and backward inside ``with``; query it afterwards.

    Args:
        model: names modules (``model.head.fc``) and parameters; optional.
        custom_handlers: ``{aten.packet: fn}`` merged over the registered handlers for this
            trace only.
        root: the name given to ``model`` in module paths.
        modules: ``(path, module)`` pairs whose forward names the ops it runs, instead of
            ``model.named_modules()`` (Keras layers on the torch backend are modules that
            ``named_modules`` does not list).
        leaf_names: names of leaf tensors by ``id`` (``"parameter dense/kernel"``), over
            the names from ``model.named_parameters()``.
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        *,
        custom_handlers: Mapping[Any, Handler] | None = None,
        root: str = "model",
        modules: Iterable[tuple[str, torch.nn.Module]] | None = None,
        leaf_names: Mapping[int, str] | None = None,
    ):
        if model is not None and not isinstance(model, torch.nn.Module):
            from nantrap.errors import ConfigError

            raise ConfigError(
                f"OpTrace(model=...) needs a torch.nn.Module or None, got {type(model).__name__}"
            )
        self.model = model
        self.root = root
        self._module_paths = None if modules is None else list(modules)
        self._extra_leaf_names = dict(leaf_names or {})
        self.events: list[OpEvent] = []
        self.failures: list[str] = []  # ops the tracer could not record (the ops still ran)
        self._handlers = {**HANDLERS, **(custom_handlers or {})}
        self._tensors: dict[tuple, _Entry] = {}
        self._leaf_names: dict[int, str] = {}
        self._shard_names: dict[int, str] = {}  # storage -> the DTensor parameter it shards
        self._gathered: dict[int, str] = {}  # id -> name of unsharded (all-gathered) params
        self._gathered_refs: list[torch.Tensor] = []  # keeps those ids valid while tracing
        # storage -> the last event that wrote into it, and its owner (a view keeps its
        # base alive: while the base lives, so does the storage, and the address is its)
        self._writers: dict[int, tuple[int, weakref.ref]] = {}
        # collective -> (storage, owner) of its outputs: read back when used, while alive
        self._collectives: dict[int, list[tuple[int | None, weakref.ref]]] = {}
        self._after_collective: int | None = None  # the last event, if it was a collective
        self._modules: list[str] = []
        self._hooks: list[Any] = []
        self._pending: list[tuple[weakref.ref, int, int]] = []
        self._nodes: dict[int, int] = {}  # id(autograd node) -> forward event index
        self._node_refs: list[Any] = []  # keeps the ids above valid while tracing
        self._grad_leaves: list[weakref.ref] = []
        self._mode: _TraceMode | None = None
        self._frames = _FrameFilter()

    # context manager ------------------------------------------------------------------
    def __enter__(self) -> OpTrace:
        return self.start()

    def start(self, *, root_args: Any = None) -> OpTrace:
        """Begin tracing. ``root_args``: called from inside the model's own forward (its
        pre-hook), with the forward's arguments, so the root module and inputs are named."""
        if self._mode is not None:
            raise RuntimeError("OpTrace is not reentrant")
        self._install_hooks()
        if root_args is not None and self.model is not None:
            self._modules.append(self.root)
            self._name_inputs(self.model, root_args)
            self._name_gathered(self.root, self.model)
        self._mode = _TraceMode(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End tracing (idempotent); recorded events stay."""
        if self._mode is not None:
            mode, self._mode = self._mode, None
            exit_mode(mode)
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._modules.clear()
        self._pending.clear()
        self._node_refs.clear()
        self._gathered_refs.clear()
        self._writers.clear()

    # queries ----------------------------------------------------------------------------
    def leaves(self) -> list[torch.Tensor]:
        """The leaf tensors that require grad seen while tracing (still alive)."""
        return [t for ref in self._grad_leaves if (t := ref()) is not None]

    def producer(self, t: torch.Tensor) -> OpEvent | None:
        """The recorded event that last wrote ``t``."""
        entry = self._tensors.get(_key(local_tensor(t)))
        return None if entry is None or entry.event is None else self.events[entry.event]

    def first_nonfinite(self) -> OpEvent | None:
        """The earliest event whose output is non-finite while its inputs were finite,
        ignoring allocations and intentional constants (a naive answer; see ``origin``)."""
        for ev in self.events:
            if not ev.finite and not ev.bad_inputs() and not ev.intentional:
                return ev
        return None

    def origin(self, bad: Iterable[torch.Tensor]) -> OpEvent | None:
        """The first bad op on the path to the non-finite tensors ``bad``.

        Walks producers back from ``bad`` through non-finite inputs. A root is an event with
        no non-finite input (or a non-finite leaf: data or parameter); the earliest root
        wins. Roots that are intentional constants (-inf masks) are not blamed: the event
        on their path where NaN first appeared is.
        """
        starts = [e.index for t in bad if (e := self.producer(t)) is not None]
        return self.origin_of(starts)

    def origin_of(self, starts: Iterable[int]) -> OpEvent | None:
        seen: set[int] = set()
        stack = list(starts)
        roots: list[int] = []
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            ev = self.events[i]
            # NB: a gradient path runs through autograd nodes; if the forward op of a node
            # on it already had a non-finite output, the incident started there.
            fwd = self.events[ev.forward] if ev.forward is not None else None
            if fwd is not None and not fwd.finite and not fwd.intentional:
                stack.append(fwd.index)
            bad_inputs = ev.bad_inputs()
            if not bad_inputs:
                if not ev.intentional and not ev.finite:
                    roots.append(i)
                continue
            for pos in bad_inputs:
                producer = ev.producers[pos]
                if producer is None:
                    roots.append(i)  # a non-finite leaf (data, parameter) enters here
                else:
                    stack.append(producer)
        if roots:
            return self.events[min(roots)]
        newly_nan = [
            i
            for i in seen
            if any(s.nan for s in self.events[i].outputs)
            and not any(self.events[i].inputs[p].nan for p in self.events[i].bad_inputs())
            and not self.events[i].intentional
        ]
        if newly_nan:
            return self.events[min(newly_nan)]
        return None

    def record(self, ev: OpEvent, *, depth: int = 3) -> OpRecord:
        """The framework-neutral view of ``ev`` (with producers ``depth`` levels up) that
        :func:`nantrap.guard.diagnose.diagnose` reads."""
        producers = tuple(
            self.record(self.events[self._through_aliases(p)], depth=depth - 1)
            if p is not None and depth > 0
            else None
            for p in ev.producers
        )
        forward = None
        if ev.forward is not None:
            forward = self.record(self.events[ev.forward], depth=max(depth - 1, 1))
        return OpRecord(
            op=ev.op,
            neutral_op=ev.neutral_op,
            phase=ev.phase,
            module=ev.module,
            path=ev.path,
            line=ev.line,
            source_line=ev.source_line,
            dtype=ev.dtype,
            inputs=tuple(
                full or _light(s, ev.dtype)
                for full, s in zip(_pad(ev.full_inputs, len(ev.inputs)), ev.inputs, strict=True)
            ),
            outputs=tuple(
                full or _light(s, ev.dtype)
                for full, s in zip(_pad(ev.full_outputs, len(ev.outputs)), ev.outputs, strict=True)
            ),
            scalars=ev.scalars,
            producers=producers,
            leaves=ev.leaves,
            node=ev.node,
            forward=forward,
            error=ev.error,
        )

    def _through_aliases(self, index: int) -> int:
        """Skip ops that only re-label the same values (detach, view, t...)."""
        ev = self.events[index]
        while ev.op.split(".")[1] in _ALIASES and ev.producers and ev.producers[0] is not None:
            ev = self.events[ev.producers[0]]
        return ev.index

    # recording (called by the mode) ----------------------------------------------------
    def _install_hooks(self) -> None:
        if self.model is None:
            return
        for path, module in named_modules(self.model, self.root, self._module_paths):
            self._hooks.append(module.register_forward_pre_hook(self._pre_hook(path)))
            self._hooks.append(module.register_forward_hook(self._post_hook, always_call=True))
        for name, p in self.model.named_parameters():
            self._leaf_names[id(p)] = f"parameter {self.root}.{name}"
            if (local := local_tensor(p)) is not p and (storage := _storage(local)) is not None:
                self._shard_names[storage] = f"parameter {self.root}.{name} (this rank's shard)"
        for name, b in self.model.named_buffers():
            self._leaf_names[id(b)] = f"buffer {self.root}.{name}"
        self._leaf_names.update(self._extra_leaf_names)
        self._hooks.append(self.model.register_forward_pre_hook(self._name_inputs))

    def _pre_hook(self, path: str) -> Callable:
        def hook(module: torch.nn.Module, args: Any) -> None:
            self._modules.append(path)
            self._name_gathered(path, module)

        return hook

    def _name_gathered(self, path: str, module: torch.nn.Module) -> None:
        """Name the parameters ``module`` holds now that it did not hold when tracing began:
        FSDP2 swaps in the unsharded tensors it all-gathered (in its own pre-forward hook,
        which runs before this one). An FSDP2 unit has gathered all of its subtree's (a
        forward may read a submodule's weight without calling it: tied weights)."""
        params = module.named_parameters() if _fsdp_unit(module) else module._parameters.items()
        for name, p in params:
            if p is not None and id(p) not in self._leaf_names and id(p) not in self._gathered:
                self._gathered[id(p)] = f"parameter {path}.{name}"
                self._gathered_refs.append(p)

    def _post_hook(self, module: torch.nn.Module, args: Any, out: Any) -> None:
        if self._modules:
            self._modules.pop()

    def _name_inputs(self, module: torch.nn.Module, args: Any) -> None:
        for i, t in enumerate(a for a in tree_leaves(args) if isinstance(a, torch.Tensor)):
            self._leaf_names.setdefault(id(t), f"input {i}")

    def _resolve_pending(self) -> None:
        keep = []
        for ref, index, age in self._pending:
            t = ref()
            if t is None:
                continue
            fn = t.grad_fn
            if fn is not None:
                if id(fn) not in self._nodes:
                    self._nodes[id(fn)] = index
                    self._node_refs.append(fn)
            elif age < 4:
                keep.append((ref, index, age + 1))
        self._pending = keep

    # NB: a failure of the tracer's own bookkeeping loses that op's record, never the step:
    # under torch.distributed, a rank whose step stopped short would leave the others
    # waiting in a collective
    def _before(self, func: Any, args: tuple, kwargs: dict) -> tuple[torch.Tensor, ...]:
        try:
            self._resolve_pending()
            written = _written(func, args, kwargs)
            for t in written:
                self._summary_of(t)  # NB: its value before the op overwrites it
            return written
        except Exception as err:
            self._failed(func, err)
            return ()

    def _after(
        self,
        func: Any,
        args: tuple,
        kwargs: dict,
        out: Any,
        error: str | None,
        written: tuple[torch.Tensor, ...],
    ) -> None:
        try:
            self._record(func, args, kwargs, out, error, written)
        except Exception as err:
            self._failed(func, err)

    def _failed(self, func: Any, err: Exception) -> None:
        self.failures.append(f"{func}: {type(err).__name__}: {err}")
        logging.getLogger("nantrap").debug("nantrap: tracing %s failed: %r", func, err)

    def _summary_of(self, t: torch.Tensor) -> _Entry:
        local = local_tensor(t)
        key = _key(local)
        entry = self._tensors.get(key)
        writer = self._writer(local) if self._writers else None
        if entry is not None and writer is not None and writer > entry.seen:
            entry = None  # written since, through another view (FSDP's copy-out ops)
        stale = entry is not None and entry.event in self._collectives
        if stale and not self._holds_output(entry.event, local):  # type: ignore[union-attr]
            entry = None  # that output was freed; its address holds another tensor
        gathered = self._gathered.get(id(t)) if self._gathered else None
        if entry is not None and entry.event in self._collectives:
            # NB: a collective returns before its values arrive (async work): read them now
            entry = self._collective_result(entry.event, local)
            self._tensors[key] = entry
        elif gathered is not None and (entry is None or entry.leaf != gathered):
            # an unsharded parameter is what the user's module reads: a leaf, named
            entry = _Entry(None, summarize(local), gathered, seen=len(self.events) - 1)
            self._tensors[key] = entry
        elif entry is None:
            seen = len(self.events) - 1
            name = self._leaf_names.get(id(t))
            if name is None and self._shard_names:
                name = self._shard_names.get(_storage(local))  # type: ignore[arg-type]
            if writer is not None:
                entry = (
                    self._collective_result(writer, local)
                    if writer in self._collectives
                    else _Entry(writer, summarize(local), seen=seen)
                )
            elif name is None and self._after_collective is not None:
                # NB: the op right after a collective reading a tensor no traced op made
                # reads the collective's result (gloo's reduce-scatter copies it out of its
                # own buffer when the work completes)
                entry = self._collective_result(self._after_collective, local)
            else:
                entry = _Entry(None, summarize(local), name or "tensor", seen=seen)
                if t.requires_grad and t.is_leaf:
                    self._grad_leaves.append(weakref.ref(t))
            self._tensors[key] = entry
        return entry

    def _writer(self, local: torch.Tensor) -> int | None:
        """The last event that wrote into ``local``'s storage, if its owner is alive."""
        storage = _storage(local)
        found = self._writers.get(storage) if storage is not None else None
        if found is None:
            return None
        owner = found[1]()
        if owner is None or _storage(owner) != storage:
            # freed, or its storage moved (FSDP2 resizes freed buffers to 0): the address
            # may hold another tensor now
            del self._writers[storage]  # type: ignore[arg-type]
            return None
        return found[0]

    def _holds_output(self, index: int, local: torch.Tensor) -> bool:
        """``local`` lives in the storage of a still-alive output of collective ``index``."""
        storage = _storage(local)
        for where, ref in self._collectives[index]:
            owner = ref()
            if where == storage and owner is not None and _storage(owner) == storage:
                return True
        return False

    def _collective_result(self, index: int, local: torch.Tensor) -> _Entry:
        """An output of collective ``index``, read now; a non-finite one goes on its record
        (recorded when the op returned, before the other ranks' values had arrived)."""
        s = summarize(local)
        ev = self.events[index]
        if not s.finite and ev.finite:
            ev.outputs = (s, *ev.outputs[1:])
        return _Entry(index, s, seen=len(self.events) - 1)

    def _record(
        self,
        func: Any,
        args: tuple,
        kwargs: dict,
        out: Any,
        error: str | None,
        written: tuple[torch.Tensor, ...] = (),
    ) -> None:
        call = OpCall(func, args, kwargs, out)
        handler = _handler(self._handlers, func)
        if handler is not None:
            handler(call)
        flat = tree_leaves((args, kwargs))
        tensors = [a for a in flat if isinstance(a, torch.Tensor)]
        if out_args := _out_args(func, args, kwargs):
            # NB: an out= destination's old values are unread (DDP's bucket, from empty)
            dests = {i for i, t in enumerate(tensors) if any(t is o for o in out_args)}
            if len(dests) == len(out_args):  # not also passed as an input
                call.overwrites = call.overwrites | dests
        scalars = tuple(
            float(a)
            for a in flat
            if isinstance(a, (int, float)) and a is not True and a is not False
        )
        entries = [
            _Entry(None, CLEAN) if i in call.overwrites else self._summary_of(t)
            for i, t in enumerate(tensors)
        ]
        outs = [o for o in tree_leaves(out) if isinstance(o, torch.Tensor)] if error is None else []
        if call.uninitialized:
            out_summaries = [CLEAN] * len(outs)
        elif func.is_view and len(tensors) == 1 and outs and outs[0].numel() >= tensors[0].numel():
            out_summaries = [entries[0].summary] * len(outs)
        elif (
            func.overloadpacket in _FINITE_PRESERVING
            and all(e.summary.finite for e in entries)
            and all(math.isfinite(v) for v in scalars)
        ):
            out_summaries = [_UNKNOWN_FINITE] * len(outs)
        else:
            out_summaries = [summarize(o) for o in outs]
        # NB: arguments the op writes (batch_norm's running stats) are outputs too
        extra = [w for w in written if not any(w is o for o in outs)] if error is None else []
        outs += extra
        out_summaries += [summarize(w) for w in extra]
        if error is None and not func.is_view:
            # NB: an op that writes into a tensor it was given (in place, out=, collectives)
            # writes its storage: entries of other views of it are stale from now on
            for o in outs:
                if not any(o is t for t in tensors):
                    continue
                local = local_tensor(o)
                if (storage := _storage(local)) is not None:
                    owner = local._base if local._base is not None else local
                    self._writers[storage] = (len(self.events), weakref.ref(owner))

        node = _current_node()
        forward = self._nodes.get(id(node)) if node is not None else None
        index = len(self.events)
        if node is None:
            phase = Phase.FORWARD
            path, line = self._frames.user_frame()
            module = self._modules[-1] if self._modules else None
        else:
            phase = Phase.BACKWARD
            fwd = self.events[forward] if forward is not None else None
            path, line = (fwd.path, fwd.line) if fwd else (None, None)
            module = fwd.module if fwd else None
        float_ts = [t for t in (*outs, *tensors) if t.is_floating_point()]
        ev = OpEvent(
            index=index,
            op=str(func),
            neutral_op=_neutral(func),
            phase=phase,
            module=module,
            path=path,
            line=line,
            source_line=linecache.getline(path, line).strip() or None if path and line else None,
            dtype=dtype_name(float_ts[0].dtype) if float_ts else None,
            inputs=tuple(e.summary for e in entries),
            outputs=tuple(out_summaries),
            producers=tuple(e.event for e in entries),
            leaves=tuple(e.leaf if e.event is None else None for e in entries),
            scalars=scalars,
            node=node.name() if node is not None else None,
            forward=forward,
            intentional=call.intentional,
            uninitialized=call.uninitialized,
            overwrites=call.overwrites,
            collective=call.collective,
            error=error,
        )
        bad_in = ev.bad_inputs()
        suspicious = (not ev.finite and not call.intentional) and (
            not bad_in
            or (any(s.nan for s in out_summaries) and not any(ev.inputs[i].nan for i in bad_in))
        )
        # NB: in backward, a bad leaf was already caught where it entered the forward
        leaf_bad = node is None and any(e.event is None and not e.summary.finite for e in entries)
        if call.full_stats or suspicious or leaf_bad or error is not None:
            # NB: an in-place op's first argument now holds its output, not its input
            mutated = {0} if _inplace(func) else set()
            mutated |= {i for i, t in enumerate(tensors) if any(t is w for w in written)}
            ev.full_inputs = tuple(
                None if i in call.overwrites or i in mutated else tensor_stats(local_tensor(t))
                for i, t in enumerate(tensors)
            )
            ev.full_outputs = tuple(tensor_stats(local_tensor(o)) for o in outs)
        self.events.append(ev)
        if call.collective:
            owners = [(lt._base if lt._base is not None else lt) for lt in map(local_tensor, outs)]
            self._collectives[index] = [(_storage(o), weakref.ref(o)) for o in owners]
            self._after_collective = index
        elif tensors:
            self._after_collective = None
        # NB: an alias with its input's key is the same data seen the same way (autograd's
        # detach to save a result): keep the producer. Any other entry under the key is
        # stale (a freed tensor's memory reused, or another view written since).
        alias = str(func).split(".")[1] in _ALIASES
        same_view = {_key(local_tensor(t)) for t in tensors[:1]} if alias else ()
        for o, s in zip(outs, out_summaries, strict=True):
            key = _key(local_tensor(o))
            if key in same_view and key in self._tensors:
                continue
            self._tensors[key] = _Entry(index, s, seen=index)
            if node is None and o.is_floating_point():
                self._pending.append((weakref.ref(o), index, 0))


class _TraceMode(TorchDispatchMode):
    """The private dispatch mode behind :class:`OpTrace`."""

    def __init__(self, tracer: OpTrace):
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in _METADATA:
            return func(*args, **kwargs)
        tracer = self.tracer
        written = tracer._before(func, args, kwargs)
        try:
            out = func(*args, **kwargs)
        except Exception as exc:
            tracer._after(func, args, kwargs, None, f"{type(exc).__name__}: {exc}", ())
            raise
        tracer._after(func, args, kwargs, out, None, written)
        return out


def named_modules(
    model: torch.nn.Module,
    root: str,
    given: Iterable[tuple[str, torch.nn.Module]] | None = None,
) -> list[tuple[str, torch.nn.Module]]:
    """``(path, module)`` for every module whose forward names ops: ``given`` as it is, or
    ``model.named_modules()`` with paths under ``root``."""
    if given is not None:
        return list(given)
    return [(f"{root}.{name}" if name else root, m) for name, m in model.named_modules()]


def exit_mode(mode: TorchDispatchMode) -> None:
    """Exit ``mode`` even when another mode was entered after it and is still active
    (two tools that start and stop at different points of a step); the modes above it
    stay, in order. A mode no longer on the stack is left alone."""
    from torch.utils._python_dispatch import (
        _get_current_dispatch_mode_stack,
        _pop_mode,
        _push_mode,
    )

    stack = _get_current_dispatch_mode_stack()
    if not any(m is mode for m in stack):
        return
    above = []
    while stack[-1] is not mode:
        above.append(_pop_mode())
        stack.pop()
    mode.__exit__(None, None, None)
    for m in reversed(above):
        _push_mode(m)


# --- helpers ------------------------------------------------------------------------------


def _key(t: torch.Tensor) -> tuple:
    """Identify a tensor by its data, not its Python object (saved tensors come back as
    new objects in backward). ``t``: a plain tensor (a DTensor's local shard)."""
    if t.numel() == 0:
        return ("empty", id(t))
    return (t.device.type, t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _fsdp_unit(module: torch.nn.Module) -> bool:
    """``module`` was given to FSDP2's ``fully_shard`` (only if FSDP2 was imported)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    unit = getattr(fsdp, "FSDPModule", None) if fsdp is not None else None
    return unit is not None and isinstance(module, unit)


def _storage(t: torch.Tensor) -> int | None:
    """Where ``t``'s storage lives (views of one tensor share it); None without one."""
    try:
        return t.untyped_storage().data_ptr() or None
    except Exception:  # NB: subclasses without storage raise various errors
        return None


# NB: private torch API (present since torch 2.1); without it every op reads as forward
_current_node = getattr(torch._C, "_current_autograd_node", lambda: None)


_WRITES: dict[Any, tuple[tuple[int, str], ...]] = {}
# NB: these update the running stats in place though their schemas do not say so
_UNDECLARED_WRITES = {
    "aten::native_batch_norm": ((3, "running_mean"), (4, "running_var")),
    "aten::cudnn_batch_norm": ((3, "running_mean"), (4, "running_var")),
    "aten::miopen_batch_norm": ((3, "running_mean"), (4, "running_var")),
    # NB: collectives and FSDP2's copy-in write their destinations; no schema says so
    "c10d::_allgather_base_": ((0, "output_tensor"),),
    "c10d::_reduce_scatter_base_": ((0, "output_tensor"),),
    "c10d::alltoall_base_": ((0, "output"),),
    "c10d::allgather_into_tensor_coalesced_": ((0, "outputs"),),
    "c10d::reduce_scatter_tensor_coalesced_": ((0, "outputs"),),
    "c10d::allreduce_": ((0, "tensors"),),
    "c10d::broadcast_": ((0, "tensors"),),
    "c10d::reduce_": ((0, "tensors"),),
    "fsdp::all_gather_copy_in": ((1, "all_gather_output"),),
}


def _written(func: Any, args: tuple, kwargs: dict) -> tuple[torch.Tensor, ...]:
    """The tensor arguments ``func`` writes in place, per its schema (``Tensor(a!)``,
    ``Tensor(a!)[]``) or :data:`_UNDECLARED_WRITES`."""
    slots = _WRITES.get(func)
    if slots is None:
        schema = func._schema
        slots = _UNDECLARED_WRITES.get(schema.name) or tuple(
            (i, a.name)
            for i, a in enumerate(schema.arguments)
            if a.alias_info is not None and a.alias_info.is_write
        )
        _WRITES[func] = slots
    found = []
    for i, name in slots:
        value = args[i] if i < len(args) else kwargs.get(name)
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found += [v for v in value if isinstance(v, torch.Tensor)]
    return tuple(found)


_OUTS: dict[Any, tuple[tuple[int, str], ...]] = {}


def _out_args(func: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors given as ``out=`` destinations (schema ``is_out``)."""
    slots = _OUTS.get(func)
    if slots is None:
        slots = tuple((i, a.name) for i, a in enumerate(func._schema.arguments) if a.is_out)
        _OUTS[func] = slots
    found: list[torch.Tensor] = []
    for i, name in slots:
        value = kwargs.get(name, args[i] if i < len(args) else None)
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found += [v for v in value if isinstance(v, torch.Tensor)]
    return found


def _inplace(func: Any) -> bool:
    return str(func).split(".")[1].endswith("_")


def _neutral(func: Any) -> str | None:
    op = _ops.lookup("aten", str(func))
    return op.name if op is not None else None


def _light(s: Summary, dtype: str | None) -> TensorStats:
    """A TensorStats carrying only what the summary knows (min/max; NaN/Inf as 1 if present)."""
    finite_min = s.min if math.isfinite(s.min) else math.nan
    finite_max = s.max if math.isfinite(s.max) else math.nan
    return TensorStats(
        numel=-1,
        dtype=dtype or "",
        min=finite_min,
        max=finite_max,
        nan=int(s.nan),
        inf=int(s.inf),
        neg_inf=int(s.min == -math.inf),
    )


def _pad(values: tuple, n: int) -> tuple:
    return values + (None,) * (n - len(values))


@dataclass
class _FrameFilter:
    """Finds the user's own frame: not torch, not nantrap, not stdlib, not site-packages."""

    cache: dict[str, bool] = field(default_factory=dict)
    skip: tuple[str, ...] = field(default_factory=lambda: _library_dirs())

    def is_user(self, filename: str) -> bool:
        known = self.cache.get(filename)
        if known is None:
            known = not (
                filename.startswith("<")
                or os.path.abspath(filename).startswith(self.skip)
                or "site-packages" in filename
                or "dist-packages" in filename
            )
            self.cache[filename] = known
        return known

    def user_frame(self) -> tuple[str | None, int | None]:
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            # NB: nantrap's own demo is user code (it plays the user); it says so itself
            if self.is_user(filename) or frame.f_globals.get("__nantrap_user_code__"):
                return filename, frame.f_lineno
            frame = frame.f_back
        return None, None


def _library_dirs() -> tuple[str, ...]:
    import nantrap

    dirs = {os.path.dirname(torch.__file__), os.path.dirname(nantrap.__file__)}
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if key in paths:
            dirs.add(paths[key])
    return tuple(os.path.abspath(d) + os.sep for d in dirs)
