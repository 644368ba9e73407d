"""Snapshot copies on the CPU: ``HostCopier`` is a plain synchronous clone there, and a
capture through it restores bit-exactly like the default one."""

import torch

from nantrap.torch import _snapshot
from tests.torch._guard_setup import Net, batches, same, state


def _trained():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for x, y in batches(2):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return model, opt


def test_cpu_copies_are_independent_clones_and_leave_nothing_pending():
    copier = _snapshot.HostCopier()
    t = torch.arange(6.0).reshape(2, 3).t()  # non-contiguous
    copy = copier.copy(t)
    t.add_(1.0)
    assert torch.equal(copy, torch.arange(6.0).reshape(2, 3).t())
    assert copy.stride() == t.stride() and not copy.is_pinned()
    copier.seal()
    copier.fence()
    copier.synchronize()
    assert copier._events == [] and copier._unfenced == []


def test_capture_through_the_copier_restores_bit_exactly():
    model, opt = _trained()
    params = [p for g in opt.param_groups for p in g["params"]]
    before = state(model, opt)
    copier = _snapshot.HostCopier()
    step_state = _snapshot.StepState(model)
    step_state.save()
    snap = _snapshot.capture(opt, params, buffers=step_state.buffer_dict(copier), copier=copier)
    plain = _snapshot.capture(opt, params, buffers=step_state.buffer_dict())
    assert all(torch.equal(a, b) for a, b in zip(snap["params"], plain["params"], strict=True))
    assert (
        snap["buffers"].keys()
        == plain["buffers"].keys()
        == {
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked",
        }
    )
    x, y = batches(1, seed=5)[0]
    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    opt.step()
    assert not same(state(model, opt), before)
    copier.synchronize()
    _snapshot.restore(snap, opt, params, model=model)
    assert same(state(model, opt), before)
