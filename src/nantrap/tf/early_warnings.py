"""Early warnings from a traced TensorFlow step, before any NaN: saturated activations
(sigmoid / softmax / tanh outputs at exactly 0 or 1 in their dtype) and the clip trap (a
``clip_by_value`` on the path to the loss whose clipped elements get zero gradient).

Both read an :class:`OpTrace` of one sampled step; the Keras guard samples rarely enough to
keep the cost inside its budget."""

from __future__ import annotations

from typing import Any

import numpy as np

from nantrap.findings import Diagnosis, Location, Phase, Severity
from nantrap.tf.trace import OpEvent, OpTrace

__all__ = ["early_warnings", "layer_ranges"]

# TF op type -> (catalog code, saturated values)
# ops that clip: tf.clip_by_value is Minimum then Maximum in TF 2 (ClipByValue for ints)
CLIPS = ("ClipByValue", "Maximum", "Minimum")
SATURATING = {
    "Sigmoid": ("NT203", (0.0, 1.0)),
    "Tanh": ("NT203", (-1.0, 1.0)),
    "Softmax": ("NT204", (0.0, 1.0)),
}


def early_warnings(
    trace: OpTrace,
    *,
    step: int,
    saturation: float = 0.01,
    clipped: float = 0.05,
    loss: Any = None,
) -> list[Diagnosis]:
    """Saturation (share of outputs exactly at the bounds >= ``saturation``) and clip-trap
    (share of a clip's input cut off >= ``clipped``, on the path to the loss: a gradient
    flowed back through it, or it feeds ``loss``) warnings of one traced step."""
    on_path = trace.ancestors(loss) if loss is not None else set()
    found = []
    for ev in trace.events:
        if ev.phase is not Phase.FORWARD or not ev.outputs:
            continue
        if ev.op in SATURATING:
            d = _saturation(ev, step, saturation)
        elif ev.op in CLIPS and (ev.grad_seen or ev.index in on_path):
            d = _clip_trap(trace, ev, step, clipped)
        else:
            d = None
        if d is not None:
            found.append(d)
    return found


def layer_ranges(trace: OpTrace) -> dict[str, dict[str, float]]:
    """Per layer (forward): min and max of its last output, and the saturated share of its
    activations; what ``events.jsonl`` step records carry as ``ranges``."""
    out: dict[str, dict[str, float]] = {}
    for ev in trace.events:
        if ev.phase is not Phase.FORWARD or not ev.outputs or ev.layer_index is None:
            continue
        arr = np.asarray(ev.outputs[0], dtype=np.float64)
        if arr.size == 0:
            continue
        finite = arr[np.isfinite(arr)]
        entry = out.setdefault(ev.module, {"saturated": 0.0})
        entry["min"] = float(finite.min()) if finite.size else float("nan")
        entry["max"] = float(finite.max()) if finite.size else float("nan")
        if ev.op in SATURATING:
            entry["saturated"] = max(entry["saturated"], _at_bounds(ev)[0])
    return out


def _at_bounds(ev: OpEvent) -> tuple[float, int, int]:
    lo, hi = SATURATING[ev.op][1]
    arr = np.asarray(ev.outputs[0])
    n_lo, n_hi = int((arr == lo).sum()), int((arr == hi).sum())
    return (n_lo + n_hi) / max(arr.size, 1), n_lo, n_hi


def _saturation(ev: OpEvent, step: int, threshold: float) -> Diagnosis | None:
    share, n_lo, n_hi = _at_bounds(ev)
    if share < threshold or share == 0:
        return None
    code, (lo, hi) = SATURATING[ev.op]
    numel = int(np.size(ev.outputs[0]))
    name = ev.op.lower()
    where = _where(name, ev)
    x = ev.input_stats(0)
    counts = " and ".join(f"exactly {bound:g} in {n}" for bound, n in ((lo, n_lo), (hi, n_hi)) if n)
    message = (
        f"{where} outputs {counts} of {numel} elements ({share:.1%}): no gradient flows "
        f"through them, and log of them is -inf (its inputs reach [{x.min:.4g}, {x.max:.4g}])"
    )
    fix = (
        "keep the logits and use a loss that takes logits (from_logits=True, "
        "log_softmax / log_sigmoid); normalize or scale the pre-activations"
    )
    return _warning(
        code,
        message,
        ev,
        step,
        {
            "saturated_share": share,
            "at_low": n_lo,
            "at_high": n_hi,
            "numel": numel,
            "input": x.to_dict(),
        },
        fix,
    )


