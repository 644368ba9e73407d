"""The recurrent transfers' sequence-length cases, on known weights: the |c_0| + t cell
bound, the forget-gate fixed point when the length is unknown, the saturated-forget-gate
warning, the relu RNN's overflow step, and ONNX's zero padding."""

from __future__ import annotations

import numpy as np
import pytest

from nantrap.analyze.interval import Interval
from nantrap.analyze.transfer import Ctx, apply
from nantrap.floats import FORMATS

F32 = FORMATS["float32"]
H = 2


def lstm_ctx(steps, *, forget_bias=0.0, output="cell", **attrs):
    w_ih = np.full((4 * H, 1), 0.5)
    w_hh = np.zeros((4 * H, H))
    b = np.zeros(4 * H)
    b[H : 2 * H] = forget_bias  # torch's ifgo order: rows H..2H are the forget gate
    shapes = ((steps or 1, 1, 1), (1, 1, H), (1, 1, H), w_ih.shape, w_hh.shape, (4 * H,), (4 * H,))
    attrs = {"hidden_size": H, "output": output, "seq_dynamic": steps is None, **attrs}
    ctx = Ctx(F32, attrs=attrs, shapes=shapes, consts=(None, None, None, w_ih, w_hh, b, b * 0))
    args = (Interval(-1, 1), Interval.point(0), Interval.point(0.5))
    return ctx, (*args, *(Interval.hull(a) for a in (w_ih, w_hh, b, b * 0)))


def test_cell_grows_at_most_one_per_step_from_c0():
    ig = 1 / (1 + np.exp(-0.5)) * np.tanh(0.5)  # the largest i * g for x in [-1, 1]
    for steps in (1, 5, 40):
        ctx, args = lstm_ctx(steps, forget_bias=30.0)  # forget gate is exactly 1 in float32
        c = apply("lstm", ctx, *args)
        # |c_t| <= |c_0| + t (* max |i g|): reached, since f == 1 keeps everything
        assert c.hi == pytest.approx(0.5 + steps * ig, rel=1e-5)
        assert c.lo == pytest.approx(0.5 - steps * ig, abs=1e-4)


def test_unknown_length_uses_the_forget_gate_fixed_point():
    ctx, args = lstm_ctx(None, forget_bias=-2.0)
    c = apply("lstm", ctx, *args)
    f_hi = 1 / (1 + np.exp(2.0 - 0.5))  # sigmoid of the forget gate's top pre-activation
    ig = 1 / (1 + np.exp(-0.5)) * np.tanh(0.5)
    assert c.hi == pytest.approx(max(0.5, ig / (1 - f_hi)), rel=1e-3)
    assert not ctx.hazards


def test_unknown_length_with_a_saturated_forget_gate():
    ctx, args = lstm_ctx(None, forget_bias=30.0)
    c = apply("lstm", ctx, *args)  # float32: finite under the assumed 2**31 steps, no alarm
    assert c.is_finite and c.hi >= 2**31 * 0.28 and not any(h.nonfinite for h in ctx.hazards)
    half, args = lstm_ctx(None, forget_bias=30.0)
    half.fmt = FORMATS["float16"]
    assert not apply("lstm", half, *args).is_finite
    (h,) = [h for h in half.hazards if h.code == "NT201"]  # 65504 / 0.29: ~2.3e5 steps
    assert "unknown" in h.message and h.severity.value == "warning" and "2.27e+05" in h.message
    hidden_ctx, args = lstm_ctx(None, forget_bias=30.0, output="seq")
    assert apply("lstm", hidden_ctx, *args) in Interval(-1, 1)  # h stays bounded anyway


def test_relu_rnn_unknown_length_contracting_is_bounded_growing_is_flagged():
    def run(w):
        w_ih, w_hh, b = np.full((H, 1), 1.0), np.full((H, H), w), np.zeros(H)
        ctx = Ctx(
            F32,
            attrs={"hidden_size": H, "nonlinearity": "relu", "seq_dynamic": True},
            shapes=((1, 1, 1), (1, 1, H), w_ih.shape, w_hh.shape, (H,), (H,)),
            consts=(None, None, w_ih, w_hh, b, b),
        )
        hull = [Interval.hull(a) for a in (w_ih, w_hh, b, b)]
        return apply("rnn", ctx, Interval(0, 1), Interval.point(0), *hull), ctx

    small, ctx = run(0.25)  # rho = 0.5: |h| <= 1 / (1 - 0.5)
    assert small.hi == pytest.approx(2.0, rel=1e-3) and not ctx.hazards
    big, ctx = run(1.0)  # rho = 2: doubles each step, passes 3.4e38 at step ~128
    assert not big.is_finite
    (h,) = ctx.hazards
    assert h.code == "NT116" and h.evidence["growth_per_step"] == pytest.approx(2.0)
    assert 120 <= h.evidence["overflow_step"] <= 130


def test_onnx_sequence_lens_padding_adds_zero():
    w_ih, w_hh, b = np.full((3 * H, 1), 3.0), np.zeros((3 * H, H)), np.zeros(3 * H)
    base = {"hidden_size": H, "gate_order": "zrn"}
    shapes = ((4, 1, 1), (1, 1, H), w_ih.shape, w_hh.shape, (3 * H,), (3 * H,))
    args = (Interval(1, 2), Interval.point(0.9), *(Interval.hull(a) for a in (w_ih, w_hh, b, b)))
    consts = (None, None, w_ih, w_hh, b, b)
    plain = apply("gru", Ctx(F32, attrs=base, shapes=shapes, consts=consts), *args)
    assert plain.lo > 0.5  # the hull of h_0 = 0.9 and tanh([3, 6])
    padded = Ctx(F32, attrs={**base, "padded": True}, shapes=shapes, consts=consts)
    assert apply("gru", padded, *args).lo == 0.0
