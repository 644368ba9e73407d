"""The guard inside real setups: localization in both loop forms, repro bundles, AMP (bf16
autocast, fp16 GradScaler), gradient clipping, a custom autograd.Function, torch.compile."""

import math

import torch
from torch import nn
from torch.nn import functional as F

import nantrap.torch as nt
from nantrap.findings import Category, Phase
from nantrap.report.run_log import load_run
from tests.torch._guard_setup import (
    Net,
    batches,
    closure_step,
    make,
    same,
    source_line,
    state,
)

DATA = batches(12)


def test_closure_form_localizes_the_first_bad_op_and_the_replay_is_invisible():
    model, opt = make("skip")
    for x, y in DATA[:2]:
        closure_step(model, opt, x, y)
    closure_step(model, opt, *DATA[2], poison=True)
    rng_after = torch.get_rng_state()
    d = opt.diagnoses[-1]
    assert (d.code, d.category, d.phase, d.step) == ("NT103", Category.DOMAIN, Phase.FORWARD, 2)
    assert (d.op, d.neutral_op) == ("aten.log.default", "log")
    assert d.source == source_line("# <- log of zero")
    assert d.evidence["inputs"][0]["zeros"] == 1
    # the same run without localization ends the step with the same RNG and state
    model2, opt2 = make("skip", localize=False)
    for x, y in DATA[:2]:
        closure_step(model2, opt2, x, y)
    closure_step(model2, opt2, *DATA[2], poison=True)
    assert opt2.diagnoses[-1].code == "NT903"
    assert torch.equal(torch.get_rng_state(), rng_after)
    assert same(state(model, opt), state(model2, opt2))


def _loop_form_log_of_zero(opt, model, bad=(2, 4)):
    for i, (x, y) in enumerate(DATA[:6]):
        opt.zero_grad()
        err = (model(x) - y) ** 2
        keep = torch.ones_like(err)
        if i in bad:
            keep[0] = 0.0
        loss = err.mean() - torch.log(err * keep).mean()  # <- loop-form log
        loss.backward()
        opt.step(loss=loss, targets=y)


def test_loop_form_arms_tracing_writes_a_bundle_and_localizes_the_next_incident(tmp_path):
    model, opt = make("skip", log_dir=tmp_path)
    _loop_form_log_of_zero(opt, model)
    first, second = opt.diagnoses
    assert first.code == "NT903" and "tracing is armed" in first.message
    assert first.step == 2 and first.action == "skipped"
    assert (second.code, second.op, second.step) == ("NT103", "aten.log.default", 4)
    assert second.source == source_line("# <- loop-form log", __file__)
    assert opt.guard.bundles and opt.guard.bundles[0].exists()

    bundle = nt.load_bundle(opt.guard.bundles[0])
    assert bundle.step == 2 and bundle.diagnosis.code == "NT903"
    assert torch.equal(bundle.targets, DATA[2][1])

    def loss_fn(out, y):
        err = (out - y) ** 2
        keep = torch.ones_like(err)
        keep[0] = 0.0
        return err.mean() - torch.log(err * keep).mean()  # <- replayed log

    torch.manual_seed(0)
    found = nt.replay(bundle, Net(), loss_fn)
    assert found is not None and (found.code, found.op) == ("NT103", "aten.log.default")


def test_loop_form_first_unlocalized_incident_is_folded_into_the_traced_one(tmp_path):
    """The NT903 of the step that could not be replayed is provisional: the incident the
    armed trace localizes names it, and the report leads with the localized cause."""
    from nantrap.report.markdown import render_markdown

    model, opt = make("skip", log_dir=tmp_path)
    _loop_form_log_of_zero(opt, model)
    first, second = opt.diagnoses
    assert first.evidence["pending_trace"] == 3 and first.evidence["superseded_by"] == 4
    assert second.evidence["supersedes"] == [{"code": "NT903", "step": 2}]
    assert "first seen at step 2" in second.message
    nt.unguard(opt)

    log = load_run(tmp_path)
    (incident,) = log.incidents()
    assert (incident.diagnosis.code, incident.step, incident.first_step) == ("NT103", 4, 2)
    assert [(e.diagnosis.code, e.step) for e in incident.earlier] == [("NT903", 2)]
    assert [a["action"] for a in incident.earlier[0].actions] == ["skip"]
    md = render_markdown(log)
    assert "**First incident:** step 4 · NT103 domain · log" in md
    assert "**incidents** 2" in md and "First seen at step 2" in md
    assert "### Incident 2" not in md


