"""Diagnoses that need no op trace: bad input data (NT401), corrupted state (NT403), a
collapsing loss scale (NT201) and a non-finite value nobody could localize (NT903)."""

from __future__ import annotations

from collections.abc import Mapping

from nantrap.findings import Category, Diagnosis, Location, Phase, Severity
from nantrap.guard.stats import TensorStats

__all__ = [
    "loss_scale_collapse",
    "nonfinite_input",
    "nonfinite_parameter",
    "unlocalized",
]


def _stats_evidence(stats: Mapping[str, TensorStats]) -> dict[str, dict]:
    return {name: s.to_dict() for name, s in stats.items()}


def _names(stats: Mapping[str, TensorStats], limit: int = 3) -> str:
    items = [f"{name} ({s.nan} NaN, {s.inf} Inf of {s.numel})" for name, s in stats.items()]
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" and {more} more" if more > 0 else "")


def _owner(name: str | None) -> str | None:
    """``enc.layers.0.linear1`` for ``enc.layers.0.linear1.weight``."""
    return name.rsplit(".", 1)[0] if name and "." in name else name


def nonfinite_input(step: int, inputs: Mapping[str, TensorStats]) -> Diagnosis:
    """NT401: the batch the model received holds NaN/Inf (``inputs``: name -> stats; empty
    when another process of a distributed run received it)."""
    bad = {k: s for k, s in inputs.items() if not s.finite}
    where = _names(bad) if bad else "on another rank (this rank's batch is finite)"
    return Diagnosis(
        code="NT401",
        message=f"the model's input at step {step} is non-finite: {where}",
        location=Location(phase=Phase.DATA, step=step),
        severity=Severity.ERROR,
        evidence={"inputs": _stats_evidence(bad)},
        fix="Find the record (see the repro bundle), fix the preprocessing, and validate "
        "batches with torch.isfinite once.",
    )


def nonfinite_parameter(
    step: int, params: Mapping[str, TensorStats], *, where: str | None = None
) -> Diagnosis:
    """NT403: parameters or buffers were already non-finite ``where`` (default: before
    step ``step``)."""
    where = where or f"before step {step}"
    return Diagnosis(
        code="NT403",
        message=f"{len(params)} parameter(s)/buffer(s) were non-finite {where}: {_names(params)}",
        location=Location(phase=Phase.FORWARD, step=step, module=_owner(next(iter(params), None))),
        severity=Severity.ERROR,
        evidence={"parameters": _stats_evidence(params), "where": where},
        fix="Restore a finite checkpoint (policy='rollback' does this) and find where the "
        "state was written outside the optimizer.",
    )


def loss_scale_collapse(step: int, scale: float, *, initial: float, floor: float) -> Diagnosis:
    """NT201: the GradScaler keeps finding inf gradients and has halved its scale below
    ``floor``: values overflow float16 even without scaling."""
    return Diagnosis(
        code="NT201",
        message=f"the GradScaler's loss scale fell from {initial:g} to {scale:g} at step {step} "
        f"(below {floor:g}): gradients or activations overflow float16 even unscaled",
        location=Location(phase=Phase.BACKWARD, step=step),
        severity=Severity.WARNING,
        category=Category.PRECISION,
        evidence={"loss_scale": scale, "initial_scale": initial, "floor": floor},
        fix="Use bfloat16 autocast, keep the overflowing op in float32 (autocast does this "
        "for softmax/log/sum), or rescale the layer whose activations exceed 65504.",
        incident=False,
    )


def unlocalized(
    step: int, what: str, reason: str, *, phase: Phase | None = None, **evidence: object
) -> Diagnosis:
    """NT903: ``what`` was non-finite at ``step`` but no first op could be named."""
    return Diagnosis(
        code="NT903",
        message=f"{what} at step {step}; no first op named: {reason}",
        location=Location(phase=phase, step=step),
        severity=Severity.ERROR,
        evidence={"detected": what, "reason": reason, **evidence},
        fix="Use the closure form (opt.step(closure)) so the step can be replayed, or replay "
        "the repro bundle offline with nantrap.torch.replay.",
    )
