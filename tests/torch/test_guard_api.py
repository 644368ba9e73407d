"""The guarded optimizer behaves as the optimizer: class, groups, state, schedulers, pickling."""

import copy
import pickle
import warnings

import pytest
import torch

import nantrap.torch as nt
from nantrap.errors import ConfigError
from nantrap.guard import read_events
from tests.torch._guard_setup import (
    Net,
    batches,
    closure_step,
    loop_step,
    make,
    same,
    source_line,
    state,
)

DATA = batches(12)


def test_guard_returns_the_same_optimizer_object():
    torch.manual_seed(0)
    model = Net()
    plain = torch.optim.AdamW(model.parameters(), lr=1e-3)
    groups = plain.param_groups
    opt = nt.guard(plain, model)
    assert opt is plain and opt.param_groups is groups
    assert isinstance(opt, torch.optim.AdamW) and type(opt).__name__ == "AdamW"
    assert isinstance(opt.guard, nt.TorchGuard) and opt.diagnoses == []
    nt.unguard(opt)
    assert type(opt) is torch.optim.AdamW and not hasattr(opt, "_nantrap_guard")


def test_state_dict_is_the_plain_optimizers():
    model, opt = make("skip")
    for x, y in DATA[:3]:
        closure_step(model, opt, x, y)
    plain = torch.optim.SGD(Net().parameters(), lr=0.05, momentum=0.9)
    plain.load_state_dict(opt.state_dict())
    assert plain.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    opt.load_state_dict(opt.state_dict())  # load into the guarded one, step still guarded
    loop_step(model, opt, *DATA[3], poison=True)
    assert opt.diagnoses[-1].action == "skipped"


def test_add_param_group_is_checked_too():
    torch.manual_seed(0)
    model = Net()
    extra = torch.nn.Linear(6, 1)
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=0.05), model, policy="skip", early_warnings=0
    )
    opt.add_param_group({"params": extra.parameters(), "lr": 0.01})
    x, y = DATA[0]
    loss = torch.nn.functional.mse_loss(model(x) + extra(x), y)
    loss.backward()
    extra.weight.grad[0, 0] = float("nan")
    before = [p.clone() for p in extra.parameters()]
    opt.step()
    assert opt.diagnoses[-1].action == "skipped"
    assert all(torch.equal(a, b) for a, b in zip(before, extra.parameters(), strict=True))


def test_pickle_and_deepcopy_give_the_plain_optimizer():
    model, opt = make("skip")
    closure_step(model, opt, *DATA[0])
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert type(clone) is torch.optim.SGD
        assert not hasattr(clone, "_nantrap_guard")


def test_bad_arguments_are_config_errors():
    model = Net()
    with pytest.raises(ConfigError, match=r"torch\.optim\.Optimizer"):
        nt.guard(model, model)
    opt = nt.guard(torch.optim.SGD(model.parameters(), lr=0.1), model)
    with pytest.raises(ConfigError, match="already guarded"):
        nt.guard(opt, model)
    with pytest.raises(ConfigError, match="raise, warn, skip, rollback, stop"):
        nt.guard(torch.optim.SGD(Net().parameters(), lr=0.1), policy="retry")
    with pytest.raises(ConfigError, match="snapshot_every"):
        nt.guard(torch.optim.SGD(Net().parameters(), lr=0.1), snapshot_evry=3)
    with pytest.raises(ConfigError, match="state_dict"):
        nt.guard(torch.optim.SGD(Net().parameters(), lr=0.1), scheduler=object())


@pytest.mark.parametrize("created", ["before", "after"])
def test_lr_scheduler_attaches_and_is_rolled_back(created):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if created == "before":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
        opt = nt.guard(opt, model, scheduler=sched, snapshot_every=2, early_warnings=0)
    else:
        opt = nt.guard(opt, model, snapshot_every=2, early_warnings=0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
        opt.guard.track(sched)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()"
        for i, (x, y) in enumerate(DATA[:5]):
            loop_step(model, opt, x, y, poison=i == 4)
            sched.step()
    # the incident step 4 is not snapshotted: back to step 2 (scheduler included), LR
    # halved, then the loop's sched.step() after the incident: 3 decays of 0.9
    assert opt.diagnoses[-1].action == "rolled-back" and opt.guard.step_count == 2
    assert sched.last_epoch == 3
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.9**3 * 0.5)
    assert sched.base_lrs == [pytest.approx(0.05)]


