"""Recurrent layers (LSTM, GRU, plain RNN) as one op each, bounded over the whole sequence.

Inputs follow ``torch``'s flat signature: ``lstm(x, h0, c0, *params)``, ``gru(x, h0,
*params)``, ``rnn(x, h0, *params)``, with ``params`` per layer and direction ``w_ih (G*H,
in), w_hh (G*H, H), b_ih, b_hh`` (just the two weights when ``has_biases`` is false; a
missing input is 0). ``gate_order`` names the row blocks (torch ``ifgo`` / ``rzn``, ONNX
``iofg`` / ``zrn``). ``output`` picks the value: ``seq`` (every h_t, and h_n), ``cell``
(the LSTM's c_n) or ``state`` (either: the hull of both); ``gate_notes=False`` on a second
node of the same layer keeps its gate hazards from being reported twice.

The bounds are invariants of the recurrence, so the sequence length only matters where a
state can grow: gates are sigmoids in [0, 1] (exactly 0 or 1 once saturated in the dtype);
an LSTM's ``h = o * tanh(c)`` is in [-1, 1] and its cell ``c_t = f * c_{t-1} + i * g``
obeys ``|c_t| <= |c_0| + t`` (tighter when the forget gate stays below 1); a GRU's ``h_t``
is a convex combination of ``h_{t-1}`` and a tanh, so it stays in the hull of [-1, 1] and
``h_0``; a tanh RNN stays in [-1, 1]; a relu RNN is followed step by step, and its bound
can grow past the dtype's max. With a dynamic (unknown) sequence length the cell is bounded
by the forget gate's fixed point when the gate stays below 1, else the length is assumed
below ``ASSUMED_MAX_STEPS``. Each bound is refined a few times from the sound start (``h``
in [-1, 1]): gate ranges computed from a sound ``h`` bound give a sound, tighter one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nantrap.analyze.interval import Interval, coordinatewise_monotone, mul, round_out
from nantrap.analyze.transfer import Ctx, Example, apply, transfer
from nantrap.analyze.transfer.linear import _scale
from nantrap.analyze.transfer.reductions import slack
from nantrap.findings import Severity

INF = math.inf
UNIT = Interval(-1.0, 1.0)
ZERO = Interval.point(0.0)
_REFINE = 3  # narrowing passes from the sound start
_STEPS = 4096  # steps followed one by one; beyond, a closed-form bound
ASSUMED_MAX_STEPS = 2**31  # a dynamic sequence length is assumed shorter than this


@dataclass(frozen=True)
class _Weight:
    """One weight or bias: its known value, or just its interval (``--weights``)."""

    value: np.ndarray | None
    interval: Interval
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class _Block:
    w_ih: _Weight
    w_hh: _Weight
    b_ih: _Weight | None
    b_hh: _Weight | None


def _weight(ctx: Ctx, args: tuple, i: int) -> _Weight | None:
    if i >= len(args) or args[i] is None:
        return None
    return _Weight(ctx.const(i), args[i], ctx.shape(i))


def _blocks(ctx: Ctx, args: tuple, first: int) -> list[_Block]:
    per = 4 if ctx.attr("has_biases", True) else 2
    blocks = []
    for i in range(first, len(args), per):
        w_ih, w_hh = _weight(ctx, args, i), _weight(ctx, args, i + 1)
        if w_ih is None or w_hh is None:
            raise ValueError(f"recurrent op: weights missing at inputs {i}, {i + 1}")
        b_ih = _weight(ctx, args, i + 2) if per == 4 else None
        b_hh = _weight(ctx, args, i + 3) if per == 4 else None
        blocks.append(_Block(w_ih, w_hh, b_ih, b_hh))
    if not blocks:
        raise ValueError("recurrent op without weights")
    return blocks


def seq_len(ctx: Ctx) -> int | None:
    """Steps of the sequence, from the input's shape (None: dynamic, unknown)."""
    if ctx.attr("seq_dynamic", False):
        return None
    shape = ctx.shape(0)
    if not shape or len(shape) < 2:
        return None
    if len(shape) == 2:  # unbatched (T, in)
        return int(shape[0])
    return int(shape[1] if ctx.attr("batch_first", False) else shape[0])


