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
    opt.zero_grad()  # the scaler's last skip (if any) is known at the next zero_grad
    assert opt.guard.step_count == 8  # guard steps count iterations, skipped ones too
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


def test_step_numbers_count_iterations_the_scaler_skipped(tmp_path):
    """init_scale 2**40 makes the scaler skip the first 24 iterations (scaled gradients
    overflow float16) while it halves its scale: a bad batch at iteration 27 is reported
    as step 27, in the diagnosis, its message and events.jsonl, not as step 3."""
    import json
    import math

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, growth_interval=1000)
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=1e-2),
        model,
        policy="rollback",
        scaler=scaler,
        early_warnings=0,
        log_dir=tmp_path,
        bundle=False,
    )
    g = torch.Generator().manual_seed(0)
    skipped = 0
    for it in range(30):
        x, y = torch.randn(16, 8, generator=g), torch.randn(16, 1, generator=g)
        if it == 27:
            x[0, 0] = math.nan
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = ((model(x).float() - y) ** 2).mean()
        before = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        skipped += scaler.get_scale() < before
    opt.zero_grad()  # the last iteration ends
    assert skipped >= 20
    (d,) = opt.diagnoses
    assert (d.code, d.step, d.action) == ("NT401", 27, "skipped")
    assert "at step 27" in d.message
    assert opt.guard.step_count == 30
    nt.unguard(opt)
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "diagnosis"] == [27]
    assert [r["step"] for r in records if r["type"] == "action"] == [27]
    assert records[-1]["type"] == "end" and records[-1]["step"] == 30
