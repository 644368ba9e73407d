"""Every policy, in both loop forms, on a real training loop with an injected log(0)."""

import random

import numpy as np
import pytest
import torch

from nantrap.errors import NanTrapError
from nantrap.findings import Phase
from nantrap.guard import read_events
from tests.torch._guard_setup import (
    batches,
    closure_step,
    finite,
    loop_step,
    make,
    mse,
    same,
    state,
)

FORMS = {"closure": closure_step, "loop": loop_step}
DATA = batches(12)


@pytest.mark.parametrize("form", FORMS)
def test_raise_carries_the_diagnosis_and_keeps_the_weights(form):
    model, opt = make("raise")
    run = FORMS[form]
    for x, y in DATA[:3]:
        run(model, opt, x, y)
    before = state(model, opt)
    with pytest.raises(NanTrapError) as err:
        run(model, opt, *DATA[3], poison=True)
    d = err.value.diagnosis
    assert d.action == "raised" and d.step == 3 and d.incident
    assert opt.diagnoses[-1] == d
    assert same(state(model, opt), before)  # BN stats too: the bad forward left no trace


@pytest.mark.parametrize("form", FORMS)
def test_warn_records_and_lets_the_update_through(form):
    model, opt = make("warn")
    run = FORMS[form]
    run(model, opt, *DATA[0])
    run(model, opt, *DATA[1], poison=True)
    assert [d.action for d in opt.diagnoses] == ["warned"]
    assert not finite(model)  # warn does not protect: the NaN update was applied


@pytest.mark.parametrize("form", FORMS)
def test_skip_leaves_state_bit_identical(form):
    model, opt = make("skip")
    run = FORMS[form]
    for x, y in DATA[:4]:
        run(model, opt, x, y)
    before = state(model, opt)
    run(model, opt, *DATA[4], poison=True)
    assert same(state(model, opt), before)
    assert all(p.grad is None for p in model.parameters())
    assert opt.diagnoses[-1].action == "skipped" and opt.guard.step_count == 5
    for x, y in DATA[5:]:
        run(model, opt, x, y)
    assert finite(model) and len(opt.diagnoses) == 1


@pytest.mark.parametrize("form", FORMS)
def test_rollback_is_bit_exact_and_continues_like_a_clean_run(form):
    run = FORMS[form]
    # reference: 3 clean steps, then batches 5..8 (dropout draws from the global RNG)
    ref_model, ref_opt = make(guarded=False)
    for x, y in DATA[:3]:
        run(ref_model, ref_opt, x, y)
    at_snapshot, rng_at_snapshot = state(ref_model, ref_opt), torch.get_rng_state()
    for x, y in DATA[5:9]:
        run(ref_model, ref_opt, x, y)
    reference = state(ref_model, ref_opt)
    # guarded: the same 3 steps, one more, a poisoned one -> back to the step-3 snapshot
    model, opt = make("rollback", snapshot_every=3, lr_decay=1.0)
    for i, (x, y) in enumerate(DATA[:4]):
        if i == 3:  # the snapshot holds python's and numpy's generators as well
            host_rng = (random.getstate(), np.random.get_state()[1].copy())
        run(model, opt, x, y)
        random.random(), np.random.rand()  # data pipelines draw from these
    run(model, opt, *DATA[4], poison=True)
    assert opt.diagnoses[-1].action == "rolled-back" and opt.guard.step_count == 3
    assert same(state(model, opt), at_snapshot)
    assert torch.equal(torch.get_rng_state(), rng_at_snapshot)
    assert random.getstate() == host_rng[0]
    assert (np.random.get_state()[1] == host_rng[1]).all()
    for x, y in DATA[5:9]:
        run(model, opt, x, y)
    assert same(state(model, opt), reference)


def test_rollback_decays_the_lr_retries_then_stops(tmp_path):
    model, opt = make("rollback", snapshot_every=2, max_retries=2, log_dir=tmp_path)
    for x, y in DATA[:3]:
        closure_step(model, opt, x, y)
    for expected_lr in (0.025, 0.0125):
        closure_step(model, opt, *DATA[3], poison=True)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected_lr)
    closure_step(model, opt, *DATA[3], poison=True)
    assert opt.stopped and opt.diagnoses[-1].action == "stopped"
    assert finite(model)
    before = state(model, opt)
    closure_step(model, opt, *DATA[4])  # a stopped guard no longer updates
    assert same(state(model, opt), before)
    events = read_events(tmp_path / "events.jsonl")
    actions = [(e["action"], e["to_step"], e["lr_after"]) for e in events if e["type"] == "action"]
    assert actions == [("rollback", 2, 0.025), ("rollback", 0, 0.0125), ("stop", 0, 0.0125)]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "stopped"


def test_rollback_run_converges_after_the_fault():
    model, opt = make("rollback", snapshot_every=4)
    clean_model, clean_opt = make(guarded=False)
    data = batches(36, seed=1)
    for i, (x, y) in enumerate(data):
        closure_step(model, opt, x, y, poison=i in (8, 18))
        closure_step(clean_model, clean_opt, x, y)
    assert [d.action for d in opt.diagnoses] == ["rolled-back", "rolled-back"]
    test = batches(4, seed=2)
    assert mse(model, test) < 1.5 * mse(clean_model, test) + 0.05


@pytest.mark.parametrize("form", FORMS)
def test_stop_restores_the_last_good_state(form):
    model, opt = make("stop", snapshot_every=2)
    run = FORMS[form]
    for x, y in DATA[:2]:
        run(model, opt, x, y)
    snap = state(model, opt)
    run(model, opt, *DATA[2])
    run(model, opt, *DATA[3], poison=True)
    assert opt.stopped and same(state(model, opt), snap)
    assert opt.diagnoses[-1].phase in (Phase.FORWARD, Phase.BACKWARD, Phase.UPDATE)