class _Rows:
    """Per-row bounds of ``w @ v`` for a weight block, over an interval of v."""

    def __init__(self, ctx: Ctx, w: _Weight, rows: int) -> None:
        self.ctx, self.rows = ctx, rows
        self.w = w
        if w.value is not None:
            flat = w.value.reshape(w.value.shape[0], -1) if w.value.ndim > 1 else w.value[:, None]
            total = flat.sum(axis=1)
            size = np.abs(flat).sum(axis=1)
            err = size * 1e-13  # the float64 sums' error, as in linear._affine
            self.pos, self.neg = (size + total) / 2 + err, (total - size) / 2 - err
            self.k = flat.shape[1]
            self.norm = float(size.max()) if size.size else 0.0  # max row sum of |w|
        else:
            self.k = w.shape[-1] if w.shape else None
            self.pos = self.neg = None
            self.norm = (self.k or INF) * w.interval.magnitude  # k terms of at most |w|

    def bound(self, v: Interval, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(lo, hi) per row and the rounding slack of the k-term sums."""
        if self.pos is not None:
            out_lo, out_hi = _rows(v, self.pos, self.neg)
            total = self.norm * v.magnitude
            return out_lo, out_hi, slack(self.ctx, self.k, total)
        one = coordinatewise_monotone(v, self.w.interval, mul)
        lo, hi = mul(k, one.lo), mul(k, one.hi)
        total = k * one.magnitude
        return np.full(self.rows, lo), np.full(self.rows, hi), slack(self.ctx, k, total)


def _rows(v: Interval, pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):
        lo = _scale(pos, v.lo) + _scale(neg, v.hi)
        hi = _scale(pos, v.hi) + _scale(neg, v.lo)
    return np.nan_to_num(lo, nan=-INF), np.nan_to_num(hi, nan=INF)


def _bias(b: _Weight | None, rows: int) -> tuple[np.ndarray, np.ndarray]:
    if b is None:
        return np.zeros(rows), np.zeros(rows)
    if b.value is not None and b.value.size == rows:
        v = b.value.reshape(-1)
        return v, v
    return np.full(rows, b.interval.lo), np.full(rows, b.interval.hi)


class _Cell:
    """Gate pre-activations ``W x + U h + b`` of one layer and direction, per gate."""

    def __init__(self, ctx: Ctx, block: _Block, order: str, hidden: int, x: Interval) -> None:
        self.ctx, self.order, self.hidden = ctx, order, hidden
        rows = len(order) * hidden
        self.rows = rows
        self.u = _Rows(ctx, block.w_hh, rows)
        wx = _Rows(ctx, block.w_ih, rows)
        k_in = wx.k or _last(ctx) or 1 << 20
        xlo, xhi, xs = wx.bound(x, k_in)
        bi_lo, bi_hi = _bias(block.b_ih, rows)
        bh_lo, bh_hi = _bias(block.b_hh, rows)
        self.in_lo, self.in_hi = xlo + bi_lo, xhi + bi_hi  # input part, with its bias
        self.b_hh = (bh_lo, bh_hi)
        self.x_slack = xs

    def rows_of(self, gate: str) -> slice:
        p = self.order.index(gate)
        return slice(p * self.hidden, (p + 1) * self.hidden)

    def recurrent(self, h: Interval) -> tuple[np.ndarray, np.ndarray, float]:
        lo, hi, s = self.u.bound(h, self.u.k or self.hidden)
        return lo + self.b_hh[0], hi + self.b_hh[1], s

    def pre(self, gate: str, h: Interval) -> Interval:
        """``W x + b_i + U h + b_h`` over the gate's rows."""
        lo, hi, s = self.recurrent(h)
        sl = self.rows_of(gate)
        return _hull(self.in_lo[sl] + lo[sl], self.in_hi[sl] + hi[sl], self.x_slack + s)

    def pre_reset(self, h: Interval, r: Interval, before: bool) -> Interval:
        """The GRU candidate: ``W x + b_i + r * (U h + b_h)`` (or ``U (r * h) + b_h``)."""
        sl = self.rows_of("n")
        if not before:
            lo, hi, s = self.recurrent(coordinatewise_monotone(r, h, mul))
            return _hull(self.in_lo[sl] + lo[sl], self.in_hi[sl] + hi[sl], self.x_slack + s)
        lo, hi, s = self.recurrent(h)
        lo, hi = lo[sl], hi[sl]
        with np.errstate(invalid="ignore"):
            ends = [_scale(v, e) for v in (lo, hi) for e in (r.lo, r.hi)]
        corners = np.nan_to_num(np.stack(ends), nan=0.0)
        x_lo, x_hi = self.in_lo[sl], self.in_hi[sl]
        return _hull(x_lo + corners.min(axis=0), x_hi + corners.max(axis=0), self.x_slack + s)


def _last(ctx: Ctx) -> int | None:
    shape = ctx.shape(0)
    return shape[-1] if shape else None


def _hull(lo: np.ndarray, hi: np.ndarray, d: float) -> Interval:
    lo = np.nan_to_num(lo, nan=-INF)
    hi = np.nan_to_num(hi, nan=INF)
    return Interval(float(lo.min()) - d, float(hi.max()) + d)


# --- shared steps ----------------------------------------------------------------------------


def _act(ctx: Ctx, name: str, x: Interval) -> Interval:
    """The activation's float-rounded range (saturation to exactly 0/1 shows)."""
    return apply(name, Ctx(ctx.fmt), x)


def _times(ctx: Ctx, a: Interval, b: Interval) -> Interval:
    return round_out(coordinatewise_monotone(a, b, mul), ctx.fmt)


def _plus(ctx: Ctx, a: Interval, b: Interval) -> Interval:
    return round_out(Interval(a.lo + b.lo, a.hi + b.hi), ctx.fmt)


def _hidden(ctx: Ctx, blocks: list[_Block]) -> int:
    h = ctx.attr("hidden_size")
    if h:
        return int(h)
    shape = ctx.shape(1)
    if shape:
        return int(shape[-1])
    w = blocks[0].w_hh.value
    if w is not None and w.ndim == 2:
        return int(w.shape[1])
    raise ValueError("recurrent op: hidden size unknown")


def _layers(ctx: Ctx, args: tuple, first: int):
    """Yield (layer, [blocks per direction]) in order."""
    blocks = _blocks(ctx, args, first)
    dirs = 2 if ctx.attr("bidirectional", False) else 1
    layers = int(ctx.attr("num_layers", 1))
    if len(blocks) != dirs * layers:
        raise ValueError(f"recurrent op: {len(blocks)} weight blocks for {layers}x{dirs}")
    hidden = _hidden(ctx, blocks)
    return [blocks[i * dirs : (i + 1) * dirs] for i in range(layers)], hidden


def _next_input(ctx: Ctx, out: Interval) -> Interval:
    """A stacked layer's input: the previous layer's output, after inter-layer dropout."""
    p = float(ctx.attr("dropout", 0.0) or 0.0)
    if ctx.attr("train", False) and p > 0:
        return Interval(min(0.0, out.lo / (1 - p)), max(0.0, out.hi / (1 - p)))
    return out


def _padded(ctx: Ctx, out: Interval) -> Interval:
    """ONNX ``sequence_lens``: the steps past a sequence's end are written as 0."""
    return out | ZERO if ctx.attr("padded", False) else out


def _state(arg: Interval | None) -> Interval:
    return ZERO if arg is None else arg


def _overflowed(ctx: Ctx, name: str, gates: dict[str, Interval], x: Interval) -> bool:
    bad = {g: v for g, v in gates.items() if not round_out(v, ctx.fmt).is_finite}
    if not bad or ctx.fmt is None or not x.is_finite:
        return False
    fmt = ctx.fmt
    ctx.flag(
        "NT201" if fmt.bits == 16 else "NT116",
        f"{name} gate pre-activations W x + U h + b can exceed the {fmt.name} maximum "
        f"{fmt.max:.5g} ({', '.join(f'{g} {v.describe()}' for g, v in bad.items())}): "
        "an inf - inf in the sum makes the gates NaN",
        dtype_max=fmt.max,
        gates={g: v.to_list() for g, v in bad.items()},
    )
    return True


_GATE_NAMES = {
    "i": "input gate",
    "f": "forget gate",
    "o": "output gate",
    "g": "cell candidate",
    "r": "reset gate",
    "z": "update gate",
    "n": "candidate",
    "h": "hidden",
}


def _merge(seen: tuple[dict, dict], pres: dict, outs: dict) -> None:
    """Hull the gate ranges of one more layer into ``seen`` (one note per op, not per layer)."""
    for into, new in zip(seen, (pres, outs), strict=True):
        for g, v in new.items():
            into[g] = v if g not in into else into[g] | v


def _saturation(ctx: Ctx, name: str, pres: dict, outs: dict, layers: int = 1):
    """NT203 (info), as for sigmoid/tanh: a gate rounds to exactly 0/1 (or ±1) in the dtype."""
    if ctx.fmt is None or not pres:
        return
    hit = {}
    for g, y in outs.items():
        ends = [v for v in (-1.0, 0.0, 1.0) if v in (y.lo, y.hi) and _end(g, v)]
        if ends and pres[g].is_finite:
            hit[g] = ends
    if not hit:
        return
    fmt = ctx.fmt
    parts = [
        f"{_GATE_NAMES.get(g, g)} ({g}) pre-activation {pres[g].describe()} -> exactly "
        f"{' and '.join(f'{v:g}' for v in ends)}"
        for g, ends in hit.items()
    ]
    forget = " (a forget gate of exactly 1 keeps all of c: |c_t| grows by up to 1 per step)"
    where = f" (over its {layers} layers)" if layers > 1 else ""
    ctx.flag(
        "NT203",
        f"{name} gates saturate{where} in {fmt.name} (sigmoid rounds to 1 above "
        f"{fmt.sigmoid_one:.4g}, to 0 below {fmt.sigmoid_zero:.4g}): {'; '.join(parts)}; "
        f"their gradient vanishes there{forget if 'f' in hit and 1.0 in hit['f'] else ''}",
        nonfinite=False,
        severity=Severity.INFO,
        fix="normalize the recurrent layer's input (LayerNorm) or lower the weight scale so "
        "the gate pre-activations stay inside the sigmoid's live range",
        gates={g: pres[g].to_list() for g in hit},
        sigmoid_one=fmt.sigmoid_one,
    )


def _end(gate: str, v: float) -> bool:
    # tanh-valued (g, n, h) saturate at ±1; sigmoid gates at 0 or 1
    return v != 0.0 if gate in ("g", "n", "h") else v in (0.0, 1.0)


# --- LSTM ------------------------------------------------------------------------------------


def _cell_bound(ctx: Ctx, c0: Interval, f: Interval, ig: Interval, steps: int | None) -> Interval:
    """Hull of c_1..c_T for ``c_t = f * c_{t-1} + i * g`` (magnitudes: |c_t| <= |c_0| + t)."""
    if steps is None:
        if f.hi < 1:  # |c| <= f |c| + |i g| has a fixed point: a bound for every length
            m = max(c0.magnitude, ig.magnitude / (1 - f.hi))
            return round_out(Interval(-m, m), ctx.fmt)
        m = c0.magnitude + ASSUMED_MAX_STEPS * ig.magnitude
        out = round_out(Interval(-m, m), ctx.fmt)
        fmt = ctx.fmt
        if fmt is None or out.is_finite or not ctx.attr("gate_notes", True):
            return out
        msg = (
            f"LSTM cell state: the forget gate can be exactly 1 in {fmt.name}, so |c_t| <= "
            f"|c_0| + t * {ig.magnitude:.4g} grows with the sequence, whose length is "
            f"unknown (dynamic); it passes the {fmt.name} max {fmt.max:.5g} after "
            f"{(fmt.max - c0.magnitude) / max(ig.magnitude, 1e-300):.4g} steps"
        )
        if all(h.message != msg for h in ctx.hazards):  # once, not per refining pass
            ctx.flag(
                "NT201" if fmt.bits == 16 else "NT116",
                msg,
                severity=Severity.WARNING,
                growth_per_step=ig.magnitude,
                fix="keep the forget gate's pre-activation below the sigmoid's saturation "
                "(normalize the input, smaller forget bias), or run the LSTM in float32",
            )
        return out
    c, out = c0, None
    for _ in range(min(steps, _STEPS)):
        nxt = _plus(ctx, _times(ctx, f, c), ig)
        out = nxt if out is None else out | nxt
        if nxt == c:
            return out
        c = nxt
    if steps > _STEPS and out is not None:  # the rest grows at most ig per step
        extra = (steps - _STEPS) * ig.magnitude
        out = round_out(Interval(out.lo - extra, out.hi + extra), ctx.fmt)
    return out if out is not None else c0


def _lstm_layer(ctx, cells, h0, c0, steps):
    """(h bound, c bound, gate pre-activations, gate values) of one layer (all directions)."""
    h_rec, h_out, c_out = UNIT, UNIT, None
    pres, outs = {}, {}
    for _ in range(_REFINE):
        h_in = h0 | h_rec
        h_new, c_new = None, None
        for cell in cells:
            p = {g: cell.pre(g, h_in) for g in "ifgo"}
            a = {g: _act(ctx, "tanh" if g == "g" else "sigmoid", v) for g, v in p.items()}
            c = _cell_bound(ctx, c0, a["f"], _times(ctx, a["i"], a["g"]), steps)
            h = _times(ctx, a["o"], _act(ctx, "tanh", c)) & UNIT or UNIT
            h_new = h if h_new is None else h_new | h
            c_new = c if c_new is None else c_new | c
            for g in "ifgo":
                pres[g] = p[g] if g not in pres or cell is cells[0] else pres[g] | p[g]
                outs[g] = a[g] if g not in outs or cell is cells[0] else outs[g] | a[g]
        h_out, c_out = h_new, c_new
        narrower = h_rec & h_new
        if narrower is None or narrower == h_rec:
            break
        h_rec = narrower
    return h_out, c_out, pres, outs


def _lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, output="seq"):
    """One layer, time-major x (T, B, in); returns every h_t, or the final c."""
    h, c = h0[0], c0[0]
    hs = []
    hid = w_hh.shape[1]
    for t in range(x.shape[0]):
        z = x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g, o = (z[:, k * hid : (k + 1) * hid] for k in range(4))
        sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        hs.append(h)
    return c if output == "cell" else np.stack(hs)


