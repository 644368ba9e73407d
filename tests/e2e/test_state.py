"""Scenario: the optimizer and model state of a guarded run, as users move it around:
checkpoints to and from plain optimizers, copies, pickles, unguard, resume."""

from __future__ import annotations

import copy
import io
import pickle

import torch

import nantrap.torch as nt
from tests.torch._guard_setup import Net, batches, loop_step, same, state


def _trained(guarded: bool, steps: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    if guarded:
        opt = nt.guard(opt, model, policy="rollback", early_warnings=0)
    for x, y in batches(steps):
        loop_step(model, opt, x, y)
    return model, opt


def test_checkpoints_move_between_guarded_and_plain_optimizers():
    model, guarded = _trained(True)
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": guarded.state_dict()}, saved)
    saved.seek(0)
    ckpt = torch.load(saved, weights_only=True)  # no nantrap class inside: safe loading works

    twin = Net()
    twin.load_state_dict(ckpt["model"])
    plain = torch.optim.AdamW(twin.parameters(), lr=1e-2)
    plain.load_state_dict(ckpt["opt"])
    assert same(state(twin, plain), state(model, guarded))
    # the same next step, guarded and plain, lands on the same weights
    x, y = batches(4)[3]
    torch.manual_seed(7)  # the same dropout mask
    loop_step(model, guarded, x, y)
    torch.manual_seed(7)
    loop_step(twin, plain, x, y)
    assert not guarded.diagnoses
    torch.testing.assert_close(state(twin, plain), state(model, guarded), rtol=0, atol=1e-6)

    # and back: a plain checkpoint loads into a guarded optimizer
    model2, guarded2 = _trained(True, steps=1, seed=5)
    model2.load_state_dict(twin.state_dict())
    guarded2.load_state_dict(plain.state_dict())
    assert same(state(model2, guarded2), state(twin, plain))


def test_copies_and_pickles_of_a_guarded_optimizer_are_plain():
    _, guarded = _trained(True)
    for clone in (copy.deepcopy(guarded), pickle.loads(pickle.dumps(guarded))):
        assert type(clone) is torch.optim.AdamW
        assert not hasattr(clone, "_nantrap_guard")
        assert clone.state_dict()["param_groups"] == guarded.state_dict()["param_groups"]
    assert type(guarded).__name__ == "AdamW" and guarded.guard is not None  # still guarded


def test_unguard_restores_the_plain_optimizer_and_model():
    model, guarded = _trained(True)
    hooks = (len(model._forward_pre_hooks), len(model._forward_hooks))
    assert hooks[0] >= 1
    nt.unguard(guarded)
    assert type(guarded) is torch.optim.AdamW and not hasattr(guarded, "_nantrap_guard")
    assert not model._forward_pre_hooks and not model._forward_hooks
    x, y = batches(1)[0]
    loop_step(model, guarded, x, y, poison=True)  # unguarded: the NaN goes through
    assert not all(torch.isfinite(p).all() for p in model.parameters())
    nt.unguard(guarded)  # twice is harmless
    again = nt.guard(guarded, model)
    assert again is guarded and again.guard.step_count == 0
    nt.unguard(again)


def test_a_guarded_model_can_still_be_copied_and_saved():
    model, _ = _trained(True)
    twin = copy.deepcopy(model)  # EMA / best-model copies
    torch.optim.swa_utils.AveragedModel(model)
    torch.save(model, io.BytesIO())
    assert same(list(twin.state_dict().values()), list(model.state_dict().values()))


def test_rollback_after_resuming_a_checkpoint_returns_to_the_checkpoint():
    trained, plain = _trained(False, steps=5)
    ckpt = copy.deepcopy({"model": trained.state_dict(), "opt": plain.state_dict()})
    torch.manual_seed(1)
    model = Net()
    opt = nt.guard(torch.optim.AdamW(model.parameters(), lr=1e-2), model, early_warnings=0)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    x, y = batches(1)[0]
    loop_step(model, opt, x, y, poison=True)
    assert [d.action for d in opt.diagnoses] == ["rolled-back"]
    assert same(state(model, opt), state(trained, plain))


def test_large_but_finite_weights_are_not_corrupt_state():
    model = torch.nn.Linear(1000, 1)
    with torch.no_grad():
        model.weight.fill_(1e18)
    opt = nt.guard(torch.optim.SGD(model.parameters(), lr=1e-3), model, early_warnings=0)
    opt.zero_grad()
    loss = model(torch.full((4, 1000), 1e-21)).pow(2).mean()
    loss.backward()
    assert torch.isfinite(loss)
    opt.step()
    assert not opt.diagnoses, [d.message for d in opt.diagnoses]


def test_rollback_after_a_mid_run_resume_returns_to_the_loaded_checkpoint():
    trained, plain = _trained(False, steps=5)
    ckpt = copy.deepcopy({"model": trained.state_dict(), "opt": plain.state_dict()})
    model, opt = _trained(True, steps=3, seed=1)  # snapshots of this run's own state
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    x, y = batches(1)[0]
    loop_step(model, opt, x, y, poison=True)
    assert [d.action for d in opt.diagnoses] == ["rolled-back"]
    assert same(state(model, opt), state(trained, plain))


def test_loading_only_the_model_weights_mid_run_is_what_a_rollback_returns_to():
    trained, _ = _trained(False, steps=5)
    model, opt = _trained(True, steps=3, seed=1)
    model.load_state_dict(trained.state_dict())  # e.g. back to the best weights
    before = state(model, opt)
    twin = copy.deepcopy(model)  # a copy's forward does not feed the guard
    twin(batches(1)[0][0])
    assert not opt.guard._inputs
    x, y = batches(1)[0]
    loop_step(model, opt, x, y, poison=True)
    assert [d.action for d in opt.diagnoses] == ["rolled-back"]
    assert same(state(model, opt), before)
    assert same(list(model.state_dict().values()), list(trained.state_dict().values()))


def test_a_rollback_that_loads_a_tracked_module_keeps_the_snapshots():
    torch.manual_seed(0)
    model = Net()
    ema = torch.optim.swa_utils.AveragedModel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt = nt.guard(opt, model, early_warnings=0, scheduler=[ema, model])  # odd, but allowed
    data = batches(3)
    loop_step(model, opt, *data[0])
    ema.update_parameters(model)
    for _ in range(2):  # the first rollback loads model's state: the snapshot must survive it
        loop_step(model, opt, *data[1], poison=True)
    assert [d.action for d in opt.diagnoses] == ["rolled-back", "rolled-back"]
    assert opt.guard.engine.ring.latest.restores == 2  # the same snapshot, not a retaken one
