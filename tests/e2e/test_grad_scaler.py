"""Scenario: float16 autocast with a GradScaler (on CPU: ``torch.amp.GradScaler("cpu")``).
Steps the scaler skips while it finds its scale are its business, not incidents; a scale
that collapses because the forward overflows float16 even unscaled is a precision problem,
localized to the op that overflowed and the user's line."""

from __future__ import annotations

import torch
from torch import nn

import nantrap.torch as nt
from tests.torch._models import line_of


def _run(steps: int, *, init_scale: float, blow_up_from: int | None = None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=2)
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=1e-2),
        model,
        policy="rollback",
        scaler=scaler,
        early_warnings=0,
    )
    g = torch.Generator().manual_seed(0)
    scales, params_at = [], {}
    for step in range(steps):
        x, y = torch.randn(16, 8, generator=g), torch.randn(16, 1, generator=g)
        if blow_up_from is not None and step >= blow_up_from:
            x = x * 3e4  # inputs past float16's range
        params_at[step] = [p.detach().clone() for p in model.parameters()]
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x)  # <- the float16 forward
            loss = ((out.float() - y) ** 2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    return model, opt, scales, params_at


def test_steps_the_scaler_skips_are_not_incidents():
    model, opt, scales, _ = _run(8, init_scale=2.0**20)
    assert scales[0] < 2.0**20  # the scaler did skip its first steps (scale halved)
    assert not opt.diagnoses
    assert 0 < opt.guard.step_count < 8  # only the applied updates count as guard steps
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_collapsing_scale_is_precision_and_the_overflow_is_localized():
    model, opt, scales, params_at = _run(14, init_scale=2.0**4, blow_up_from=3)
    assert min(scales) < 1.0
    codes = [(d.code, d.category.value) for d in opt.diagnoses]
    assert codes[0] == ("NT201", "precision"), codes
    assert "loss scale fell from" in opt.diagnoses[0].message
    located = [d for d in opt.diagnoses if d.op is not None]
    assert located, [d.message for d in opt.diagnoses]
    d = located[0]
    assert d.code == "NT201" and d.module == "model.0"
    assert d.source == f"{__file__}:{line_of('# <- the float16 forward')}"
    assert "float16 (max 65504)" in d.message and "fits in float32" in d.message
    assert d.action == "skipped-by-scaler"
    # no update after the blow-up: the weights are those of the last good step
    last = params_at[3]
    assert all(torch.equal(a, p) for a, p in zip(last, model.parameters(), strict=True))
