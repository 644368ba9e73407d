"""Divergence (NT301) and loss spikes (NT302), judged from a run's history.

The learning-rate estimate: on a quadratic bowl with curvature ``h``, gradient descent
multiplies the error by ``|1 - lr*h|`` each step, so a gradient norm growing by a factor
``1 + rho`` per step means ``lr*h = 2 + rho`` (the iteration is unstable once
``lr*h > 2``); ``lr / (2 + rho)`` puts ``lr*h`` at 1, the fastest stable step. Without a
growing gradient, ``lr * 1e-2 / ratio`` brings the update-to-weight ratio down to the top of
its healthy range (1e-3..1e-2). Either is capped at ``lr * lr_decay``. A gradient norm
growing more than ``1 + LINEAR_REGIME`` times per step (one step blowing up by 1e4, say) is
no longer a quadratic bowl, and ``2 + rho`` would overstate the excess by orders of
magnitude: the suggestion is then a plain tenth of the LR. Under gradient clipping
(``clip_grad_norm_``: the measured norm sits flat at the clip value) the gradient's growth
says nothing about the LR; the update ratio then sets the suggestion, or, unsampled, a
tenth of the LR.
"""

from __future__ import annotations

import itertools
import math
import statistics
from typing import Any

from nantrap.findings import Diagnosis, Location, Phase, Severity
from nantrap.guard.history import History, Spike

LINEAR_REGIME = 8.0  # rho above which the quadratic-bowl estimate is not trusted

__all__ = [
    "HEALTHY_RATIO",
    "RUNAWAY_STEPS",
    "diagnose_divergence",
    "diagnose_spike",
    "divergence_evidence",
]

HEALTHY_RATIO = 1e-3  # a typical update changes a weight by ~0.1% of its size
RATIO_TOO_HIGH = 0.2  # above this the step overshoots (small nets run at ~1e-2..1e-1)
GRAD_GROWTH = 10.0  # gradient norm growth over the window that counts as divergence
WEIGHT_GROWTH = 3.0  # geometric weight-norm growth that counts as divergence
# a loss or weight norm that rose on each of RUNAWAY_STEPS steps in a row by RUNAWAY_GROWTH
# in total is diverging on its own evidence (gradient clipping pins the grad norm, and the
# update ratio is sampled): normal training does not grow either 100x without a dip
RUNAWAY_STEPS = 8
RUNAWAY_GROWTH = 100.0
# a clipped gradient: at least CLIPPED_STEPS of the recent norms (and half of them) equal
# the largest to CLIPPED_RTOL; an unclipped norm never repeats to 4 digits
CLIPPED_STEPS = 3
CLIPPED_RTOL = 1e-3


def _growth(points: list[tuple[int, float]]) -> tuple[float, int, float, float] | None:
    """(factor, steps, from, to) from the smallest value to the newest one after it."""
    if len(points) < 2:
        return None
    last_step, last = points[-1]
    low_step, low = min(points[:-1], key=lambda p: p[1])
    if low <= 0 or last_step <= low_step:
        return None
    return last / low, last_step - low_step, low, last


def _monotone_share(points: list[tuple[int, float]]) -> float:
    """Share of consecutive steps on which the series grew."""
    if len(points) < 2:
        return 0.0
    ups = sum(1 for (_, a), (_, b) in itertools.pairwise(points) if b > a)
    return ups / (len(points) - 1)


def _clipped_at(norms: list[float]) -> float | None:
    """The clip value when the gradient norms are pinned at a ceiling, else None."""
    if not norms:
        return None
    top = max(norms)
    pinned = sum(1 for g in norms if g >= top * (1.0 - CLIPPED_RTOL))
    if top > 0 and pinned >= CLIPPED_STEPS and 2 * pinned >= len(norms):
        return top
    return None


