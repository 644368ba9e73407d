"""OpTrace: handler registry, masks and uninitialized memory, backward -> forward mapping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nantrap.findings import Phase
from nantrap.torch import trace as tr_mod
from nantrap.torch.trace import OpTrace, op_handler
from tests.torch._models import TinyLM

aten = torch.ops.aten


def test_handler_registry_refuses_duplicates_and_non_packets():
    with pytest.raises(RuntimeError, match="already registered"):
        op_handler(aten.empty_like)(lambda call: None)
    with pytest.raises(ValueError, match="op packets"):
        op_handler(aten.log.default)(lambda call: None)
    assert aten.empty_like in tr_mod.HANDLERS
    # ops of namespaces loaded later (FSDP2, c10d) register by qualified name
    assert "fsdp::chunk_cat" in tr_mod.HANDLERS
    with pytest.raises(RuntimeError, match="already registered"):
        op_handler("c10d::allreduce_")(lambda call: None)
    with pytest.raises(ValueError, match="namespace::name"):
        op_handler("allreduce_")(lambda call: None)


def test_custom_handlers_by_qualified_name():
    def shout(call):
        call.intentional = True

    x = torch.tensor([0.0, 1.0])
    with OpTrace(custom_handlers={"aten::log": shout}) as tr:
        torch.log(x)
    assert tr.events[0].intentional and tr.first_nonfinite() is None


def test_custom_handlers_apply_to_one_trace_only():
    def shout(call):
        call.intentional = True

    x = torch.tensor([0.0, 1.0])
    with OpTrace(custom_handlers={aten.log: shout}) as mine:
        torch.log(x)
    with OpTrace() as plain:
        torch.log(x)
    assert mine.events[0].intentional and not plain.events[0].intentional
    assert plain.first_nonfinite().op == "aten.log.default"
    assert mine.first_nonfinite() is None


def test_masks_and_uninitialized_memory_are_not_incidents():
    torch.manual_seed(0)
    model = TinyLM().train()
    ids = torch.randint(0, 50, (4, 16))
    pad = torch.zeros(4, 15, dtype=torch.bool)
    pad[0, -3:] = True  # a bool padding mask becomes masked_fill(-inf) inside attention
    with OpTrace(model) as trace:
        h = model.enc(
            model.tok(ids[:, :-1]), mask=model.causal[:15, :15].bool(), src_key_padding_mask=pad
        )
        logits = model.out(h)
        F.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1)).backward()
    ops = {e.op for e in trace.events if e.intentional}
    assert ops & {"aten.masked_fill_.Scalar", "aten.masked_fill.Scalar"}
    assert any(e.uninitialized for e in trace.events)  # dropout's empty_like
    assert any(not e.finite for e in trace.events)
    assert trace.first_nonfinite() is None
    assert trace.origin([logits]) is None


def test_garbage_in_empty_like_is_never_blamed():
    x = torch.randn(64)
    with OpTrace() as trace:
        junk = torch.full((64,), math.nan)
        del junk
        y = torch.empty_like(x)  # may reuse the NaN memory just freed
        y.bernoulli_(0.5)
        z = (x * y).sum()
    empty = next(e for e in trace.events if e.op == "aten.empty_like.default")
    bern = next(e for e in trace.events if e.op.startswith("aten.bernoulli_"))
    assert empty.uninitialized and empty.finite
    assert bern.finite and not bern.bad_inputs()
    assert trace.events[0].intentional  # full(nan) is written on purpose
    assert math.isfinite(float(z)) and trace.first_nonfinite() is None


def test_backward_ops_map_to_their_forward_op_module_and_line():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh())
    x = torch.randn(5, 3)
    with OpTrace(model) as trace:
        out = model(x)
        out.sum().backward()
    fwd = {e.index: e for e in trace.events if e.phase is Phase.FORWARD}
    tanh_bw = next(e for e in trace.events if e.node == "TanhBackward0")
    assert fwd[tanh_bw.forward].op == "aten.tanh.default"
    assert tanh_bw.module == "model.1" and tanh_bw.line == fwd[tanh_bw.forward].line
    mm_bw = [e for e in trace.events if e.node == "AddmmBackward0"]
    assert mm_bw and all(e.module == "model.0" for e in mm_bw)
    assert trace.producer(out).op == "aten.tanh.default"
    leaves = trace.leaves()
    assert any(t is model[0].weight for t in leaves)


def test_trace_is_not_reentrant_and_stop_is_idempotent():
    trace = OpTrace()
    with trace, pytest.raises(RuntimeError, match="not reentrant"):
        trace.start()
    trace.stop()
    torch.ones(2).exp()
    assert all(e.op != "aten.exp.default" for e in trace.events)


def test_written_arguments_are_read_before_the_op_and_become_its_outputs():
    """BatchNorm updates running_var in place although its schema does not say so: the
    input statistics are those before the op, the overflowed running_var is the op's
    output, and later readers of the buffer point back at it (not at a bad leaf)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
    with torch.no_grad():
        model[0].weight.mul_(1e19)  # activations ~1e19: their variance overflows float32
    with OpTrace(model) as trace:
        model(torch.randn(16, 4)).sum().backward()
    assert not torch.isfinite(model[1].running_var).all()
    bn = next(e for e in trace.events if e.op == "aten.native_batch_norm.default")
    assert all(s.finite for s in bn.inputs)  # running_var as it was before the op
    assert not bn.outputs[-1].finite  # ...and as the op left it
    assert bn.full_outputs and bn.full_outputs[-1].inf > 0
    back = next(e for e in trace.events if e.op == "aten.native_batch_norm_backward.default")
    assert back.producers[4] == bn.index
    assert trace.origin_of([back.index]) is bn
    # a declared in-place write (add_) is read before the op too
    x = torch.tensor([1.0, 3e38])
    with OpTrace() as trace:
        x.add_(x)
    (ev,) = trace.events
    assert ev.inputs[0].finite and not ev.outputs[0].finite
    assert trace.first_nonfinite() is ev


