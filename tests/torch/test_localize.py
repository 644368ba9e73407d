"""localize() on real training steps with injected faults: op, module, line, category, numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nantrap.findings import Category, Phase
from nantrap.torch.localize import ArmedTrace, localize
from nantrap.torch.trace import OpTrace
from tests.torch._models import SmallCNN, TinyLM, line_of

HERE = __file__


def _batch(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_log_of_softmax_underflow_in_handwritten_ce_is_nt101_with_provenance():
    torch.manual_seed(0)
    model = SmallCNN(probs=True)
    with torch.no_grad():
        model.head.fc.weight.mul_(2000.0)  # huge logit gaps: softmax underflows to 0
    x, y = _batch()

    def step():
        p = model(x)
        onehot = F.one_hot(y, 10).float()
        loss = -(onehot * torch.log(p)).sum(-1).mean()  # <- log of probabilities
        loss.backward()
        return loss

    with torch.no_grad():
        zeros = int((model(x) == 0).sum())
    assert zeros > 0
    d = localize(step, model, step=7)
    assert d is not None
    assert (d.code, d.category, d.phase) == ("NT101", Category.DOMAIN, Phase.FORWARD)
    assert (d.op, d.neutral_op, d.step) == ("aten.log.default", "log", 7)
    assert d.location.path == HERE and d.location.line == line_of("# <- log of probabilities")
    assert d.location.source_line.startswith("loss = -(onehot * torch.log(p))")
    assert d.evidence["producer"]["neutral_op"] == "softmax"
    assert d.evidence["producer"]["module"] == "model.head"
    assert d.evidence["inputs"][0]["zeros"] == zeros
    assert f"exactly 0 in {zeros} of {16 * 10} elements" in d.message
    assert "softmax in model.head" in d.message
    assert "log_softmax" in d.fix


def test_sqrt_at_zero_in_backward_names_sqrt_not_powbackward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    a = torch.randn(12, 4)
    with torch.no_grad():
        b = model(a)
        b[4:] += 1.0  # rows 0..3 coincide: distance exactly 0

    def step():
        dist = torch.sqrt(((model(a) - b) ** 2).sum(-1))  # <- distance
        loss = dist.mean()
        loss.backward()
        return loss

    d = localize(step, model, step=3)
    assert d is not None
    assert (d.code, d.phase, d.neutral_op) == ("NT111", Phase.BACKWARD, "sqrt")
    assert d.op == "aten.sqrt.default" and d.location.node == "SqrtBackward0"
    assert "PowBackward0" not in d.message
    assert d.location.line == line_of("# <- distance")
    assert d.evidence["zeros"] == 4 and d.evidence["numel"] == 12


def test_nan_in_input_batch_is_bad_data_at_first_conv():
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = _batch()
    x[3, 1, 5, 7] = math.nan

    def step():
        loss = F.cross_entropy(model(x), y)  # <- data step
        loss.backward()
        return loss

    d = localize(step, model, step=0)
    assert (d.code, d.category, d.phase) == ("NT401", Category.BAD_DATA, Phase.DATA)
    assert d.module == "model.conv1" and d.neutral_op == "conv"
    assert d.evidence["tensor"] == "input 0"
    assert d.evidence["stats"]["nan"] == 1 and d.evidence["stats"]["numel"] == x.numel()
    assert "1 NaN of 49152 elements" in d.message


class ExpHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, h):
        return torch.exp(self.fc(h))  # <- exp of logits


def test_exp_overflow_is_nt113_with_threshold():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), ExpHead())
    with torch.no_grad():
        model[1].fc.weight.mul_(200.0)
    x = torch.randn(32, 4)

    def step():
        loss = model(x).mean()
        loss.backward()
        return loss

    with torch.no_grad():
        pre = model[1].fc(model[0](x))
    d = localize(step, model)
    assert (d.code, d.category, d.neutral_op) == ("NT113", Category.OVERFLOW, "exp")
    assert d.module == "model.1" and d.location.line == line_of("# <- exp of logits")
    assert d.evidence["threshold"] == pytest.approx(88.72, abs=0.01)
    assert d.evidence["input_max_abs"] == pytest.approx(float(pre.abs().max()), rel=1e-5)


def test_float16_overflow_is_precision_nt201():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).half()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.fill_(100.0)  # 16 * 64 * 100 = 102400 > 65504
    x = torch.full((8, 16), 4.0, dtype=torch.float16)

    def step():
        loss = model(x).float().mean()
        loss.backward()
        return loss

    d = localize(step, model)
    assert (d.code, d.category) == ("NT201", Category.PRECISION)
    assert d.module == "model.2" and d.neutral_op == "matmul"
    assert d.evidence["dtype"] == "float16" and d.evidence["dtype_max"] == 65504.0
    assert "float16 (max 65504)" in d.message


def test_division_by_zero_norm_is_nt110():
    torch.manual_seed(0)
    model = nn.Linear(6, 6)
    x = torch.randn(10, 6)
    x[2] = 0.0
    with torch.no_grad():
        model.bias.zero_()

    def step():
        h = model(x)
        unit = h / h.norm(dim=-1, keepdim=True)  # <- normalize
        loss = unit.sum()
        loss.backward()
        return loss

    d = localize(step, model)
    assert (d.code, d.neutral_op, d.phase) == ("NT110", "div", Phase.FORWARD)
    assert d.location.line == line_of("# <- normalize")
    assert d.evidence["inputs"][1]["zeros"] == 1
    assert "exactly 0 in 1 of 10 elements" in d.message
    assert d.evidence["producer"]["neutral_op"] == "norm"


def test_transformer_with_mask_and_dropout_runs_clean():
    torch.manual_seed(0)
    model = TinyLM().train()
    ids = torch.randint(0, 50, (4, 16))

    def step():
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1))
        loss.backward()
        return loss

    with OpTrace(model) as trace:
        step()
    assert any(not e.finite for e in trace.events), "the -inf mask must be visible"
    assert any(e.intentional for e in trace.events) or any(
        e.leaves and "buffer model.causal" in e.leaves for e in trace.events
    )
    assert {e.phase for e in trace.events} == {Phase.FORWARD, Phase.BACKWARD}
    model.zero_grad()
    assert localize(step, model) is None


class ClampedLog(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.log()  # <- custom forward

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / x


def test_custom_autograd_function_localizes_inside_its_forward():
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    x = torch.randn(8, 4)

    def step():
        loss = ClampedLog.apply(torch.relu(model(x))).mean()
        loss.backward()
        return loss

    d = localize(step, model)
    assert (d.code, d.neutral_op, d.phase) == ("NT103", "log", Phase.FORWARD)
    assert d.location.line == line_of("# <- custom forward")
    assert d.evidence["producer"]["neutral_op"] == "relu"


def test_custom_function_backward_is_mapped_to_its_forward_op():
    x = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)

    def step():
        y = ClampedLog.apply(x)
        loss = torch.where(x > 0, y, torch.zeros_like(y)).sum()  # masks log(0) in forward
        loss.backward()
        return loss

    d = localize(step)
    assert d.neutral_op == "log"
    assert d.location.line == line_of("# <- custom forward")


def test_log_one_minus_sigmoid_is_nt104():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.fill_(30.0)
    x = torch.ones(8, 4)
    y = torch.zeros(8, 1)

    def step():
        p = torch.sigmoid(model(x))
        loss = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()  # <- bce by hand
        loss.backward()
        return loss

    d = localize(step, model)
    assert (d.code, d.neutral_op) == ("NT104", "log")
    assert d.location.line == line_of("# <- bce by hand")
    assert "1 - sigmoid" in d.message
    assert d.evidence["sigmoid_one_above"] == pytest.approx(16.64, 0.01)


def test_epsilon_absorbed_by_float32_is_nt107():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.fill_(30.0)
    x = torch.ones(8, 4)
    eps = 1e-10

    def step():
        p = torch.clamp(torch.sigmoid(model(x)), eps, 1 - eps)  # <- clamp with eps
        loss = -torch.log(1 - p).mean()
        loss.backward()
        return loss

    d = localize(step, model)
    assert (d.code, d.category) == ("NT107", Category.PRECISION)
    assert d.evidence["epsilon"] == pytest.approx(1e-10, rel=1e-3)
    assert d.evidence["dtype"] == "float32"
    assert "absorbed" in d.message


def test_nonfinite_parameter_before_step_is_nt403():
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = math.inf
    x, y = _batch(4)

    def step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    d = localize(step, model)
    assert (d.code, d.category) == ("NT403", Category.BAD_DATA)
    assert d.evidence["tensor"] == "model.conv2.weight" and d.module == "model.conv2"


def test_class_index_out_of_range_is_nt402():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 1])

    def step():
        loss = F.cross_entropy(model(x), y)  # <- ce
        loss.backward()
        return loss

    d = localize(step, model)
    assert (d.code, d.category) == ("NT402", Category.BAD_DATA)
    assert d.evidence["classes"] == 3 and d.evidence["target"]["max"] == 3
    assert d.location.line == line_of("# <- ce")


def test_clean_step_returns_none_and_unrelated_errors_propagate():
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    assert localize(lambda: model(x).sum().backward(), model) is None
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        localize(lambda: model(torch.randn(4, 5)).sum(), model)


def test_armed_trace_localizes_the_next_step_of_a_plain_loop():
    torch.manual_seed(0)
    model = SmallCNN(probs=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        model.head.fc.weight.mul_(2000.0)
    x, y = _batch(8)
    armed = ArmedTrace(model)
    results = []
    for step in range(2):
        if step == 1:
            armed.arm()
        opt.zero_grad()
        p = model(x)
        loss = -torch.log(p.gather(1, y[:, None])).mean()  # <- loop form B
        loss.backward()
        results.append(armed.finish(step))
    armed.close()
    assert results[0] is None and not armed.tracing
    d = results[1]
    assert (d.code, d.step, d.neutral_op) == ("NT101", 1, "log")
    assert d.location.line == line_of("# <- loop form B")
    assert not model._forward_pre_hooks and not model.head._forward_hooks


def test_hand_written_norm_at_zero_is_nt111_while_torch_norm_is_clean():
    torch.manual_seed(0)
    emb = nn.Embedding(6, 3)
    ids = torch.tensor([0, 1, 2, 3])
    target = torch.tensor([0, 5, 2, 4])  # rows 0 and 2 coincide: distance exactly 0

    def by_hand():
        dist = (emb(ids) - emb(target)).pow(2).sum(-1).sqrt()  # <- embedding distance
        loss = dist.mean()
        loss.backward()
        return loss

    d = localize(by_hand, emb)
    assert (d.code, d.phase, d.neutral_op) == ("NT111", Phase.BACKWARD, "sqrt")
    assert d.location.line == line_of("# <- embedding distance")
    assert d.evidence["zeros"] == 2
    emb.zero_grad()

    def built_in():  # torch's norm backward masks the 0/0 at a zero vector
        loss = (emb(ids) - emb(target)).norm(dim=-1).mean()
        loss.backward()
        return loss

    assert localize(built_in, emb) is None


def test_acos_of_rounded_cosine_is_nt114_and_fractional_pow_is_nt115():
    a = torch.tensor([[0.6, 0.8], [1.0, 0.0]], requires_grad=True)

    def step():
        cos = (a * a).sum(-1) * 1.0000001  # a rounding error pushes cos past 1
        loss = torch.acos(cos).sum()  # <- angle
        loss.backward()
        return loss

    d = localize(step)
    assert (d.code, d.neutral_op) == ("NT114", "acos")
    assert d.location.line == line_of("# <- angle")
    assert d.evidence["inputs"][0]["max"] > 1.0

    x = torch.tensor([4.0, -1.0, 9.0], requires_grad=True)

    def root_step():
        loss = (x**0.5).sum()  # <- fractional power
        loss.backward()
        return loss

    d = localize(root_step)
    assert (d.code, d.neutral_op) == ("NT115", "pow")
    assert d.evidence["exponent"] == 0.5 and "min -1" in d.message


def test_sum_overflow_is_nt116():
    x = torch.full((4, 8), 1e38, requires_grad=True)

    def step():
        loss = x.sum()  # <- big sum
        loss.backward()
        return loss

    d = localize(step)
    assert (d.code, d.category, d.neutral_op) == ("NT116", Category.OVERFLOW, "sum")
    assert d.evidence["dtype_max"] == pytest.approx(3.4028e38, rel=1e-4)


def test_bf16_autocast_step_runs_clean_and_eval_forward_does_not_start_tracing():
    torch.manual_seed(0)
    model = TinyLM()
    ids = torch.randint(0, 50, (2, 16))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, 50), ids[:, 1:].reshape(-1))
        loss.backward()
        return loss

    assert localize(step, model) is None
    armed = ArmedTrace(model)
    armed.arm()
    with torch.no_grad():
        model(ids[:, :-1])  # validation pass
    assert armed.armed and not armed.tracing
    armed.close()


def test_bad_arguments_raise_config_errors():
    from nantrap.errors import ConfigError
    from nantrap.torch.early_warnings import EarlyWarnings

    with pytest.raises(ConfigError, match="needs a callable"):
        localize(42)
    with pytest.raises(ConfigError, match=r"ArmedTrace\(model=...\) needs a torch.nn.Module"):
        ArmedTrace("model")
    with pytest.raises(ConfigError, match=r"OpTrace\(model=...\)"):
        OpTrace(model=[nn.Linear(2, 2)])
    with pytest.raises(ConfigError, match=r"every=0"):
        EarlyWarnings(nn.Linear(2, 2), every=0)
    with pytest.raises(ConfigError, match=r"clip=1.5"):
        EarlyWarnings(nn.Linear(2, 2), clip=1.5)