def test_guard_state_dict_round_trip_restores_from_a_loaded_snapshot(tmp_path):
    model, opt = make("rollback", snapshot_every=2, lr_decay=1.0)
    for x, y in DATA[:3]:
        closure_step(model, opt, x, y)
    saved_state = state(model, opt)  # = the step-2 snapshot? no: step 3; take the snapshot's
    snap_params = [t.clone() for t in opt.guard.engine.ring.latest.state["params"]]
    path = tmp_path / "guard.pt"
    torch.save(
        {"guard": opt.guard.state_dict(), "opt": opt.state_dict(), "model": model.state_dict()},
        path,
    )
    loaded = torch.load(path, weights_only=False)
    model2, opt2 = make("skip")
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["opt"])
    opt2.guard.load_state_dict(loaded["guard"])
    assert opt2.guard.step_count == 3 and opt2.guard.config.policy == "rollback"
    assert opt2.guard.engine.ring.steps == opt.guard.engine.ring.steps
    assert (
        opt2.guard.state_dict()["engine"]["history"] == opt.guard.state_dict()["engine"]["history"]
    )
    assert same(state(model2, opt2), saved_state)
    closure_step(model2, opt2, *DATA[3], poison=True)
    assert opt2.diagnoses[-1].action == "rolled-back"
    assert same([p.detach() for p in model2.parameters()], snap_params)


def test_events_jsonl_records_the_run(tmp_path):
    model, opt = make("skip", log_dir=tmp_path, log_every=2)
    for i, (x, y) in enumerate(DATA[:5]):
        closure_step(model, opt, x, y, poison=i == 3)
    nt.unguard(opt)
    events = read_events(tmp_path / "events.jsonl")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run" and kinds[-1] == "end"
    run = events[0]
    assert (run["framework"], run["policy"], run["model"], run["optimizer"]) == (
        "torch",
        "skip",
        "Net",
        "SGD",
    )
    assert run["lr"] == [0.05] and run["world_size"] == 1
    steps = [e for e in events if e["type"] == "step"]
    assert [s["step"] for s in steps] == [0, 2, 3, 4]  # every 2 steps + the incident step
    bad = next(s for s in steps if s["step"] == 3)
    assert bad["grad_norm"] == "nan" and bad["loss"] == "inf" and bad["lr"] == 0.05
    assert all(isinstance(s["grad_norm"], float) for s in steps if s["step"] != 3)
    diag = next(e for e in events if e["type"] == "diagnosis")
    assert diag["code"] == "NT103" and diag["step"] == 3 and diag["action"] == "skipped"
    assert diag["source"] == source_line("# <- log of zero")
    action = next(e for e in events if e["type"] == "action")
    assert (action["action"], action["step"], action["lr_before"], action["lr_after"]) == (
        "skip",
        3,
        0.05,
        0.05,
    )
    assert events[-1]["status"] == "ok" and events[-1]["step"] == 5


def test_an_untracked_scheduler_still_gets_the_lr_decay():
    torch.manual_seed(0)
    model = Net()
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=0.1), model, snapshot_every=2, early_warnings=0
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)  # closed form
    for i, (x, y) in enumerate(DATA[:5]):
        loop_step(model, opt, x, y, poison=i == 4)
        sched.step()
    assert opt.diagnoses[-1].action == "rolled-back"
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # LambdaLR recomputes from base
    assert any(t is sched for t in opt.guard.tracked)


def test_warn_records_a_broken_run_once():
    model, opt = make("warn")
    for i, (x, y) in enumerate(DATA[:8]):
        loop_step(model, opt, x, y, poison=i == 2)
    # step 2's NaN update went through; from step 3 on the weights are NaN: one NT403 that
    # names the warned update, then repeats that are counted, not logged
    assert [(d.code, d.step) for d in opt.diagnoses] == [("NT903", 2), ("NT403", 3)]
    assert "policy 'warn' let through" in opt.diagnoses[1].message
    assert opt.guard.engine.repeats == 4


def test_sampled_early_warning_ranges_go_into_step_records(tmp_path):
    model, opt = make("skip", log_dir=tmp_path, early_warnings=3, log_every=100)
    for x, y in DATA[:7]:
        closure_step(model, opt, x, y)
    del opt, model  # no unguard: the end record is written when the guard goes away
    import gc

    gc.collect()
    events = read_events(tmp_path / "events.jsonl")
    ranged = [e for e in events if e["type"] == "step" and "ranges" in e]
    assert [e["step"] for e in ranged] == [0, 3, 6]
    fc1 = ranged[0]["ranges"]["model.fc1"]
    assert fc1["min"] < 0 < fc1["max"] and "saturated" in fc1
    assert events[-1]["type"] == "end" and events[-1]["status"] == "ok"


def test_a_scheduler_tracked_late_does_not_break_rollback_to_an_older_snapshot():
    model, opt = make("rollback", snapshot_every=100)  # only the step-0 snapshot exists
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.guard.track(sched)
    for i, (x, y) in enumerate(DATA[:3]):
        closure_step(model, opt, x, y, poison=i == 2)
        sched.step()
    assert opt.diagnoses[-1].action == "rolled-back" and opt.guard.step_count == 0


def test_a_stopped_guard_still_returns_the_closure_loss():
    model, opt = make("stop")
    closure_step(model, opt, *DATA[0], poison=True)
    assert opt.stopped
    loss = closure_step(model, opt, *DATA[1])
    assert loss is not None and torch.isfinite(loss)
