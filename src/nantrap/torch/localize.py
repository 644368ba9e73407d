"""Localize a bad step: trace it op by op and diagnose the first bad op on the path to the
non-finite loss or gradient.

Two forms:

- :func:`localize` replays a step (closure form; the guard restores the pre-step
  snapshot and RNG around it).
- :class:`ArmedTrace` traces the *next* step of a plain loop (``loss.backward();
  opt.step()``): ``arm()`` makes the model's next root forward start tracing and
  ``finish(step)``, called from ``opt.step()`` before the update, stops it and reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from nantrap.errors import ConfigError
from nantrap.findings import Diagnosis, Location, Phase, Severity
from nantrap.guard.diagnose import diagnose
from nantrap.torch._tensor_stats import summarize
from nantrap.torch.trace import OpEvent, OpTrace

__all__ = ["ArmedTrace", "explain", "localize"]

log = logging.getLogger("nantrap")


def localize(
    run_step: Callable[[], object],
    model: torch.nn.Module | None = None,
    *,
    step: int | None = None,
) -> Diagnosis | None:
    """Run ``run_step()`` (forward + loss + backward, no optimizer update) under op tracing.

    Returns the Diagnosis of the first op whose output is non-finite while its inputs were
    finite, on the path to the bad value (the returned loss, or a non-finite gradient);
    allocation ops and intentional -inf masks are ignored. Returns None if the step ran
    finite. The caller restores model and RNG state around it.

    Under ``torch.distributed`` (DDP, FSDP2) call it on every rank at the same step: the
    step runs its collectives. A rank whose own ops stayed finite gets an NT903 naming the
    collective the NaN/Inf arrived in (``evidence["from_other_rank"]``).

    >>> def run_step():                                   # doctest: +SKIP
    ...     loss = loss_fn(model(x), y); loss.backward(); return loss
    >>> localize(run_step, model, step=12).headline()     # doctest: +SKIP
    'step 12 · NT101 domain · log in model.head (train.py:41): ...'
    """
    if not callable(run_step):
        raise ConfigError(
            f"localize(run_step=...) needs a callable that runs forward + loss + backward, "
            f"got {type(run_step).__name__}"
        )
    trace = OpTrace(model)
    with trace:
        try:
            result = run_step()
        except Exception:
            failed = trace.events[-1] if trace.events and trace.events[-1].error else None
            if failed is not None:
                found = diagnose(trace.record(failed), step=step)
                if found.code != "NT903":
                    return found
            raise
    return explain(trace, result, model, step=step)


def explain(
    trace: OpTrace, result: object, model: torch.nn.Module | None = None, *, step: int | None
) -> Diagnosis | None:
    """The Diagnosis of the first bad op on the path to the non-finite tensors in
    ``result`` or the gradients of ``model``'s parameters, in a finished ``trace``; None if
    they are all finite."""
    return _report(trace, _bad_values(result, model, trace), step)


class ArmedTrace:
    """Trace the next step of a plain loop; see the module docstring."""

    def __init__(self, model: torch.nn.Module):
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(
                f"ArmedTrace(model=...) needs a torch.nn.Module, got {type(model).__name__}"
            )
        self.model = model
        self._trace: OpTrace | None = None
        self._armed = False
        self._outputs: list[torch.Tensor] = []
        self._hooks = [
            model.register_forward_pre_hook(self._on_forward),
            model.register_forward_hook(self._on_output),
        ]

    @property
    def armed(self) -> bool:
        return self._armed

    @property
    def tracing(self) -> bool:
        return self._trace is not None and self._trace._mode is not None

    def arm(self) -> None:
        """The model's next root forward starts tracing."""
        self._armed = True

    def _on_forward(self, module: torch.nn.Module, args: Any) -> None:
        if not self._armed or self._trace is not None or not torch.is_grad_enabled():
            return  # NB: an evaluation forward under no_grad is not the step to trace
        self._armed = False
        self._trace = OpTrace(self.model)
        self._trace.start(root_args=args)

    def _on_output(self, module: torch.nn.Module, args: Any, out: Any) -> None:
        if self.tracing:
            # NB: no tensor ops here: they would be traced and shadow the producers
            self._outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]

    def finish(self, step: int) -> Diagnosis | None:
        """Stop tracing (forward + backward are done) and report; None if nothing was traced
        or the step ran finite."""
        trace, self._trace = self._trace, None
        if trace is None:
            return None
        trace.stop()
        bad = [t for t in self._outputs if not summarize(t).finite]
        self._outputs = []
        return _report(trace, bad + _bad_grads(self.model, trace), step)

    def close(self) -> None:
        """Stop any trace and remove the hooks."""
        if self._trace is not None:
            self._trace.stop()
            self._trace = None
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._armed = False


def _bad_values(result: object, model: torch.nn.Module | None, trace: OpTrace) -> list:
    bad = [
        t
        for t in tree_leaves(result)
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not summarize(t).finite
    ]
    return bad + _bad_grads(model, trace)


def _bad_grads(model: torch.nn.Module | None, trace: OpTrace) -> list[torch.Tensor]:
    params: Iterable[torch.Tensor] = model.parameters() if model is not None else trace.leaves()
    return [p.grad for p in params if p.grad is not None and not summarize(p.grad).finite]


def _report(trace: OpTrace, bad: list[torch.Tensor], step: int | None) -> Diagnosis | None:
    if not bad:
        return None
    event = trace.origin(bad)
    if event is None:
        log.debug("nantrap: %d non-finite values, no recorded op produced them", len(bad))
        return Diagnosis(
            code="NT903",
            message=f"{len(bad)} non-finite loss/gradient tensors, but no traced op made "
            f"them ({len(trace.events)} ops traced); the NaN/Inf came from outside the "
            "traced step (e.g. a compiled region or another thread)",
            location=Location(step=step, phase=Phase.BACKWARD),
            severity=Severity.ERROR,
            evidence={
                "ops_traced": len(trace.events),
                "bad_tensors": len(bad),
                **({"trace_failures": trace.failures[:5]} if trace.failures else {}),
            },
        )
    if event.collective:
        return _from_another_rank(trace, event, len(bad), step)
    return diagnose(trace.record(event), step=step)


_EXCHANGES = (
    ("reduce_scatter", "reduce-scattered"),
    ("allreduce", "all-reduced"),
    ("all_reduce", "all-reduced"),
    ("allgather", "all-gathered"),
    ("all_gather", "all-gathered"),
    ("broadcast", "broadcast"),
)


def _from_another_rank(trace: OpTrace, event: OpEvent, n_bad: int, step: int | None) -> Diagnosis:
    """The first bad values on this rank's path arrived through a collective whose inputs
    from this rank were finite: another rank's step went bad (its own trace names the op)."""
    verb = next((v for k, v in _EXCHANGES if k in event.op), "exchanged")
    return Diagnosis(
        code="NT903",
        message=f"this rank's own ops stayed finite; the NaN/Inf arrived from another rank in "
        f"{event.op} ({verb} across ranks); the rank whose step went bad names the op in its "
        "own log",
        location=Location(step=step, phase=event.phase, op=event.op, module=event.module),
        severity=Severity.ERROR,
        evidence={
            "from_other_rank": True,
            "collective": event.op,
            "ops_traced": len(trace.events),
            "bad_tensors": n_bad,
        },
        fix="Read the diagnosis of the rank whose own step went bad (the same step in its "
        "log folder); this rank only received its values.",
    )