def divergence_evidence(history: History, lr: float | None) -> dict[str, Any]:
    """The numbers a divergence verdict quotes; empty keys are left out."""
    ev: dict[str, Any] = {}
    if lr is not None and math.isfinite(lr):
        ev["lr"] = lr
    ratios = history.finite("update_ratio")
    if ratios:
        ev["update_ratio"] = ratios[-1][1]
        ev["update_ratio_max"] = max(r for _, r in ratios)
        ev["update_ratio_median"] = statistics.median(r for _, r in ratios)
        ev["update_ratio_healthy"] = HEALTHY_RATIO
    grads = history.finite("grad_norm")
    clipped = _clipped_at([g for _, g in grads[-history.window :]])
    if clipped is not None:
        ev["grad_norm_clipped_at"] = clipped
    growth = _growth(grads[-history.window :])
    if growth is not None:
        ev["grad_norm_growth"], ev["grad_norm_growth_steps"] = growth[0], growth[1]
        ev["grad_norm_from"], ev["grad_norm_to"] = growth[2], growth[3]
    weights = history.finite("param_norm")
    if len(weights) >= 2:
        ev["weight_norm_from"], ev["weight_norm_to"] = weights[0][1], weights[-1][1]
        ev["weight_norm_growth"] = weights[-1][1] / weights[0][1] if weights[0][1] > 0 else math.inf
        ev["weight_norm_growth_steps"] = weights[-1][0] - weights[0][0]
        ev["weight_norm_rising_share"] = _monotone_share(weights)
    losses = history.finite("loss")
    if len(losses) >= 2:
        low = min(v for _, v in losses)
        ev["loss_min"], ev["loss_last"] = low, losses[-1][1]
    for key, name in (("param_norm", "weight_norm"), ("loss", "loss")):
        steps, factor = history.rising(key)
        if steps:
            ev[f"{name}_rising_steps"], ev[f"{name}_rising_growth"] = steps, factor
    return ev


def _diverging(ev: dict[str, Any]) -> list[str]:
    """The signals in ``ev`` that say the optimizer is diverging."""
    signals = []
    if ev.get("update_ratio_max", 0.0) > RATIO_TOO_HIGH:
        signals.append("update_ratio")
    loss_rising = ev.get("loss_last", 0.0) > 1.5 * max(ev.get("loss_min", math.inf), 1e-12)
    if ev.get("grad_norm_growth", 0.0) >= GRAD_GROWTH and (loss_rising or "loss_last" not in ev):
        signals.append("grad_norm")
    if (
        ev.get("weight_norm_growth", 0.0) >= WEIGHT_GROWTH
        and ev.get("weight_norm_rising_share", 0.0) >= 0.8
        and ev.get("weight_norm_growth_steps", 0) >= 3
    ):
        signals.append("weight_norm")
    for name in ("weight_norm", "loss"):
        if (
            ev.get(f"{name}_rising_steps", 0) >= RUNAWAY_STEPS
            and ev.get(f"{name}_rising_growth", 0.0) >= RUNAWAY_GROWTH
        ):
            signals.append(f"{name}_runaway")
    return signals


def _suggest_lr(ev: dict[str, Any], lr: float, lr_decay: float) -> tuple[float, str]:
    """A lower LR and how it was derived: at most ``lr * lr_decay``, at least
    ``lr * 1e-4`` (``1e-6`` from a measured update ratio: an update 1000x the weights is
    an LR typo, and the ratio says by how much)."""
    value, how = lr * lr_decay, f"lr_decay {lr_decay}"
    growth, steps = ev.get("grad_norm_growth", 0.0), ev.get("grad_norm_growth_steps", 0)
    ratio = ev.get("update_ratio_median", 0.0)
    floor = 1e-4
    if "grad_norm_clipped_at" in ev:  # NB: a flat clipped norm bounds nothing
        clip = ev["grad_norm_clipped_at"]
        if ratio > 0:
            value, floor = lr * 10 * HEALTHY_RATIO / ratio, 1e-6
            how = f"grad norm flat at {clip:.3g} (clipped): update ratio {ratio:.2g} -> 1e-2"
        else:
            value = lr / 10.0
            how = f"grad norm flat at {clip:.3g} (clipped), update ratio unsampled"
    elif growth > 1.0 and steps > 0:
        rho = growth ** (1.0 / steps) - 1.0
        if rho <= LINEAR_REGIME:
            value, how = lr / (2.0 + rho), f"grad norm x{1 + rho:.3g} per step: lr*curvature ~1"
        else:  # NB: an explosion this fast is past the quadratic model; it bounds nothing
            value, how = lr / 10.0, f"grad norm x{1 + rho:.3g} per step, past the linear regime"
    elif ratio > 0:
        value, floor = lr * 10 * HEALTHY_RATIO / ratio, 1e-6
        how = f"update ratio {ratio:.2g} -> 1e-2"
    return max(min(value, lr * lr_decay), lr * floor), how