def _clip_bounds(ev: OpEvent) -> tuple[Any, Any, Any] | None:
    """(x, lo, hi) of a clip: ``ClipByValue(x, lo, hi)``, or ``Maximum``/``Minimum`` of a
    tensor and a constant (one side; ``None`` for the other)."""
    if ev.op == "ClipByValue":
        return (ev.inputs[0], ev.inputs[1], ev.inputs[2]) if len(ev.inputs) == 3 else None
    if len(ev.inputs) != 2:
        return None
    consts = [i for i in (0, 1) if ev.producers[i] is None and ev.leaves[i] == "tensor"]
    if len(consts) != 1:
        return None
    x, bound = ev.inputs[1 - consts[0]], ev.inputs[consts[0]]
    return (x, bound, None) if ev.op == "Maximum" else (x, None, bound)


def _clip_trap(trace: OpTrace, ev: OpEvent, step: int, threshold: float) -> Diagnosis | None:
    parts = _clip_bounds(ev)
    if parts is None:
        return None
    consumers = [e for e in trace.events if ev.index in e.producers and e.phase is Phase.FORWARD]
    if ev.op in ("Maximum", "Minimum") and any(
        e.op in ("Maximum", "Minimum") and _clip_bounds(e) is not None for e in consumers
    ):
        return None  # the first half of a two-sided clip: reported at its second half
    x, lo, hi = parts
    inner = trace.producer(x)
    if ev.op in ("Maximum", "Minimum") and inner is not None and inner.op in ("Maximum", "Minimum"):
        inner_parts = _clip_bounds(inner)
        if inner_parts is not None:  # Maximum(Minimum(x, hi), lo): clip_by_value
            x = inner_parts[0]
            lo = lo if lo is not None else inner_parts[1]
            hi = hi if hi is not None else inner_parts[2]
    x = np.asarray(x)
    below = int((x < np.asarray(lo)).sum()) if lo is not None else 0
    above = int((x > np.asarray(hi)).sum()) if hi is not None else 0
    share = (below + above) / max(x.size, 1)
    if share < threshold or share == 0:
        return None
    into_log = any(e.op in ("Log", "Log1p") for e in consumers)
    code = "NT102" if into_log else "NT303"
    lo_text = f"{float(np.min(lo)):.3g}" if lo is not None else "-inf"
    hi_text = f"{float(np.max(hi)):.3g}" if hi is not None else "inf"
    message = (
        f"{_where('clip_by_value', ev)} clips {share:.1%} of its input to [{lo_text}, "
        f"{hi_text}] ({below} below, {above} above, of {x.size}): those elements get zero "
        f"gradient, so the loss there is not being optimized (a fake loss)"
    )
    fix = (
        "remove the clip and compute the loss from logits (from_logits=True / "
        "log_softmax / log_sigmoid) instead of log(clip(p, eps, 1))"
        if into_log
        else "remove the clip from the loss path, or clip gradients (clipnorm) instead"
    )
    return _warning(
        code,
        message,
        ev,
        step,
        {
            "clipped_share": share,
            "below": below,
            "above": above,
            "numel": int(x.size),
            "into_log": into_log,
            "clip_ops": ev.op if inner is None else f"{inner.op}+{ev.op}",
        },
        fix,
        neutral="clip",
    )


def _warning(
    code: str,
    message: str,
    ev: OpEvent,
    step: int,
    evidence: dict[str, Any],
    fix: str,
    neutral: str | None = None,
) -> Diagnosis:
    if ev.layer_index:
        evidence["layer"] = ev.layer_index
    return Diagnosis(
        code=code,
        message=message,
        location=Location(
            path=ev.path,
            line=ev.line,
            source_line=ev.source_line,
            module=ev.module,
            op=ev.op,
            neutral_op=neutral or ev.neutral_op,
            phase=Phase.FORWARD,
            step=step,
        ),
        severity=Severity.WARNING,
        evidence=evidence,
        fix=fix,
        incident=False,
    )


def _where(name: str, ev: OpEvent) -> str:
    text = name + (f" in {ev.module}" if ev.module else "")
    if ev.path:
        import os

        text += f" ({os.path.basename(ev.path)}:{ev.line})"
    return text