def test_a_view_never_inherits_a_stale_entry():
    """An alias op whose output key differs from its input's must not keep an older entry
    under that key (a freed tensor's reused memory, or a view of data written since):
    here the second view would read as finite and the sum be blamed."""
    x = torch.ones(12)
    with OpTrace() as trace:
        x.view(3, 4)
        x.copy_(torch.zeros(12).log())  # x is now -inf, written through another view
        total = x.view(3, 4).sum()
    assert trace.origin([total]).op == "aten.log.default"


def test_a_write_through_another_view_makes_the_old_entry_stale():
    x = torch.zeros(4)
    with OpTrace() as tr:
        buf = torch.ones(8)
        part = buf[:4]
        part.copy_(torch.log(x))  # -inf written into buf through a view of it
        y = buf * 2.0
    origin = tr.origin([y])
    assert origin is not None and origin.neutral_op == "log"


def test_an_out_destination_is_not_read():
    x, buf = torch.tensor([1.0, 2.0]), torch.full((2,), math.nan)  # a stale buffer
    with OpTrace() as tr:
        torch.mul(x, 2.0, out=buf)
    [ev] = tr.events
    assert ev.overwrites == frozenset({1}) and ev.bad_inputs() == [] and ev.finite


def test_a_failing_handler_loses_the_record_not_the_step():
    def broken(call):
        raise KeyError("no such slot")

    x = torch.tensor([1.0, 2.0])
    with OpTrace(custom_handlers={aten.mul: broken}) as tr:
        y = torch.log(x * 0.0)  # the step goes on: its ops run, the others are recorded
    assert y.tolist() == [-math.inf, -math.inf]
    assert [e.op for e in tr.events] == ["aten.log.default"]
    assert tr.failures == ["aten.mul.Tensor: KeyError: 'no such slot'"]