def diagnose_divergence(
    history: History,
    *,
    step: int,
    lr: float | None,
    lr_decay: float = 0.5,
    phase: Phase = Phase.UPDATE,
    trigger: str = "non-finite values",
    force: bool = False,
) -> Diagnosis | None:
    """NT301 if the history shows the optimizer diverging (or ``force``), with its numbers.

    ``trigger`` says what was detected (``"non-finite parameters after the update"``).
    """
    ev = divergence_evidence(history, lr)
    signals = _diverging(ev)
    if not signals and not force:
        return None
    ev["signals"] = signals
    parts = [f"{trigger} at step {step}"]
    if "update_ratio" in ev:
        parts.append(
            f"update/weight ratio {ev['update_ratio_max']:.3g} at most "
            f"(median {ev['update_ratio_median']:.3g}; healthy ~{HEALTHY_RATIO:g})"
        )
    if "grad_norm_clipped_at" in ev:
        parts.append(f"grad norm flat at {ev['grad_norm_clipped_at']:.3g} (as under clipping)")
    elif ev.get("grad_norm_growth", 1.0) > 1.5:
        parts.append(
            f"grad norm grew {ev['grad_norm_growth']:.3g}x over {ev['grad_norm_growth_steps']} "
            f"steps ({ev['grad_norm_from']:.3g} -> {ev['grad_norm_to']:.3g})"
        )
    if ev.get("weight_norm_growth", 1.0) > 1.05:
        parts.append(
            f"weight norm grew {ev['weight_norm_growth']:.3g}x over "
            f"{ev['weight_norm_growth_steps']} steps"
        )
    for name, what in (("weight_norm", "weight norm"), ("loss", "loss")):
        if f"{name}_runaway" in signals:
            parts.append(
                f"{what} rose on each of the last {ev[f'{name}_rising_steps']} steps, "
                f"{ev[f'{name}_rising_growth']:.3g}x"
            )
    if "loss_last" in ev and ev["loss_last"] > ev["loss_min"]:
        parts.append(f"loss rose from {ev['loss_min']:.4g} to {ev['loss_last']:.4g}")
    fix = "Lower the learning rate, add warm-up, or clip the gradient norm."
    if lr is not None and math.isfinite(lr) and lr > 0:
        suggested, how = _suggest_lr(ev, lr, lr_decay)
        ev["suggested_lr"], ev["suggested_lr_from"] = suggested, how
        ev["lr_too_high_factor"] = lr / suggested
        parts.append(f"LR {lr:.3g} is ~{lr / suggested:.3g}x too high; try {suggested:.3g}")
        fix = (
            f"Lower the learning rate to about {suggested:.3g} (from {lr:.3g}; {how}), "
            "add warm-up, or clip the gradient norm (clip_grad_norm_)."
        )
    return Diagnosis(
        code="NT301",
        message="; ".join(parts),
        location=Location(phase=phase, step=step),
        severity=Severity.ERROR,
        evidence=ev,
        fix=fix,
    )


def diagnose_spike(spike: Spike, *, step: int, sigma: float) -> Diagnosis:
    """NT302: a finite loss far above its running mean (an early warning, not an incident)."""
    ev = {
        "loss": spike.loss,
        "loss_mean": spike.mean,
        "loss_std": spike.std,
        "sigmas": spike.sigmas,
        "ratio": spike.ratio,
        "threshold_sigmas": sigma,
    }
    return Diagnosis(
        code="NT302",
        message=(
            f"loss {spike.loss:.4g} at step {step} is {spike.sigmas:.3g} standard deviations "
            f"({spike.ratio:.3g}x) above its running mean {spike.mean:.4g}"
        ),
        location=Location(phase=Phase.FORWARD, step=step),
        severity=Severity.WARNING,
        evidence=ev,
        fix="Inspect the batch; lower the LR or clip the gradient norm if spikes repeat.",
        incident=False,
    )
