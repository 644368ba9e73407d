"""AutoGuard (``nantrap run``'s torch edge): every optimizer a script creates is guarded,
with the model found from the optimizer's parameters; patches come off afterwards."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nantrap.report.run_log import load_run
from nantrap.torch.autoguard import AutoGuard


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(Block(), Block())
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.body(x))


def _train(model, opt, steps=3, poison_at=None):
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(8, 4, generator=g)
        if step == poison_at:
            x[0, 0] = float("nan")
        opt.zero_grad()
        loss = F.mse_loss(model(x), torch.zeros(8, 1))
        loss.backward()
        opt.step()


def test_finds_the_outermost_model_of_an_optimizer(tmp_path):
    with AutoGuard(policy="skip", log_dir=tmp_path, options={"log_every": 1}) as auto:
        model = Net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        assert isinstance(opt, torch.optim.SGD)
        _train(model, opt)
        [entry] = auto.entries
        assert entry["model"] is model
        assert opt.guard.model is model
    auto.close("ok")
    log = load_run(tmp_path)
    assert log.header["model"] == "Net" and log.header["optimizer"] == "SGD"
    assert [s["step"] for s in log.steps] == [0, 1, 2]
    assert all(isinstance(s["loss"], float) for s in log.steps)  # loss seen at backward()
    assert log.status == "ok"


def test_two_models_two_optimizers_two_run_folders(tmp_path):
    with AutoGuard(log_dir=tmp_path) as auto:
        gen, disc = Net(), Net()
        opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
        opt_d = torch.optim.SGD(disc.parameters(), lr=1e-2)
        _train(disc, opt_d, steps=1)
        _train(gen, opt_g, steps=1)
    auto.close("ok")
    by_opt = {type(e["optimizer"]).__name__: e for e in auto.entries}
    assert by_opt["SGD"]["model"] is disc and by_opt["Adam"]["model"] is gen
    assert by_opt["SGD"]["log_dir"] == tmp_path
    assert by_opt["Adam"]["log_dir"] == tmp_path / "optimizer-2"
    assert load_run(tmp_path / "optimizer-2").header["optimizer"] == "Adam"


def test_a_wrapper_built_after_the_optimizer_is_the_model(tmp_path):
    with AutoGuard(log_dir=tmp_path) as auto:
        net = Net()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        wrapped = nn.Sequential(net)  # e.g. DataParallel / DDP wrapping after the optimizer
        _train(wrapped, opt, steps=1)
    auto.close("ok")
    assert auto.entries[0]["model"] is wrapped


def test_parameters_without_a_module_are_guarded_without_a_model(tmp_path):
    with AutoGuard(log_dir=tmp_path) as auto:
        w = torch.zeros(3, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)
        opt.zero_grad()
        (w - 1).pow(2).sum().backward()
        opt.step()
    notes = auto.close("ok")
    assert auto.entries[0]["ours"] and auto.entries[0]["model"] is None
    assert any("no nn.Module owns its parameters" in n for n in notes)
    assert torch.allclose(w, torch.full((3,), 0.2))


def test_scheduler_is_tracked_and_sees_the_step(tmp_path):
    with AutoGuard(log_dir=tmp_path) as auto:
        model = Net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()"
            _train(model, opt, steps=1)
            sched.step()
        assert sched in opt.guard.tracked
        late = torch.optim.lr_scheduler.StepLR(opt, step_size=5)
        assert late in opt.guard.tracked
    auto.close("ok")
    assert opt.param_groups[0]["lr"] == 0.05


def test_skip_policy_acts_on_a_nan_input(tmp_path):
    with AutoGuard(policy="skip", log_dir=tmp_path, options={"log_every": 1}) as auto:
        model = Net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        _train(model, opt, steps=4, poison_at=2)
    auto.close("ok")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    log = load_run(tmp_path)
    [incident] = log.incidents()
    assert incident.step == 2 and incident.diagnosis.category.value == "bad-data"
    assert [a["action"] for a in incident.actions] == ["skip"]


def test_close_removes_every_patch(tmp_path):
    init, backward = torch.optim.Optimizer.__init__, torch.Tensor.backward
    auto = AutoGuard(log_dir=tmp_path).install()
    assert torch.optim.Optimizer.__init__ is not init
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    auto.close("ok")
    assert torch.optim.Optimizer.__init__ is init and torch.Tensor.backward is backward
    assert "step" not in opt.__dict__ and "zero_grad" not in opt.__dict__
    later = torch.optim.SGD(Net().parameters(), lr=0.1)
    assert "step" not in later.__dict__


def test_grad_scaler_is_handed_over_and_the_loss_unscaled(tmp_path):
    with AutoGuard(log_dir=tmp_path, options={"log_every": 1}) as auto:
        model = Net()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        x = torch.ones(8, 4)
        losses = []
        for _ in range(2):
            opt.zero_grad()
            loss = F.mse_loss(model(x), torch.zeros(8, 1))
            losses.append(loss.item())
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        assert opt.guard.scaler is scaler
    auto.close("ok")
    logged = [s["loss"] for s in load_run(tmp_path).steps]
    assert logged == pytest.approx(losses, rel=1e-6)  # not 1024x the loss
