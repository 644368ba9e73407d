"""The micro-batch a repro bundle keeps under gradient accumulation."""

import math

import torch

from nantrap.torch._microbatches import MicroBatches


def _three(bad_loss=None, bad_input=None):
    mb = MicroBatches()
    for i in range(3):
        x = torch.ones(2, 3)
        if i == bad_input:
            x[0, 1] = math.nan
        mb.forward((x,), {})
        loss = torch.tensor(math.inf if i == bad_loss else 1.0)
        mb.observe(loss, targets=torch.tensor([i]))
    return mb


def test_the_culprit_is_the_micro_batch_whose_loss_or_input_went_bad():
    assert _three(bad_loss=1).culprit().targets.item() == 1
    assert _three(bad_input=0).culprit().targets.item() == 0
    assert _three(bad_loss=2, bad_input=0).culprit().targets.item() == 2  # the loss first
    assert _three().culprit().targets.item() == 2  # none told apart: the last one


def test_observe_without_a_forward_and_clear():
    mb = MicroBatches()
    mb.observe(torch.tensor(1.0))  # no forward yet: nothing to attach to
    assert mb.culprit() is None
    mb.forward((torch.ones(1),), {"mask": None})
    assert len(mb) == 1 and mb.culprit().loss is None
    mb.clear()
    assert len(mb) == 0
