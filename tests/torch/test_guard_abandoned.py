"""A guard left behind mid-step (the user's code raised, the run was abandoned) leaves no
dispatch mode on torch's stack: later torch ops in the process run as without nantrap."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

import nantrap.torch as nt


class Flaky(nn.Module):
    """A model whose forward raises halfway (a user bug: a shape error in the head)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 1)
        self.broken = False

    def forward(self, x):
        h = torch.sigmoid(self.fc1(x))
        if self.broken:
            raise ValueError("shape mismatch in the head")
        return self.fc2(h)


def _guarded(**options):
    torch.manual_seed(0)
    model = Flaky()
    opt = nt.guard(torch.optim.SGD(model.parameters(), lr=0.1), model, policy="skip", **options)
    return model, opt


def _step(model, opt, x, y):
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    opt.step()


def test_a_forward_that_raises_on_a_sampled_step_leaves_no_mode_behind():
    model, opt = _guarded(early_warnings=2)
    x, y = torch.randn(4, 6), torch.randn(4, 1)
    _step(model, opt, x, y)  # step 0 (sampled)
    _step(model, opt, x, y)  # step 1; step 2 is due for sampling
    model.broken = True
    with pytest.raises(ValueError, match="shape mismatch"):
        _step(model, opt, x, y)
    assert _get_current_dispatch_mode_stack() == []  # at once, guard still alive
    # the sampling hooks are gone too (only the guard's and the sampler's own remain)
    assert len(model.fc1._forward_hooks) == len(model.fc1._forward_pre_hooks) == 0
    model.broken = False
    opt.guard.early.ranges = {}
    _step(model, opt, x, y)  # training goes on: the next step is sampled instead
    assert "model.fc1" in opt.guard.early.ranges and _get_current_dispatch_mode_stack() == []
    del opt
    gc.collect()
    assert not model._forward_pre_hooks and not model._forward_hooks


def test_an_abandoned_guard_closes_its_sampling_and_tracing():
    """The loss (after the forward) raises on a sampled step, with loop-form tracing armed;
    the optimizer is dropped: collecting the guard exits both dispatch modes."""
    model, opt = _guarded(early_warnings=1)
    x, y = torch.randn(4, 6), torch.randn(4, 1)
    _step(model, opt, x, y)
    opt.guard._arm_trace()
    with pytest.raises(RuntimeError):
        out = model(x)
        assert len(_get_current_dispatch_mode_stack()) == 2
        torch.cat([out, y[:3]], dim=1)  # a size mismatch in the user's loss
    assert len(_get_current_dispatch_mode_stack()) == 2
    del opt
    gc.collect()
    assert _get_current_dispatch_mode_stack() == []
    assert not model._forward_pre_hooks and not model._forward_hooks
