"""EarlyWarnings on real training loops: saturation, the clip trap, ranges, sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nantrap.findings import Category
from nantrap.torch.early_warnings import EarlyWarnings
from tests.torch._models import SmallCNN, TinyLM, line_of


def _batch(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))  # <- gate sigmoid


def test_sigmoid_saturation_warns_with_fraction_and_preactivation_range():
    torch.manual_seed(0)
    model = nn.Sequential(Gate(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].fc.weight.mul_(100.0)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    ew = EarlyWarnings(model, every=10)
    with torch.no_grad():
        pre = model[0].fc(x)
        p = torch.sigmoid(pre)
        saturated = int(((p == 0) | (p == 1)).sum())
    assert saturated > 0
    F.mse_loss(model(x), y).backward()
    warnings = ew.end_step(0)
    ew.close()
    (w,) = [d for d in warnings if d.code == "NT203"]
    assert w.category is Category.SATURATION and not w.incident
    assert w.module == "model.0" and w.neutral_op == "sigmoid"
    assert w.location.line == line_of("# <- gate sigmoid")
    assert w.evidence["saturated"] == saturated and w.evidence["numel"] == 256
    assert w.evidence["threshold"] == pytest.approx(16.64, abs=0.01)
    assert w.evidence["pre_max"] == pytest.approx(float(pre.max()), rel=1e-5)
    assert f"{saturated} of 256" in w.message
    assert ew.ranges["model.0"]["saturated"] == pytest.approx(saturated / 256)
    assert ew.ranges["model.1"]["min"] <= ew.ranges["model.1"]["max"]


def test_clip_before_log_is_nt102_with_the_clipped_fraction():
    torch.manual_seed(0)
    model = SmallCNN(probs=True)
    with torch.no_grad():
        model.head.fc.weight.mul_(2000.0)
    x, y = _batch()
    ew = EarlyWarnings(model, every=5)
    p = model(x)
    onehot = F.one_hot(y, 10).float()
    loss = -(onehot * torch.log(torch.clamp(p, 1e-8, 1.0))).sum(-1).mean()  # <- fake loss
    loss.backward()
    with torch.no_grad():
        clipped = int((p < 1e-8).sum())
        blocked = int(((p < 1e-8) & (onehot > 0)).sum())
    warnings = ew.end_step(0)
    ew.close()
    (w,) = [d for d in warnings if d.category is Category.CLIP_TRAP]
    assert w.code == "NT102" and w.evidence["feeds_log"]
    assert w.evidence["clipped"] == clipped and w.evidence["blocked"] == blocked > 0
    assert w.evidence["clipped_fraction"] == pytest.approx(clipped / 160)
    assert w.location.line == line_of("# <- fake loss")
    assert "not being optimized" in w.message


def test_clamp_not_feeding_log_is_nt303():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.fill_(3.0)
    x, y = torch.randn(64, 4), torch.full((64, 1), 0.5)
    ew = EarlyWarnings(model, every=1)
    pred = model(x).clamp(0.0, 1.0)  # <- clamped prediction
    F.mse_loss(pred, y).backward()
    (w,) = ew.end_step(0)
    ew.close()
    assert w.code == "NT303" and not w.evidence["feeds_log"]
    assert w.location.line == line_of("# <- clamped prediction")


def test_sampling_every_n_steps_and_no_false_alarm_on_a_masked_transformer():
    torch.manual_seed(0)
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ids = torch.randint(0, 50, (4, 16))
    ew = EarlyWarnings(model, every=3)
    sampled = []
    for step in range(6):
        opt.zero_grad()
        logits = model(ids[:, :-1])
        F.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1)).backward()
        sampled.append(ew.sampling)
        assert ew.end_step(step) == []
        opt.step()
    assert sampled == [True, False, False, True, False, False]
    assert "model.enc.layers.0.self_attn" in ew.ranges
    state = ew.state_dict()
    ew.close()
    again = EarlyWarnings(model, every=3)
    again.load_state_dict(state)
    assert again.state_dict() == state
    again.close()
    assert not model._forward_pre_hooks


def test_sampling_and_armed_tracing_stop_in_any_order():
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    from nantrap.torch.localize import ArmedTrace

    torch.manual_seed(0)
    model = SmallCNN(probs=True)
    with torch.no_grad():
        model.head.fc.weight.mul_(2000.0)
    x, y = _batch(8)
    ew = EarlyWarnings(model, every=1)
    armed = ArmedTrace(model)
    armed.arm()
    p = model(x)
    assert len(_get_current_dispatch_mode_stack()) == 2
    loss = -torch.log(p.gather(1, y[:, None])).mean()
    loss.backward()
    ew.end_step(0)  # the mode entered first stops first
    assert armed.tracing and len(_get_current_dispatch_mode_stack()) == 1
    d = armed.finish(0)
    assert _get_current_dispatch_mode_stack() == []
    assert d.code == "NT101"
    ew.close()
    armed.close()


def test_bce_targets_outside_unit_interval_warn_before_any_nan():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = torch.randn(16, 4)
    labels = torch.randint(0, 3, (16, 1)).float()  # three classes fed to a binary loss
    ew = EarlyWarnings(model, every=1)
    loss = F.binary_cross_entropy_with_logits(model(x), labels)  # <- binary loss
    loss.backward()
    assert torch.isfinite(loss)
    (w,) = ew.end_step(0)
    ew.close()
    assert (w.code, w.category, w.incident) == ("NT402", Category.BAD_DATA, False)
    assert w.location.line == line_of("# <- binary loss")
    assert "targets in [0, 2], outside [0, 1]" in w.message