def test_loop_form_unlocalized_incident_stays_when_the_trace_finds_nothing(tmp_path):
    model, opt = make("skip", log_dir=tmp_path)
    _loop_form_log_of_zero(opt, model, bad=(1,))
    (only,) = opt.diagnoses
    assert only.code == "NT903" and only.evidence["pending_trace"] == 3
    nt.unguard(opt)
    (incident,) = load_run(tmp_path).incidents()
    assert incident.diagnosis.code == "NT903" and not incident.earlier


def test_bf16_autocast_runs_clean_and_skips_a_bad_step():
    model, opt = make("skip")

    def step(x, y, poison=False):
        def closure():
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
            loss = F.mse_loss(out.float(), y)
            if poison:
                loss = loss + torch.log(torch.zeros(()))
            loss.backward()
            return loss

        return opt.step(closure)

    for x, y in DATA[:6]:
        step(x, y)
    assert opt.diagnoses == [] and opt.guard.step_count == 6
    before = state(model, opt)
    step(*DATA[6], poison=True)
    assert opt.diagnoses[-1].action == "skipped" and same(state(model, opt), before)


def _scaled_loop(model, opt, scaler, data, *, scale_input=1.0):
    for x, y in data:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x * scale_input)
        loss = F.mse_loss(out.float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(opt)
        scaler.update()


def test_gradscaler_overflow_steps_are_not_incidents():
    torch.manual_seed(0)
    model = Net()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20)
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=0.01), model, scaler=scaler, early_warnings=0
    )
    _scaled_loop(model, opt, scaler, DATA)
    assert [d for d in opt.diagnoses if d.incident] == []
    assert scaler.get_scale() < 2.0**20  # the scaler backed off: those steps were skipped
    opt.zero_grad()  # a skipped iteration is known at the next zero_grad
    assert opt.guard.step_count == len(DATA)  # steps count iterations, skipped ones too
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gradscaler_scale_collapse_is_a_precision_warning():
    torch.manual_seed(0)
    model = Net()
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=0.01), model, scaler=scaler, early_warnings=0
    )
    _scaled_loop(model, opt, scaler, DATA[:6], scale_input=1e6)  # fp16 overflows unscaled
    warnings = [d for d in opt.diagnoses if d.code == "NT201" and d.action is None]
    assert len(warnings) == 1 and warnings[0].category is Category.PRECISION
    assert warnings[0].evidence["loss_scale"] < 1.0 and not warnings[0].incident
    opt.zero_grad()
    assert opt.guard.step_count == 6  # no update applied, six iterations
    # the collapse armed tracing: the next skipped step names the op that overflows float16
    (traced,) = [d for d in opt.diagnoses if d.action == "skipped-by-scaler"]
    assert (traced.code, traced.category, traced.module) == (
        "NT201",
        Category.PRECISION,
        "model.fc1",
    )
    assert "float16" in traced.message and not traced.incident