LSTM_EXAMPLE = Example(
    shapes=((3, 1, 2), (1, 1, 2), (1, 1, 2), (8, 2), (8, 2), (8,), (8,)),
    attrs={"hidden_size": 2, "gate_order": "ifgo"},
    consts=(3, 4, 5, 6),
)


# every step is rounded out to the dtype inside: nothing to add at the end (h stays in [-1, 1])
@transfer("lstm", ref=_lstm_ref, ulps=0, example=LSTM_EXAMPLE)
def lstm(ctx: Ctx, x: Interval, h0: Interval | None, c0: Interval | None, *params) -> Interval:
    args = (x, h0, c0, *params)
    layers, hidden = _layers(ctx, args, 3)
    order = ctx.attr("gate_order", "ifgo")
    steps = seq_len(ctx)
    h0, c0 = _state(h0), _state(c0)
    inp, h_all, c_all = x, None, None
    notes = ctx.attr("gate_notes", True)  # a second node of the same layer: say it once
    seen: tuple[dict, dict] = ({}, {})
    for layer in layers:
        cells = [_Cell(ctx, b, order, hidden, inp) for b in layer]
        h, c, pres, outs = _lstm_layer(ctx, cells, h0, c0, steps)
        finite = all(round_out(v, ctx.fmt).is_finite for v in pres.values())
        if not finite and (not notes or _overflowed(ctx, "LSTM", pres, inp)):
            return UNIT if ctx.attr("output", "seq") == "seq" else Interval.unknown()
        _merge(seen, pres, outs)
        h_all = h if h_all is None else h_all | h
        c_all = c if c_all is None else c_all | c
        inp = _next_input(ctx, h)
    if notes:
        _saturation(ctx, "LSTM", *seen, len(layers))
    which = ctx.attr("output", "seq")
    out = c_all if which == "cell" else (h_all | c_all if which == "state" else h_all)
    return _padded(ctx, out)


