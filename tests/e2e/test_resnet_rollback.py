"""Scenario: a ResNet-style CNN (BatchNorm) trained with AdamW, OneCycleLR and gradient
clipping, loop form B, with a learning rate far too high. The guard must roll back, restore
the scheduler exactly, keep BatchNorm's running statistics finite, and let the run go on."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch.nn import functional as F

import nantrap.torch as nt
from tests.e2e._nets import TinyResNet, image_batches
from tests.torch._models import line_of

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _train(tmp_path, *, max_lr: float, steps: int = 18, **options):
    torch.manual_seed(0)
    model = TinyResNet()
    opt = torch.optim.AdamW(model.parameters(), lr=max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=100)
    start_sched = copy.deepcopy(sched.state_dict())
    opt = nt.guard(
        opt,
        model,
        policy="rollback",
        scheduler=sched,
        log_dir=tmp_path,
        early_warnings=0,
        **options,
    )
    data = image_batches(4)
    seen = []  # (guard step after opt.step, scheduler state, buffers finite)
    for i in range(steps):
        x, y = data[i % len(data)]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen.append(
            (
                opt.guard.step_count,
                copy.deepcopy(sched.state_dict()),
                all(bool(torch.isfinite(b).all()) for b in model.buffers()),
            )
        )
        sched.step()
        if opt.stopped:
            break
    return model, opt, sched, start_sched, seen


@pytest.fixture(scope="module")
def rollback_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("resnet")
    return (tmp_path, *_train(tmp_path, max_lr=1e16, lr_decay=1e-6))


def test_lr_too_high_rolls_back_and_recovers(rollback_run):
    tmp_path, model, opt, _, start, seen = rollback_run

    actions = [d.action for d in opt.diagnoses]
    assert "rolled-back" in actions[0], actions
    assert not opt.stopped
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())

    # the step right after the rollback: the scheduler is the snapshot's (step 0), LRs scaled
    rb = next(i for i, (step, _, _) in enumerate(seen) if step == 0)
    state = seen[rb][1]
    assert state["last_epoch"] == start["last_epoch"]
    assert state["_step_count"] == start["_step_count"]
    assert state["base_lrs"] == pytest.approx([lr * 1e-6 for lr in start["base_lrs"]])
    rolled = sum("rolled-back" in a for a in actions)
    assert opt.param_groups[0]["max_lr"] == pytest.approx(1e16 * 1e-6**rolled)
    # the last rollback came from the divergence early warning (NT301), with a suggested LR
    assert opt.diagnoses[-1].code == "NT301" and "too high" in opt.diagnoses[-1].message
    # ...and the run goes on from there under the lowered LR
    last = max(i for i, (step, _, _) in enumerate(seen) if step == 0)
    after = [step for step, _, _ in seen[last:]]
    assert len(after) >= 4 and after == list(range(len(after)))
    assert math.isfinite(F.cross_entropy(model(image_batches(1)[0][0]), image_batches(1)[0][1]))

    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    rollbacks = [e for e in events if e["type"] == "action" and e["action"] == "rollback"]
    # lr_after: the snapshot's LR (OneCycle's start, max_lr / 25) times lr_decay
    assert rollbacks[0]["lr_after"] == pytest.approx(1e16 / 25 * 1e-6)
    assert rollbacks[0]["to_step"] == 0


def test_batchnorm_buffers_never_nonfinite_after_a_step(rollback_run):
    seen = rollback_run[-1]
    bad = [step for step, _, ok in seen if not ok]
    assert not bad, f"BatchNorm running stats non-finite after guarded steps {bad}"


def test_incident_localized_to_batchnorm_overflow(tmp_path):
    """Form B: the first incident arms tracing; the next one names the op: BatchNorm's
    variance overflowed (its running_var became Inf inside the forward), not 'a buffer
    already holding Inf' (regression: the tracer read written arguments after the op)."""
    _, opt, *_ = _train(tmp_path, max_lr=1e17, steps=8)
    traced = [d for d in opt.diagnoses if d.op is not None]
    assert traced, [d.headline() for d in opt.diagnoses]
    d = traced[0]
    assert d.code == "NT116" and d.category.value == "overflow"
    assert d.neutral_op == "batch_norm" and d.op == "aten.native_batch_norm.default"
    assert d.module == "model.layer1.bn1"
    assert d.source == f"{_nets_path()}:{line_of('# <- block conv1/bn1', _nets_path())}"
    assert "already holds" not in d.message
    assert "float32" in d.message


def _nets_path() -> str:
    from tests.e2e import _nets

    return _nets.__file__


@pytest.mark.parametrize("policy", ["skip", "rollback"])
@pytest.mark.parametrize("form", ["closure", "loop"])
def test_a_nan_image_leaves_batchnorm_stats_and_weights_as_they_were(policy, form):
    """One NaN pixel: BatchNorm's forward already wrote NaN into its running stats; the
    guard must undo that with the step (bad data: no rollback of good steps either)."""
    torch.manual_seed(0)
    model = TinyResNet()
    opt = nt.guard(
        torch.optim.AdamW(model.parameters(), lr=1e-3), model, policy=policy, early_warnings=0
    )
    for i, (x, y) in enumerate(image_batches(3)):
        if i == 2:
            x = x.clone()
            x[1, 0, 2, 3] = float("nan")
            before = copy.deepcopy(model.state_dict())

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        if form == "closure":
            opt.step(closure)
        else:
            closure()
            opt.step()
    (d,) = opt.diagnoses
    assert d.code == "NT401" and d.category.value == "bad-data" and d.step == 2
    assert "input[0]" in d.message and "1 NaN" in d.message
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert opt.guard.step_count == 3  # the dropped step still counts as an iteration


def test_adamw_lr_typo_is_flagged_before_the_loss_explodes(tmp_path):
    _, opt, *_ = _train(tmp_path, max_lr=1e3, steps=24)
    assert {"NT301", "NT302"} & {d.code for d in opt.diagnoses}


def test_closure_form_names_the_batchnorm_overflow_at_the_first_incident():
    """Form A replays the failing step under tracing: no unlocalized first incident."""
    torch.manual_seed(0)
    model = TinyResNet()
    opt = nt.guard(
        torch.optim.AdamW(model.parameters(), lr=1e17),
        model,
        policy="rollback",
        early_warnings=0,
        lr_decay=1e-6,
    )
    for x, y in image_batches(3):

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    d = opt.diagnoses[0]
    assert (d.step, d.code, d.category.value) == (1, "NT116", "overflow")
    assert d.op == "aten.native_batch_norm.default" and d.module == "model.layer1.bn1"
    assert d.source == f"{_nets_path()}:{line_of('# <- block conv1/bn1', _nets_path())}"
    assert "overflowed float32 (max 3.403e+38) from finite inputs" in d.message
    assert d.action == "rolled-back"
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