def test_gradscaler_state_is_part_of_the_snapshot():
    torch.manual_seed(0)
    model = Net()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=0.01),
        model,
        scaler=scaler,
        snapshot_every=2,
        early_warnings=0,
    )
    _scaled_loop(model, opt, scaler, DATA[:2])
    scale_at_snapshot = scaler.get_scale()
    _scaled_loop(model, opt, scaler, DATA[2:3])
    assert scaler.get_scale() != scale_at_snapshot
    with torch.no_grad():
        model.fc1.weight[0, 0] = math.nan  # the scaler would skip every step from now on
    _scaled_loop(model, opt, scaler, DATA[3:4])
    opt.zero_grad()  # the next iteration begins: the guard looks at the skipped one
    d = opt.diagnoses[-1]
    assert (d.code, d.module, d.action) == ("NT403", "fc1", "rolled-back")
    assert scaler.get_scale() == scale_at_snapshot and opt.guard.step_count == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gradscaler_does_not_hide_bad_data():
    torch.manual_seed(0)
    model = Net()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=0.01), model, scaler=scaler, early_warnings=0
    )
    x, y = DATA[1]
    x = x.clone()
    x[3, 3] = math.nan
    _scaled_loop(model, opt, scaler, [DATA[0], (x, y), DATA[2]])
    assert [(d.code, d.step, d.action) for d in opt.diagnoses] == [("NT401", 1, "skipped")]


def test_gradient_clipping_between_backward_and_step_does_not_hide_nan():
    model, opt = make("skip")
    for i, (x, y) in enumerate(DATA[:5]):
        before = state(model, opt)
        opt.zero_grad()
        err = (model(x) - y) ** 2
        loss = err.mean() - (torch.log(err[:1] * 0).mean() if i == 3 else 0)
        loss.backward()
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if i == 3:
            assert not torch.isfinite(total)
        opt.step()
        if i == 3:
            assert same(state(model, opt), before)
    assert [d.step for d in opt.diagnoses] == [3]


class BadSqrt(torch.autograd.Function):
    """sqrt whose hand-written backward divides by 2*sqrt(x): inf at 0."""

    @staticmethod
    def forward(ctx, x):
        y = torch.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad / (2 * y)


def test_custom_autograd_function_with_a_nan_backward():
    model, opt = make("skip")

    def step(x, y, zero_row):
        def closure():
            opt.zero_grad()
            h = model(x) - y
            h2 = h**2
            if zero_row:
                h2 = h2 * torch.cat([torch.zeros(1, 1), torch.ones(len(x) - 1, 1)])
            loss = BadSqrt.apply(h2).mean()  # <- custom function
            loss.backward()
            return loss

        return opt.step(closure)

    step(*DATA[0], False)
    before = state(model, opt)
    loss = step(*DATA[1], True)
    assert math.isfinite(loss.item())  # forward finite, backward inf/NaN
    d = opt.diagnoses[-1]
    assert d.action == "skipped" and d.step == 1 and same(state(model, opt), before)
    assert d.phase is Phase.BACKWARD and d.code != "NT903"


def test_compiled_model_detection_and_eager_localization():
    torch.manual_seed(0)
    net = Net()
    compiled = torch.compile(net, backend="aot_eager")
    opt = nt.guard(
        torch.optim.SGD(net.parameters(), lr=0.05), compiled, policy="skip", early_warnings=0
    )
    for x, y in DATA[:3]:
        closure_step(compiled, opt, x, y)
    assert opt.diagnoses == []
    closure_step(compiled, opt, *DATA[3], poison=True)
    assert opt.diagnoses[-1].code == "NT103" and opt.diagnoses[-1].op == "aten.log.default"
    x, y = DATA[4]
    x = x.clone()
    x[1, 1] = math.nan
    closure_step(compiled, opt, x, y)
    assert opt.diagnoses[-1].code == "NT401"
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_lbfgs_which_calls_the_closure_itself_is_checked_after_its_step():
    torch.manual_seed(0)
    model = nn.Linear(6, 1)
    opt = nt.guard(
        torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4),
        model,
        snapshot_every=1,
        early_warnings=0,
    )
    for i, (x, y) in enumerate(DATA[:4]):

        def closure(x=x, y=y, bad=i == 2):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y) + (torch.log(torch.zeros(())) if bad else 0.0)
            loss.backward()
            return loss

        opt.step(closure)
    d = opt.diagnoses[-1]
    assert d.step == 2 and d.action == "rolled-back"
    assert all(torch.isfinite(p).all() for p in model.parameters())