# --- GRU -------------------------------------------------------------------------------------


def _gru_ref(x, h0, w_ih, w_hh, b_ih, b_hh):
    h = h0[0]
    hs = []
    hid = w_hh.shape[1]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    for t in range(x.shape[0]):
        gi = x[t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        r = sig(gi[:, :hid] + gh[:, :hid])
        z = sig(gi[:, hid : 2 * hid] + gh[:, hid : 2 * hid])
        n = np.tanh(gi[:, 2 * hid :] + r * gh[:, 2 * hid :])
        h = (1 - z) * n + z * h
        hs.append(h)
    return np.stack(hs)


@transfer(
    "gru",
    ref=_gru_ref,
    ulps=4,
    example=Example(
        shapes=((3, 1, 2), (1, 1, 2), (6, 2), (6, 2), (6,), (6,)),
        attrs={"hidden_size": 2, "gate_order": "rzn"},
        consts=(2, 3, 4, 5),
    ),
)
def gru(ctx: Ctx, x: Interval, h0: Interval | None, *params) -> Interval:
    """h_t = (1 - z) n + z h_{t-1}: in the hull of h_0 and the candidate's tanh range."""
    layers, hidden = _layers(ctx, (x, h0, *params), 2)
    order = ctx.attr("gate_order", "rzn")
    before = bool(ctx.attr("linear_before_reset", True))
    h0 = _state(h0)
    inp, h_all = x, None
    seen: tuple[dict, dict] = ({}, {})
    for layer in layers:
        cells = [_Cell(ctx, b, order, hidden, inp) for b in layer]
        h_rec = h0 | UNIT
        pres, outs, h_out = {}, {}, h_rec
        for _ in range(_REFINE):
            h_in = h0 | h_rec
            h_new = None
            for cell in cells:
                p = {g: cell.pre(g, h_in) for g in "rz"}
                a = {g: _act(ctx, "sigmoid", v) for g, v in p.items()}
                p["n"] = cell.pre_reset(h_in, a["r"], before)
                a["n"] = _act(ctx, "tanh", p["n"])
                h_new = h0 | a["n"] if h_new is None else h_new | a["n"]
                for g in "rzn":
                    pres[g] = p[g] if g not in pres or cell is cells[0] else pres[g] | p[g]
                    outs[g] = a[g] if g not in outs or cell is cells[0] else outs[g] | a[g]
            h_out = h_new
            narrower = h_rec & h_new
            if narrower is None or narrower == h_rec:
                break
            h_rec = narrower
        if _overflowed(ctx, "GRU", pres, inp):
            return h0 | UNIT
        _merge(seen, pres, outs)
        h_all = h_out if h_all is None else h_all | h_out
        inp = _next_input(ctx, h_out)
    _saturation(ctx, "GRU", *seen, len(layers))
    return _padded(ctx, h_all)


# --- plain RNN -------------------------------------------------------------------------------


def _rnn_ref(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    h = h0[0]
    hs = []
    act = np.tanh if nonlinearity == "tanh" else (lambda v: np.maximum(v, 0.0))
    for t in range(x.shape[0]):
        h = act(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        hs.append(h)
    return np.stack(hs)


RNN_EXAMPLE = Example(
    shapes=((3, 1, 2), (1, 1, 2), (2, 2), (2, 2), (2,), (2,)),
    attrs={"hidden_size": 2, "nonlinearity": "tanh"},
    consts=(2, 3, 4, 5),
)


def _relu_layer(ctx: Ctx, cell: _Cell, h0: Interval, steps: int | None) -> Interval:
    """Follow h_t = relu(W x + U h_{t-1} + b) step by step; flag the step it overflows."""
    fmt = ctx.fmt
    rho = cell.u.norm  # max row sum of |U|: the bound grows by up to this factor per step
    h, out = h0, None
    limit = steps if steps is not None else _STEPS
    for t in range(1, min(limit, _STEPS) + 1):
        nxt = round_out(_act(ctx, "relu", cell.pre("h", h)), fmt)
        out = nxt if out is None else out | nxt
        if not nxt.is_finite:
            if h.is_finite and fmt is not None:
                ctx.flag(
                    "NT201" if fmt.bits == 16 else "NT116",
                    f"relu RNN hidden state can grow without bound: |h_t| grows by up to "
                    f"x{rho:.4g} per step (max row sum of |W_hh|), its bound is "
                    f"{h.hi:.4g} after {t - 1} steps and passes the {fmt.name} max "
                    f"{fmt.max:.5g} at step {t}"
                    + (f" of {steps}" if steps is not None else " (sequence length unknown)"),
                    growth_per_step=rho,
                    overflow_step=t,
                    seq_len=steps,
                    bound_before=h.hi,
                    fix="use the tanh RNN (or an LSTM/GRU), or keep the recurrent weights "
                    "small (orthogonal init scaled < 1, weight norm, gradient clipping)",
                )
            return Interval(0.0, INF)  # later steps can fall back anywhere >= 0
        if nxt == h:
            return out
        h = nxt
    if steps is None or steps > _STEPS:  # not settled: bound the rest, or give up
        if rho < 1:  # |h_t| <= max(W x + b) + rho * |h_{t-1}|: a fixed point
            first = cell.pre("h", ZERO)
            m = max(h0.magnitude, out.hi, max(first.hi, 0.0) / (1 - rho))
            return round_out(Interval(0.0, m), fmt) | out
        return Interval(0.0, INF)
    return out


@transfer("rnn", ref=_rnn_ref, ulps=0, example=RNN_EXAMPLE)  # rounded inside, as lstm
def rnn(ctx: Ctx, x: Interval, h0: Interval | None, *params) -> Interval:
    layers, hidden = _layers(ctx, (x, h0, *params), 2)
    relu = str(ctx.attr("nonlinearity", "tanh")).lower() == "relu"
    h0 = _state(h0)
    inp, h_all = x, None
    seen: tuple[dict, dict] = ({}, {})
    for layer in layers:
        cells = [_Cell(ctx, b, "h", hidden, inp) for b in layer]
        h_out = None
        for cell in cells:
            if relu:
                h = _relu_layer(ctx, cell, h0, seq_len(ctx))
            else:
                h, pre = _tanh_layer(ctx, cell, h0, inp)
                _merge(seen, {"h": pre}, {"h": _act(ctx, "tanh", pre)})
            h_out = h if h_out is None else h_out | h
        h_all = h_out if h_all is None else h_all | h_out
        if not h_out.is_finite:
            return h_all
        inp = _next_input(ctx, h_out)
    _saturation(ctx, "RNN", *seen, len(layers))
    return _padded(ctx, h_all)


def _tanh_layer(ctx: Ctx, cell: _Cell, h0: Interval, x: Interval) -> tuple[Interval, Interval]:
    h_rec, pre = UNIT, None
    for _ in range(_REFINE):
        pre = cell.pre("h", h0 | h_rec)
        h_new = _act(ctx, "tanh", pre)
        narrower = h_rec & h_new
        if narrower is None or narrower == h_rec:
            break
        h_rec = narrower
    if _overflowed(ctx, "RNN", {"h": pre}, x):
        return h_rec, Interval.unknown()  # no saturation note on top of the overflow
    return h_rec, pre
