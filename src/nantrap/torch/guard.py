"""``nantrap.torch.guard``: put a NaN/Inf guard around a PyTorch optimizer.

    opt = nt.guard(torch.optim.AdamW(model.parameters(), lr=1e-3), model,
                   policy="rollback", log_dir="runs/nantrap")
    opt.step(closure)                      # A: closure form, full replay on an incident
    loss.backward(); opt.step()            # B: an existing loop, unchanged

The optimizer is guarded in place (its class is swapped for a guarded subclass; see
``_optimizer.py``), so ``guard`` returns the very object it was given.

Per step the guard adds a handful of fused reductions and ONE host sync (see
``_detect.py``); snapshots copy state to host every ``snapshot_every`` steps.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from nantrap.findings import Diagnosis, Phase
from nantrap.guard.config import GuardConfig
from nantrap.guard.engine import GuardEngine, Observation, Problem
from nantrap.guard.history import Spike
from nantrap.guard.incidents import nonfinite_input, nonfinite_parameter
from nantrap.guard.policy import Action, Decision
from nantrap.guard.stats import TensorStats
from nantrap.torch import _snapshot
from nantrap.torch._detect import Probe, _across_ranks, input_sum
from nantrap.torch._microbatches import MicroBatches
from nantrap.torch._optimizer import (
    guarded_class,
    guarded_step,
    route_scheduler_patch,
    schedulers_of,
)
from nantrap.torch._tensor_stats import local_tensor

__all__ = ["TorchGuard", "guard", "unguard"]

logger = logging.getLogger("nantrap")
_LR_KEYS = ("lr", "initial_lr", "max_lr")
_OPAQUE = (torch.optim.LBFGS,)  # optimizers that evaluate the closure themselves


def guard(
    optimizer: torch.optim.Optimizer,
    model: torch.nn.Module | None = None,
    policy: str = "rollback",
    log_dir: str | Path | None = None,
    *,
    scheduler: Any = None,
    scaler: Any = None,
    **options: Any,
) -> torch.optim.Optimizer:
    """Guard ``optimizer`` (and the ``model`` it trains) against NaN/Inf; returns it.

    ``policy``: raise | warn | skip | rollback | stop. ``scheduler`` (one or a list) and
    ``scaler`` (a ``torch.amp.GradScaler``) are included in snapshots; the scaler's scale
    is watched for collapse. Other options: see :class:`nantrap.guard.GuardConfig`.
    The returned object is ``optimizer`` itself; ``opt.guard`` is the :class:`TorchGuard`,
    ``opt.diagnoses`` its findings.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        from nantrap.errors import ConfigError

        raise ConfigError(
            f"nantrap.torch.guard needs a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if isinstance(getattr(optimizer, "_nantrap_guard", None), TorchGuard):
        from nantrap.errors import ConfigError

        raise ConfigError("this optimizer is already guarded (call nantrap.torch.unguard first)")
    _check_model(model)
    _check_scaler(scaler)
    config = GuardConfig.from_options(policy=policy, log_dir=log_dir, **options)
    TorchGuard(optimizer, model, config, scheduler=scheduler, scaler=scaler)
    return optimizer


def unguard(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Remove the guard: hooks off, the original class back, the event log closed."""
    g = getattr(optimizer, "_nantrap_guard", None)
    if isinstance(g, TorchGuard):
        g.close()
    return optimizer


# -- the guard ----------------------------------------------------------------------------


class TorchGuard:
    """The guard state of one optimizer: detection probe, engine, hooks, localization."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: torch.nn.Module | None,
        config: GuardConfig,
        *,
        scheduler: Any = None,
        scaler: Any = None,
    ):
        self.optimizer = optimizer
        self.model = model
        self.config = config
        self.base_class = type(optimizer)
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.tracked: list[Any] = []
        for obj in _as_list(scheduler):
            self.track(obj)
        rank, world = _rank_world()
        # the engine refers back weakly, so that a dropped guard can be collected (and its
        # run's "end" record written) while the engine outlives it in the finalizer
        opt_ref = weakref.ref(optimizer)
        self.engine = GuardEngine(
            config,
            framework="torch",
            restore=_weak(self._restore_snapshot),
            lrs=lambda: [g["lr"] for g in opt_ref().param_groups] if opt_ref() else [],
            scale_lr=_weak(self.scale_lr),
            rank=rank,
            world_size=world,
        )
        self.probe = Probe(optimizer)
        self.step_state = _snapshot.StepState(model)
        # CUDA snapshots: async copies to pinned memory, once verified on hardware (opt-in)
        self.copier = _snapshot.HostCopier() if config.async_snapshots else _snapshot.SyncCopier()
        self._fresh = False  # the current step's start state has been saved
        self._in_step = False
        self._inputs: list[torch.Tensor] = []  # input sums of this step (device scalars)
        self._last_args: Any = None  # the model's last training inputs (references)
        self._versions: list[int] | None = None  # param versions after our last clean update
        self._warned_step: int | None = None  # the last update applied despite an incident
        self._pending_loss: torch.Tensor | None = None
        self._targets: Any = None
        self.bundles: list[Path] = []  # repro bundles written so far
        self._trace: Any = None  # ArmedTrace in loop form B
        self._trace_left = 0
        self._awaiting: list[int] = []  # steps of NT903s waiting for the armed trace
        self._sampled = False  # early warnings sampled this step: its ranges go on record
        self._warned_stopped = False
        # the first snapshot is taken at the first step (``_begin``), not here: a checkpoint
        # loaded after ``guard`` (the usual resume) must be what a rollback returns to
        self._snapshot_pending = True
        self._restoring = False  # a rollback is putting a snapshot back
        self._hooks = []
        self.early = None
        # what can fail (the event log's folder) comes before anything of the user's changes
        try:
            self.engine.start(
                model=type(_plain_model(model)).__name__ if model is not None else None,
                optimizer=self.base_class.__name__,
                argv=sys.argv,
            )
        except OSError as err:
            from nantrap.errors import ConfigError

            raise ConfigError(
                f"guard option log_dir={config.log_dir!r}: cannot write the event log there "
                f"({err.strerror or err})"
            ) from err
        self.early = self._make_early_warnings()
        if model is not None:
            self._hooks += [
                model.register_forward_pre_hook(_Hook(self, "_on_forward"), with_kwargs=True),
                model.register_load_state_dict_post_hook(_Hook(self, "_on_model_loaded")),
            ]
        optimizer._nantrap_guard = self
        optimizer.__class__ = guarded_class(self.base_class)
        route_scheduler_patch(optimizer, functools.partial(guarded_step, optimizer))
        # fused optimizers let GradScaler skip the unscale; the guard needs unscaled grads
        self._amp_flag = optimizer.__dict__.pop("_step_supports_amp_scaling", None)
        # the "end" record is written on unguard/close, or when the guard is collected;
        # then too the dispatch modes of a step left half done (the user's code raised and
        # the run was abandoned) are exited and the model's hooks removed
        self._owned: dict[str, Any] = {"early": self.early, "hooks": self._hooks}
        self._finalizer = weakref.finalize(self, _end_run, self.engine, self._owned)

    # -- public ------------------------------------------------------------------------

    @property
    def diagnoses(self) -> list[Diagnosis]:
        return self.engine.diagnoses

    @property
    def stopped(self) -> bool:
        return self.engine.stopped

    @property
    def step_count(self) -> int:
        """Training iterations so far (the step numbers of diagnoses and events): updates,
        skipped steps and the steps a GradScaler skipped (counted at the next
        ``zero_grad``); a rollback sets it back to its snapshot's step."""
        return self.engine.step

    def track(self, obj: Any) -> None:
        """Include ``obj`` (an LR scheduler, an EMA of the weights...) in snapshots."""
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            from nantrap.errors import ConfigError

            raise ConfigError(
                f"cannot track {type(obj).__name__}: it needs state_dict() and load_state_dict()"
            )
        self.tracked.append(obj)

    def scale_lr(self, factor: float) -> None:
        """Multiply the LR of every group, and the base LRs of its schedulers (tracked ones,
        and any other scheduler of this optimizer, found when it first matters)."""
        for group in self.optimizer.param_groups:
            for key in _LR_KEYS:
                if isinstance(group.get(key), (int, float)):
                    group[key] *= factor
        for obj in schedulers_of(self.optimizer):
            if not any(obj is t for t in self.tracked):
                logger.warning(
                    "nantrap: %s was not given to the guard (scheduler=...): the LR decay is "
                    "applied to it, but its state is not part of the snapshots",
                    type(obj).__name__,
                )
                self.tracked.append(obj)
        for obj in self.tracked:
            if isinstance(getattr(obj, "base_lrs", None), list):
                obj.base_lrs = [lr * factor for lr in obj.base_lrs]
            if isinstance(getattr(obj, "_last_lr", None), list):
                obj._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def annotate(self, **fields: Any) -> None:
        """Where the training loop is: ``opt.guard.annotate(epoch=e, batch=i)`` before the
        step. Written beside each diagnosis as a ``context`` record (shown on the report's
        incident card); fields stay until changed, ``None`` removes one, a callable is
        evaluated only when a record is written. See :meth:`GuardEngine.annotate`."""
        self.engine.annotate(**fields)

    def observe(self, loss: torch.Tensor | None = None, targets: Any = None) -> None:
        """Give the guard this step's loss (loop form B: spikes and the loss record) and
        targets (written to repro bundles so ``nt.replay`` can recompute the loss).
        ``opt.step(loss=..., targets=...)`` does the same."""
        if loss is not None:
            self._pending_loss = loss
        if targets is not None:
            self._targets = targets
        self._micro.observe(loss, targets)

    def close(self, status: str | None = None) -> None:
        """Remove hooks, put the original class back and end the event log."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        if self.early is not None:
            self.early.close()
            self.early = None
        opt = self.optimizer
        if type(opt) is guarded_class(self.base_class):
            opt.__class__ = self.base_class
        route_scheduler_patch(opt, functools.partial(self.base_class.step, opt))
        if self._amp_flag is not None:
            opt._step_supports_amp_scaling = self._amp_flag
        opt.__dict__.pop("_nantrap_guard", None)
        if not self.engine.ended:
            self.engine.end(status)
        self._finalizer.detach()

    def state_dict(self) -> dict[str, Any]:
        """The guard's own state (history, policy, snapshots, events); the optimizer's is
        ``opt.state_dict()`` as usual."""
        self.copier.synchronize()  # the snapshots' host copies are complete
        return {
            "engine": self.engine.state_dict(),
            "versions": self._versions,
            "bundles": [str(p) for p in self.bundles],
            "early": self.early.state_dict() if self.early is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state["engine"])
        self._snapshot_pending = not len(self.engine.ring)
        self.config = self.engine.config
        self._versions = state.get("versions")
        self.bundles = [Path(p) for p in state.get("bundles", [])]
        if self.early is not None and state.get("early") is not None:
            self.early.load_state_dict(state["early"])

    def state_loaded(self) -> None:
        """The training state was replaced (``opt.load_state_dict``/``model.load_state_dict``,
        a resume): the snapshots hold what was there before, so they are dropped and the
        first snapshot is retaken at the start of the next step. (A rollback that loads a
        tracked object's state is not a resume.)"""
        if self._restoring:
            return
        self.engine.forget_snapshots()
        self._snapshot_pending = True
        self._versions = None
        self.probe.load_state_dict({})

    def _on_model_loaded(self, module: torch.nn.Module, incompatible: Any) -> None:
        self.state_loaded()

    # -- hooks ---------------------------------------------------------------------------

    def new_iteration(self) -> None:
        """zero_grad outside a closure starts a new iteration: forget the last one's
        start state (steps the GradScaler skipped never reach ``step``)."""
        if self._in_step:
            return
        if self._fresh and self.scaler is not None and self.scaler._scale is not None:
            self._scaler_skipped()
        self._fresh = False
        self._inputs.clear()
        self._micro.clear()

    def _scaler_skipped(self) -> None:
        """A forward ran but step() was never reached: the GradScaler found inf/NaN grads
        and skipped the update (it synced to decide, so one more fetch costs little).
        Overflow is the scaler's business; bad inputs, non-finite weights and a collapsing
        scale are not."""
        engine = self.engine
        params = self.probe.params()
        for w in self.early.end_step(engine.step) if self.early is not None else ():
            engine.warn(w)
        traced = self._finish_trace(engine.step) if self._trace is not None else None
        if traced is not None:  # what overflowed in the skipped step: context, not an incident
            engine.warn(dataclasses.replace(traced, incident=False, action="skipped-by-scaler"))
        obs = self.probe.measure(params, loss=None, inputs=self._inputs, scale=self.scaler._scale)
        problem = engine.classify(dataclasses.replace(obs, grad_norm=0.0))
        decision = None
        if problem is Problem.CORRUPT_STATE:
            self._drop_step()
            decision = engine.act(
                self._explain_corrupt(params, engine.step), state_corrupt=True, obs=obs
            )
        elif problem is Problem.BAD_INPUT and self._inputs_really_bad():
            self._drop_step()
            stats = self._bad_inputs()
            decision = engine.act(nonfinite_input(engine.step, stats), obs=obs)
        else:
            if engine.check_loss_scale(obs.loss_scale) and self.config.localize:
                self._arm_trace()  # the next skipped step shows which op overflows
            if engine.snapshot_due():  # the state is the step's start state: no update ran
                engine.take_snapshot(self._capture())
        if decision is not None:
            self._after_incident(decision)
        if decision is None or decision.action is Action.WARN:
            # steps count iterations (what the user's loop counts), updates or not: a
            # message after 20 skipped iterations says "step 20", not "step 0"
            engine.idle_step()

    def _begin(self) -> None:
        if not self._fresh:
            self._fresh = True
            self.copier.fence()  # the last snapshot's copies read the buffer backup
            first = self._snapshot_pending
            self.step_state.save(host_rng=first or self.engine.snapshot_due())
            if first:
                self._snapshot_pending = False
                self.engine.take_snapshot(self._capture())

    def _on_forward(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        self._begin()
        if self.config.check_inputs:
            if kwargs or not all(isinstance(a, torch.Tensor) for a in args):
                leaves = tree_leaves((args, kwargs))
            else:
                leaves = args  # the common case, without pytree's walk
            self._inputs.extend(
                input_sum(t)
                for t in leaves
                if isinstance(t, torch.Tensor) and t.is_floating_point()
            )
            self._last_args = (args, kwargs)
            self._micro.forward(args, kwargs)

    @functools.cached_property
    def _micro(self) -> MicroBatches:
        """Every training forward of this step (gradient accumulation): the bundle keeps
        the micro-batch that went bad, not just the last one."""
        return MicroBatches()

    # -- the step ----------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        loss = kwargs.pop("loss", None)
        if "targets" in kwargs:
            self._targets = kwargs.pop("targets")
        if self.engine.stopped:
            if not self._warned_stopped:
                self._warned_stopped = True
                logger.warning("nantrap: training was stopped; opt.step() no longer updates")
            if closure is None:
                self._end_iteration()
                return None
            self._begin()
            self._in_step = True
            try:
                with torch.enable_grad():
                    return closure()  # the caller still gets a loss; nothing else changes
            finally:
                self._in_step = False
                self._drop_step()
                self._end_iteration()
        if closure is not None and isinstance(self.optimizer, _OPAQUE):
            return self._closure_step_opaque(closure, **kwargs)
        self._in_step = True
        try:
            if closure is not None:
                self._begin()
                with torch.enable_grad():
                    loss = closure()
            elif loss is None:
                loss = self._pending_loss
            return self._judge_and_update(loss, closure, kwargs)
        finally:
            self._in_step = False
            self._pending_loss = None
            self._targets = None
            self._end_iteration()

    def _end_iteration(self) -> None:
        self.copier.fence()  # no later work of the stream changes what a snapshot copies
        self._fresh = False
        if self._trace is None:  # the trace ran out or was used: those NT903s stay as is
            self._awaiting = []
        self._inputs.clear()
        self._micro.clear()

    def _judge_and_update(self, loss: Any, closure: Callable | None, kwargs: dict) -> Any:
        engine = self.engine
        step = engine.step
        params = self.probe.params()
        loss_t = loss if isinstance(loss, torch.Tensor) else None
        self._begin()  # no-op when the forward pre-hook already saved the step's start
        self._sampled = self.early is not None and self.early.sampling
        for w in self.early.end_step(step) if self.early is not None else ():
            engine.warn(w)
        traced = self._finish_trace(step) if self._trace is not None else None
        obs = self.probe.measure(
            params,
            loss=loss_t if loss_t is not None else (float(loss) if loss is not None else None),
            inputs=self._inputs,
            scale=self.scaler._scale if self.scaler is not None else None,
            buffers=list(zip(self.step_state.buffers, self.step_state.backup, strict=True)),
        )
        problem = engine.classify(obs)
        if problem is Problem.BAD_INPUT and not self._inputs_really_bad():
            # the input sum overflowed, the inputs themselves are finite
            problem = engine.classify(dataclasses.replace(obs, inputs_finite=True))
        if problem is None or isinstance(problem, Spike):
            if engine.snapshot_due() and self._fresh:
                engine.take_snapshot(self._capture())
            decision = engine.handle_spike(problem) if isinstance(problem, Spike) else None
            if decision is not None and decision.action is not Action.WARN:
                self._drop_step()
                self._after_incident(decision)
                return loss
            self._apply_update(params, obs, kwargs, clean=True)
            return loss
        self._incident(problem, obs, params, loss, closure, traced, kwargs)
        return loss

    def _apply_update(
        self, params: list[torch.Tensor], obs: Observation, kwargs: dict, *, clean: bool = False
    ) -> None:
        """Run the wrapped optimizer's step; ``clean``: the step was judged finite (a later
        non-finite weight is then this update's doing)."""
        every = self.config.ratio_every
        self.probe.before_update(params, sample_ratio=every > 0 and self.engine.step % every == 0)
        self.copier.fence()  # the update waits for the snapshot's copies of the weights
        self.base_class.step(self.optimizer, **kwargs)
        self.probe.after_update(params)
        self._versions = _versions(params) if clean else None
        self._warned_step = None if clean else self.engine.step
        ranges = self.early.ranges or None if self._sampled and self.early is not None else None
        diverging = self.engine.after_update(obs, ranges=ranges)
        if diverging is not None:
            self._after_incident(self.engine.act(diverging, update_applied=True))

    def _drop_step(self) -> None:
        """Undo what the step's forward changed (BN stats) and drop its gradients."""
        self.step_state.restore_buffers()
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

    # -- incidents ---------------------------------------------------------------------

    def _incident(
        self,
        problem: Problem,
        obs: Observation,
        params: list[torch.Tensor],
        loss: Any,
        closure: Callable | None,
        traced: Diagnosis | None,
        kwargs: dict,
    ) -> None:
        engine = self.engine
        step = engine.step
        state_corrupt = problem is Problem.CORRUPT_STATE
        if problem is Problem.CORRUPT_STATE:
            diagnosis = self._explain_corrupt(params, step)
        elif problem is Problem.BAD_INPUT:
            diagnosis = nonfinite_input(step, self._bad_inputs())
        else:
            diagnosis = self._explain_nonfinite(obs, closure, traced, step)
        config = self.config
        if config.bundle and config.log_dir and len(self.bundles) < config.max_bundles:
            self._write_bundle(diagnosis, step)
        if self.config.policy != "warn":
            self._drop_step()
        decision = engine.act(diagnosis, state_corrupt=state_corrupt, obs=obs)
        if decision.action is Action.WARN:
            self._apply_update(params, obs, kwargs)
        else:
            self._after_incident(decision)

    def _after_incident(self, decision: Decision) -> None:
        self.probe.load_state_dict({})
        self._versions = None

    def _explain_corrupt(self, params: list[torch.Tensor], step: int) -> Diagnosis:
        names = _param_names(self.model, self.optimizer)
        bad, shards = _nonfinite_params(params, names)
        # NB: every rank must read this alike (the update's own doing: an LR decay)
        same = self._versions is not None and self._versions == _versions(params)
        ours = _on_every_rank(same, params[0].device if params else torch.device("cpu"))
        if self._warned_step is not None and not ours:
            return _in_shards(
                nonfinite_parameter(
                    step,
                    bad,
                    where=f"after the update of step {self._warned_step}, which "
                    "policy 'warn' let through",
                ),
                shards,
            )
        if ours:
            return self.engine.explain(
                what=f"the update of step {step - 1} made {len(bad)} parameter(s) non-finite "
                f"({', '.join(list(bad)[:3])}) although its gradients were finite",
                phase=Phase.UPDATE,
                force_divergence=True,
            )
        return _in_shards(nonfinite_parameter(step, bad), shards)

    def _inputs_really_bad(self) -> bool:
        """The all-reduced input flag said non-finite: confirm it with the exact check (a
        float32 sum of finite values can overflow). In a distributed run the flag stands:
        another rank's batch may be the bad one, and every rank must decide alike."""
        return self.engine.world_size > 1 or bool(self._bad_inputs())

    def _bad_inputs(self) -> dict[str, TensorStats]:
        if self._last_args is None:
            return {}
        args, kwargs = self._last_args
        named = [(f"input[{i}]", t) for i, t in enumerate(args)]
        named += [(f"input[{k!r}]", t) for k, t in kwargs.items()]
        out = {}
        for name, value in named:
            for j, t in enumerate(tree_leaves(value)):
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    s = _stats(t)
                    if not s.finite:
                        out[name if j == 0 else f"{name}.{j}"] = s
        return out

    def _explain_nonfinite(
        self, obs: Observation, closure: Callable | None, traced: Diagnosis | None, step: int
    ) -> Diagnosis:
        if obs.has_loss and not math.isfinite(obs.loss):
            what = f"non-finite loss ({obs.loss:g})"
        elif not obs.grads_finite:
            what = f"non-finite gradients (total grad norm {obs.grad_norm:g})"
        else:
            ss = self.step_state  # the buffers this step made non-finite (not -inf masks)
            bad = [
                n
                for n, b, start in zip(ss.names, ss.buffers, ss.backup, strict=True)
                if b.is_floating_point()
                and not torch.isfinite(b).all()
                and torch.isfinite(start).all()
            ]
            what = f"non-finite buffer(s) after the forward: {', '.join(bad[:5])}"
        localized, reason = traced, ""
        if localized is None and self.config.localize:
            if closure is not None:
                localized, reason = self._replay(closure, step)
            else:
                reason = self._arm_trace()
        elif not self.config.localize:
            reason = "localization is off (localize=False)"
        found = self.engine.explain(
            what=what, localized=localized, reason=reason, phase=Phase.BACKWARD
        )
        return self._fold_unlocalized(found, traced, step)

    def _fold_unlocalized(self, found: Diagnosis, traced: Diagnosis | None, step: int) -> Diagnosis:
        """Loop form B: the incident that armed the trace is an NT903 marked
        ``pending_trace``; the incident the trace then localizes ``supersedes`` it (the
        report folds the two and leads with the cause). Evidence fields only: additive."""
        if found.code == "NT903" and traced is None and self._trace is not None:
            self._awaiting.append(step)
            return dataclasses.replace(
                found, evidence={**found.evidence, "pending_trace": self.config.trace_steps}
            )
        if traced is None or not self._awaiting:
            return found
        earlier, self._awaiting = self._awaiting, []
        if found.code == "NT903":  # the trace saw the value but named no op
            return found
        diagnoses = self.engine.diagnoses  # the in-memory NT903s say what superseded them
        for i, d in enumerate(diagnoses):
            ev = d.evidence
            if d.step in earlier and "pending_trace" in ev and "superseded_by" not in ev:
                diagnoses[i] = dataclasses.replace(
                    d, evidence={**d.evidence, "superseded_by": step}
                )
        seen = ", ".join(map(str, earlier))
        return dataclasses.replace(
            found,
            message=f"{found.message} (first seen at step {seen}, where the plain loop could "
            f"not replay the step; traced at step {step})",
            evidence={
                **found.evidence,
                "supersedes": [{"code": "NT903", "step": s} for s in earlier],
            },
        )

    def _replay(self, closure: Callable, step: int) -> tuple[Diagnosis | None, str]:
        """Closure form: re-run forward+backward from the step's start under op tracing."""
        try:
            from nantrap.torch.localize import localize
        except ImportError as err:
            return None, f"op tracing is unavailable ({err})"
        after = _snapshot.capture_rng(host=True)
        self.step_state.restore_buffers()
        self.step_state.restore_rng()
        model = _plain_model(self.model)
        try:
            with _eager():
                found = localize(closure, model, step=step)
        except Exception as err:  # a replay failure must not take the run down
            logger.warning("nantrap: replay of step %d failed: %r", step, err)
            return None, f"the replay failed ({type(err).__name__}: {err})"
        finally:
            self.step_state.restore_buffers()
            _snapshot.restore_rng(after)
        if found is None:
            if self.engine.world_size > 1:
                return None, "the replay ran finite on this rank (another rank's step went bad?)"
            return None, "the replay ran finite (nondeterministic step?)"
        return found, ""

    def _arm_trace(self) -> str:
        if self.model is None:
            return "no model was given to the guard, so nothing can be traced"
        try:
            from nantrap.torch.localize import ArmedTrace
        except ImportError as err:
            return f"op tracing is unavailable ({err})"
        if self._trace is None:
            self._trace = self._owned["trace"] = ArmedTrace(_plain_model(self.model))
        self._trace.arm()
        self._trace_left = self.config.trace_steps
        return (
            "loop form (loss.backward(); opt.step()) cannot replay the step; tracing is armed "
            f"for the next {self.config.trace_steps} steps"
        )

    def _finish_trace(self, step: int) -> Diagnosis | None:
        try:
            found = self._trace.finish(step)
        except Exception as err:
            logger.warning("nantrap: tracing step %d failed: %r", step, err)
            found = None
        self._trace_left -= 1
        if self._trace_left > 0 and found is None:
            self._trace.arm()
        else:
            self._trace.close()
            self._trace = None
        return found

    def _write_bundle(self, diagnosis: Diagnosis, step: int) -> None:
        if self._last_args is None or self.model is None:
            return
        try:
            from nantrap.torch.bundle import save_bundle
        except ImportError:
            return
        args, kwargs = self._last_args
        targets = self._targets
        bad = self._micro.culprit()
        if bad is not None:
            args, kwargs = bad.args, bad.kwargs
            targets = bad.targets if bad.targets is not None else targets
        engine = self.engine
        rank = f"rank{engine.log.rank}-" if engine.world_size > 1 else ""
        path = Path(self.config.log_dir) / f"bundle-{rank}step{step}.ntb"
        rng = {k: v for k, v in (self.step_state.rng or {}).items() if k in ("torch", "cuda")}
        self.step_state.restore_buffers()  # the model as it was before the bad forward
        try:
            path = save_bundle(
                path,
                model=_plain_model(self.model),
                optimizer=self.optimizer,
                inputs=kwargs if kwargs and not args else (args[0] if len(args) == 1 else args),
                targets=targets,
                rng=rng or None,
                step=step,
                diagnosis=diagnosis,
                meta={"policy": self.config.policy},
            )
        except Exception as err:
            logger.warning("nantrap: could not write the repro bundle: %r", err)
            return
        self.bundles.append(path)
        logger.warning("nantrap: repro bundle written to %s", path)

    # -- opaque closure optimizers (LBFGS) ------------------------------------------------

    def _closure_step_opaque(self, closure: Callable, **kwargs: Any) -> Any:
        """Optimizers that call the closure themselves: check the state after the step and
        roll back / stop by policy (no skip is possible)."""
        self._begin()
        params = self.probe.params()
        self.copier.fence()
        loss = self.base_class.step(self.optimizer, closure, **kwargs)
        obs = self.probe.measure(params, loss=loss)
        if obs.params_finite and obs.loss_finite:
            self.engine.after_update(obs)
        else:
            d = self.engine.explain(
                what="non-finite state after a closure-driven step",
                phase=Phase.UPDATE,
                reason=f"{self.base_class.__name__} evaluates the closure itself",
            )
            self.engine.act(d, state_corrupt=True)
        self._end_iteration()
        return loss

    # -- snapshots -----------------------------------------------------------------------

    def _capture(self) -> dict[str, Any]:
        return _snapshot.capture(
            self.optimizer,
            self.probe.params(),
            buffers=self.step_state.buffer_dict(self.copier),
            rng=self.step_state.rng,
            tracked=self.tracked,
            scaler=self.scaler,
            copier=self.copier,
        )

    def _restore_snapshot(self, snap: dict[str, Any]) -> None:
        self.copier.synchronize()  # the snapshot's host copies are complete
        self._restoring = True
        try:
            _snapshot.restore(
                snap,
                self.optimizer,
                self.probe.params(),
                model=self.model,
                tracked=self.tracked,
                scaler=self.scaler,
            )
        finally:
            self._restoring = False

    # -- early warnings --------------------------------------------------------------------

    def _make_early_warnings(self) -> Any:
        if self.model is None or not self.config.early_warnings:
            return None
        try:
            from nantrap.torch.early_warnings import EarlyWarnings
        except ImportError:
            return None
        return EarlyWarnings(_plain_model(self.model), every=self.config.early_warnings)


# -- helpers ------------------------------------------------------------------------------


class _Hook:
    """A model hook that calls ``guard.<method>`` through a weak reference. The model does
    not keep the guard alive, and copies of the model (``copy.deepcopy``, EMA/SWA
    averages, ``torch.save``/``pickle``) get a hook that does nothing: the guard watches
    its own model, not its copies."""

    __slots__ = ("_method", "_ref")

    def __init__(self, guard: TorchGuard | None, method: str):
        self._ref = weakref.ref(guard) if guard is not None else None
        self._method = method

    def __call__(self, *args: Any) -> None:
        guard = self._ref() if self._ref is not None else None
        if guard is not None:
            getattr(guard, self._method)(*args)

    def __deepcopy__(self, memo: dict) -> _Hook:
        return _Hook(None, self._method)

    def __reduce__(self) -> tuple:
        return (_Hook, (None, self._method))


def _check_model(model: Any) -> None:
    if model is not None and not isinstance(model, torch.nn.Module):
        from nantrap.errors import ConfigError

        raise ConfigError(
            "nantrap.torch.guard: model must be a torch.nn.Module (the model the optimizer "
            f"trains) or None, got {type(model).__name__} {_short(model)}"
        )


_SCALER_API = ("is_enabled", "get_scale", "scale", "unscale_", "update")


def _check_scaler(scaler: Any) -> None:
    missing = [name for name in _SCALER_API if not callable(getattr(scaler, name, None))]
    if scaler is not None and missing:
        from nantrap.errors import ConfigError

        raise ConfigError(
            "nantrap.torch.guard: scaler must be a torch.amp.GradScaler or None, got "
            f"{type(scaler).__name__} {_short(scaler)} (no {', '.join(missing)})"
        )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _weak(method: Callable) -> Callable:
    ref = weakref.WeakMethod(method)
    return lambda *args: ref()(*args)


def _end_run(engine: GuardEngine, owned: dict[str, Any]) -> None:
    """The guard was collected without ``close``: stop what it started, end the log."""
    for hook in owned.pop("hooks", ()):
        hook.remove()
    for part in owned.values():
        if part is not None:
            part.close()
    if not engine.ended:
        engine.end()


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _plain_model(model: Any) -> Any:
    """The eager module under torch.compile / DDP wrappers."""
    while model is not None:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner
    return model


def _param_names(model: Any, optimizer: torch.optim.Optimizer) -> dict[int, str]:
    if model is None:
        return {}
    return {id(p): n for n, p in _plain_model(model).named_parameters()}


def _versions(params: list[torch.Tensor]) -> list[int]:
    """Each parameter's version counter; a DTensor's is its local shard's (a write into the
    shard, ``p.to_local()[i] = x``, does not bump the wrapper's)."""
    return [local_tensor(p)._version for p in params]


def _nonfinite_params(
    params: list[torch.Tensor], names: dict[int, str]
) -> tuple[dict[str, TensorStats], dict[str, list[int]]]:
    """The non-finite parameters (name -> stats) and, for sharded ones (DTensors: FSDP2,
    tensor parallel), the ranks whose shard is non-finite. Each rank reads its own shards;
    one all-reduce of their NaN/Inf counts gives every rank the same answer (every rank is
    here: the verdict that leads here was all-reduced)."""
    bad: dict[str, TensorStats] = {}
    sharded: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for i, p in enumerate(params):
        name = names.get(id(p), f"param[{i}]")
        detached = p.detach()
        local = local_tensor(detached)
        if local is not detached:
            sharded.append((name, p, local))
        elif not torch.isfinite(local).all():
            bad[name] = _stats(p)
    if not sharded:
        return bad, {}
    rank, world = _rank_world()
    device = sharded[0][2].device
    table = torch.zeros(world, len(sharded), 2, device=device)
    table[rank] = torch.stack(
        [torch.stack([x.isnan().sum(), x.isinf().sum()]).float().to(device) for _, _, x in sharded]
    )
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(table)
    counts = table.tolist()
    shards = {}
    for j, (name, p, local) in enumerate(sharded):
        ranks = [r for r in range(world) if sum(counts[r][j]) > 0]
        if ranks:
            shards[name] = ranks
            bad[name] = TensorStats(
                numel=p.numel(),
                dtype=str(local.dtype).removeprefix("torch."),
                shape=tuple(p.shape),
                nan=int(sum(counts[r][j][0] for r in ranks)),
                inf=int(sum(counts[r][j][1] for r in ranks)),
            )
    return bad, shards


def _in_shards(diagnosis: Diagnosis, shards: dict[str, list[int]]) -> Diagnosis:
    """Say which ranks' shards of the sharded parameters are non-finite."""
    if not shards:
        return diagnosis
    where = "; ".join(
        f"{name} in the shard of rank {', '.join(map(str, ranks))}"
        for name, ranks in list(shards.items())[:3]
    )
    return dataclasses.replace(
        diagnosis,
        message=f"{diagnosis.message} ({where})",
        evidence={**diagnosis.evidence, "shards": shards},
    )


def _on_every_rank(flag: bool, device: torch.device) -> bool:
    """``flag`` and-ed over the ranks of a distributed run (one all-reduce); as is alone."""
    if _rank_world()[1] == 1:
        return flag
    return _across_ranks(torch.tensor([0.0 if flag else 1.0], device=device)).item() == 0


def _stats(t: torch.Tensor) -> TensorStats:
    try:
        from nantrap.torch._tensor_stats import tensor_stats
    except ImportError:
        x = t.detach()
        return TensorStats(
            numel=x.numel(),
            dtype=str(x.dtype).removeprefix("torch."),
            shape=tuple(x.shape),
            nan=int(torch.isnan(x).sum()),
            inf=int(torch.isinf(x).sum()),
        )
    return tensor_stats(t)


def _eager() -> Any:
    """Run compiled models eagerly (localization traces eager ops)."""
    stance = getattr(torch.compiler, "set_stance", None)
    if stance is None:
        import contextlib

        return contextlib.nullcontext()
    return stance("force_eager")
