"""Every transfer function is sound against its numpy reference, in every float format.

For intervals drawn with hypothesis and points drawn inside them, the reference result
(computed in float64 on the format's values, then rounded to the format) lies inside the
transfer's output interval, or is NaN/inf and a hazard of the op says it can be.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nantrap.analyze.interval import Interval
from nantrap.analyze.transfer import TRANSFER, Ctx, Example, apply, load
from nantrap.floats import FORMATS

load()

# CI runs a fixed sample (no flakes); NANTRAP_SOUNDNESS_EXAMPLES=500 explores fresh ones
EXAMPLES = int(os.environ.get("NANTRAP_SOUNDNESS_EXAMPLES", "25"))
DERANDOMIZE = "NANTRAP_SOUNDNESS_EXAMPLES" not in os.environ

DTYPES = {"float16": np.float16, "float32": np.float32}
try:
    import ml_dtypes

    DTYPES["bfloat16"] = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover - ml_dtypes ships with tensorflow
    pass


def _bounds(fmt, domain):
    if domain is not None:
        return st.floats(domain[0], domain[1], allow_nan=False, width=32)
    big = st.floats(-fmt.max, fmt.max, allow_nan=False, allow_infinity=False, width=32)
    small = st.floats(-30.0, 30.0, allow_nan=False, width=32)
    unit = st.floats(-1.5, 1.5, allow_nan=False, width=32)
    return st.one_of(small, unit, big, st.sampled_from([0.0, 1.0, -1.0, 0.5]))


def _cast(x, dt):
    with np.errstate(all="ignore"):
        return np.asarray(x, dtype=np.float64).astype(dt).astype(np.float64)


def _ref_kwargs(ref, attrs):
    try:
        params = inspect.signature(ref).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in attrs.items() if k in params}


def check(name: str, fmt_name: str, data, example: Example | None = None, ref=None) -> None:
    entry = TRANSFER[name]
    ex = example or entry.example
    ref = ref or entry.ref
    fmt, dt = FORMATS[fmt_name], DTYPES[fmt_name]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    intervals, points, consts = [], [], []
    for i, shape in enumerate(ex.shapes):
        a, b = (data.draw(_bounds(fmt, ex.domain), label=f"bound{i}") for _ in range(2))
        lo, hi = sorted(float(v) for v in _cast([a, b], dt))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi = max(lo, -fmt.max), min(hi, fmt.max)
        n = int(np.prod(shape)) if shape else 1
        t = rng.uniform(size=n)
        t[rng.uniform(size=n) < 0.2] = 0.0
        t[rng.uniform(size=n) < 0.2] = 1.0
        pts = np.clip(_cast(lo + t * (hi - lo), dt), lo, hi).reshape(shape)
        points.append(pts)
        if i in ex.consts:
            consts.append(pts)
            intervals.append(Interval.hull(pts))
        else:
            consts.append(None)
            intervals.append(Interval(lo, hi))
    with np.errstate(all="ignore"):
        y = ref(*points, **_ref_kwargs(ref, ex.attrs))
    y = _cast(y, dt)
    ctx = Ctx(
        fmt,
        attrs=ex.attrs,
        shapes=tuple(ex.shapes),
        out_shape=ex.out_shape if ex.out_shape is not None else y.shape,
        consts=tuple(consts),
    )
    out = apply(name, ctx, *intervals)
    finite = y[np.isfinite(y)]
    if finite.size:
        assert out.lo <= finite.min() and finite.max() <= out.hi, (
            f"{name} [{fmt_name}]: inputs {intervals} -> {out}, but ref gives "
            f"[{finite.min()!r}, {finite.max()!r}]"
        )
    if not np.isfinite(y).all():
        assert any(h.nonfinite and not h.grad for h in ctx.hazards), (
            f"{name} [{fmt_name}]: inputs {intervals} -> {out} with no hazard, but ref "
            f"gives non-finite {y[~np.isfinite(y)][:3]}"
        )


@pytest.mark.parametrize("fmt_name", sorted(DTYPES))
@pytest.mark.parametrize("name", sorted(TRANSFER))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=DERANDOMIZE,
)
@given(data=st.data())
def test_transfer_is_sound(name, fmt_name, data):
    check(name, fmt_name, data)


def test_every_transfer_has_a_reference():
    assert TRANSFER, "the transfer table is empty"
    for name, entry in TRANSFER.items():
        assert callable(entry.ref), name


# second examples of ops whose attrs switch the computation (one Example per table entry)
def _permuted(ref, order: str, canonical: str, first: int):
    """``ref`` on weights whose gate blocks come in ``order`` (ONNX) instead of ``canonical``."""

    def run(*args, **kw):
        args = list(args)
        for j in range(first, len(args)):
            rows = args[j].shape[0] // len(order)
            blocks = {g: args[j][k * rows : (k + 1) * rows] for k, g in enumerate(order)}
            args[j] = np.concatenate([blocks[g] for g in canonical])
        return ref(*args, **kw)

    return run


def _gru_reset_first(x, h0, w_ih, w_hh, b_ih, b_hh):
    """ONNX GRU with linear_before_reset=0: n = tanh(W x + b + U (r * h) + b_h)."""
    h, hid, hs = h0[0], w_hh.shape[1], []
    for t in range(x.shape[0]):
        gi, gh = x[t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        r = 1 / (1 + np.exp(-(gi[:, :hid] + gh[:, :hid])))
        z = 1 / (1 + np.exp(-(gi[:, hid : 2 * hid] + gh[:, hid : 2 * hid])))
        n = np.tanh(gi[:, 2 * hid :] + (r * h) @ w_hh[2 * hid :].T + b_hh[2 * hid :])
        h = (1 - z) * n + z * h
        hs.append(h)
    return np.stack(hs)


_LSTM_SHAPES = ((4, 1, 2), (1, 1, 2), (1, 1, 2), (8, 2), (8, 2), (8,), (8,))
_GRU_SHAPES = ((3, 1, 2), (1, 1, 2), (6, 2), (6, 2), (6,), (6,))
VARIANTS = {
    "lstm cell state": (
        "lstm",
        Example(_LSTM_SHAPES, {"hidden_size": 2, "output": "cell"}, consts=(3, 4, 5, 6)),
        None,
    ),
    "lstm onnx gate order": (
        "lstm",
        Example(_LSTM_SHAPES, {"hidden_size": 2, "gate_order": "iofg"}, consts=(3, 4, 5, 6)),
        _permuted(TRANSFER["lstm"].ref, "iofg", "ifgo", 3),
    ),
    "gru onnx gate order": (
        "gru",
        Example(_GRU_SHAPES, {"hidden_size": 2, "gate_order": "zrn"}, consts=(2, 3, 4, 5)),
        _permuted(TRANSFER["gru"].ref, "zrn", "rzn", 2),
    ),
    "gru reset before the product": (
        "gru",
        Example(_GRU_SHAPES, {"hidden_size": 2, "linear_before_reset": False}, consts=(2, 3, 4, 5)),
        _gru_reset_first,
    ),
    "relu rnn": (
        "rnn",
        Example(
            ((6, 1, 2), (1, 1, 2), (2, 2), (2, 2), (2,), (2,)),
            {"hidden_size": 2, "nonlinearity": "relu"},
            consts=(2, 3, 4, 5),
        ),
        None,
    ),
}


@pytest.mark.parametrize("fmt_name", sorted(DTYPES))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=DERANDOMIZE,
)
@given(data=st.data())
def test_variant_is_sound(variant, fmt_name, data):
    name, example, ref = VARIANTS[variant]
    check(name, fmt_name, data, example, ref)
