"""Early warnings before any NaN, sampled every N steps: saturation, the clip trap, targets.

On a sampled step a light dispatch mode watches only the ops that matter (sigmoid, tanh,
softmax, clamp, log) and module forward hooks record per-module output ranges; every other
op passes straight through. Unsampled steps cost one boolean test in a forward pre-hook.

- saturation (NT203 sigmoid/tanh, NT204 softmax): outputs exactly at their bounds in the
  dtype, with the fraction, the module and the pre-activation range against the dtype's
  threshold (sigmoid is exactly 1.0 above 16.64 in float32).
- clip trap (NT102 when the clamp feeds a log, NT303 otherwise): a tensor hook on the clamp
  output sees the gradient the loss sends to the clipped elements; the clamp passes back
  exactly 0 there, so that part of the loss is not optimized.
- binary targets (NT402): binary_cross_entropy targets outside [0, 1] give a loss with no
  minimum; the loss stays finite while the logits run away, so only a warning sees it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nantrap.findings import Diagnosis, Location, Phase, Severity
from nantrap.floats import FloatFormat, float_format
from nantrap.torch._tensor_stats import dtype_name
from nantrap.torch.trace import _FrameFilter, exit_mode, named_modules

__all__ = ["EarlyWarnings"]

aten = torch.ops.aten
_SATURATING = {aten.sigmoid: "sigmoid", aten.tanh: "tanh", aten._softmax: "softmax"}
_CLAMPS = {aten.clamp, aten.clip, aten.clamp_min, aten.clamp_max}
_LOGS = {aten.log, aten.log2, aten.log10, aten.log1p}
_BINARY_LOSSES = {aten.binary_cross_entropy, aten.binary_cross_entropy_with_logits}
_WATCHED = {*_SATURATING, *_CLAMPS, *_LOGS, *_BINARY_LOSSES}


@dataclass
class _Site:
    """One op call site watched on a sampled step (tensors only until end_step)."""

    kind: str  # sigmoid | tanh | softmax | clamp | target
    module: str | None
    path: str | None
    line: int | None
    dtype: str
    numel: int
    counts: torch.Tensor  # device tensor, read once at end_step
    feeds_log: bool = False
    key: tuple = ()


class EarlyWarnings:
    """Sampled saturation and clip-trap warnings for ``model``.

    Args:
        model: the model whose root forward starts a sampled step.
        every: sample one step in ``every`` (step 0 is sampled).
        saturation: warn when more than this fraction of a sigmoid/tanh/softmax output is
            exactly at its bound.
        clip: warn when more than this fraction of a clamp's elements is clipped while the
            loss sends them a non-zero gradient.
        root: the name of ``model`` in module paths.
        modules: ``(path, module)`` pairs whose forward names what they run and whose output
            range is recorded, instead of ``model.named_modules()`` (see ``OpTrace``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        every: int = 50,
        saturation: float = 0.01,
        clip: float = 0.01,
        root: str = "model",
        modules: Iterable[tuple[str, torch.nn.Module]] | None = None,
    ):
        from nantrap.errors import ConfigError

        if not isinstance(model, torch.nn.Module):
            raise ConfigError(
                f"EarlyWarnings(model=...) needs a torch.nn.Module, got {type(model).__name__}"
            )
        if not isinstance(every, int) or every < 1:
            raise ConfigError(f"EarlyWarnings(every={every!r}): must be an int >= 1")
        for name, value in (("saturation", saturation), ("clip", clip)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"EarlyWarnings({name}={value!r}): a fraction in [0, 1)")
        self.model = model
        self.every = every
        self.saturation = saturation
        self.clip = clip
        self.root = root
        self._module_paths = None if modules is None else list(modules)
        self.ranges: dict[str, dict] = {}
        self._due = True
        self._mode: _WarnMode | None = None
        self._sites: list[_Site] = []
        self._range_stats: dict[str, torch.Tensor] = {}
        self._module_stack: list[str] = []
        self._sample_hooks: list[Any] = []
        self._frames = _FrameFilter()
        self._pending: list[tuple[weakref.ref, torch.Tensor, torch.Tensor]] = []
        self._root_hook = model.register_forward_pre_hook(self._on_root_forward)

    # state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"due": self._due, "ranges": dict(self.ranges)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._due = bool(state["due"])
        self.ranges = dict(state["ranges"])

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """No sample starts inside (a replay of a step is not a training step)."""
        due, self._due = self._due, False
        try:
            yield
        finally:
            self._due = due

    # protocol ---------------------------------------------------------------------------
    @property
    def sampling(self) -> bool:
        return self._mode is not None

    def end_step(self, step: int) -> list[Diagnosis]:
        """Once per optimizer step, after backward: this step's warnings if it was sampled;
        arms sampling of the next step when due."""
        warnings: list[Diagnosis] = []
        if self._mode is not None:
            warnings = self._collect(step)
        self._due = (step + 1) % self.every == 0
        return warnings

    def close(self) -> None:
        self._stop()
        self._root_hook.remove()

    # sampling ---------------------------------------------------------------------------
    def _on_root_forward(self, module: torch.nn.Module, args: Any) -> None:
        if not self._due or self._mode is not None or not torch.is_grad_enabled():
            return  # NB: an evaluation forward under no_grad is not a training step
        self._due = False
        for path, sub in named_modules(self.model, self.root, self._module_paths):
            if sub is not self.model:
                self._sample_hooks.append(sub.register_forward_pre_hook(self._push(path)))
            self._sample_hooks.append(
                sub.register_forward_hook(self._pop_and_range(path), always_call=True)
            )
        self._module_stack = [self.root]
        self._mode = _WarnMode(self)
        self._mode.__enter__()

    def _push(self, path: str):
        def hook(module: torch.nn.Module, args: Any) -> None:
            self._module_stack.append(path)

        return hook

    def _pop_and_range(self, path: str):
        def hook(module: torch.nn.Module, args: Any, out: Any) -> None:
            if self._mode is None:
                return  # a hook torch was iterating when the sample was dropped
            if module is self.model and out is None and sys.exc_info()[0] is not None:
                self._drop_sample()  # the forward raised (always_call runs this hook)
                return
            if self._module_stack:
                self._module_stack.pop()
            tensors = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
            if tensors and tensors[0].is_floating_point() and tensors[0].numel():
                with torch.no_grad(), _paused(self):
                    # one pass; a NaN anywhere makes the range NaN, which is the news
                    low, high = torch.aminmax(tensors[0].detach())
                    self._range_stats[path] = torch.stack([low.float(), high.float()])

        return hook

    def _stop(self) -> None:
        if self._mode is not None:
            mode, self._mode = self._mode, None
            exit_mode(mode)
        for hook in self._sample_hooks:
            hook.remove()
        self._sample_hooks.clear()
        self._module_stack.clear()

    def _drop_sample(self) -> None:
        """The sampled forward raised: exit the dispatch mode now (the ``end_step`` that
        would exit it may never come: a run abandoned after the error would keep every
        later op of the process going through the mode) and sample the next forward
        instead. Torch is iterating the root's forward hooks: its sampling hook stays
        (inert) until the next ``_stop``; the others go now."""
        if self._mode is not None:
            mode, self._mode = self._mode, None
            exit_mode(mode)
        root = self.model._forward_hooks
        stay = [h for h in self._sample_hooks if h.hooks_dict_ref() is root]
        for hook in self._sample_hooks:
            if all(hook is not s for s in stay):
                hook.remove()
        self._sample_hooks = stay
        self._module_stack.clear()
        self._sites, self._range_stats, self._pending = [], {}, []
        self._due = True

    def _collect(self, step: int) -> list[Diagnosis]:
        self._stop()
        sites, self._sites = self._sites, []
        range_stats, self._range_stats = self._range_stats, {}
        out: list[Diagnosis] = []
        worst: dict[str, float] = {}
        for site in sites:
            values = site.counts.tolist()
            if site.kind == "clamp":
                d = self._clip_warning(site, values, step)
            elif site.kind == "target":
                d = self._target_warning(site, values, step)
            else:
                frac = values[0] / site.numel
                if site.module:
                    worst[site.module] = max(worst.get(site.module, 0.0), frac)
                d = self._saturation_warning(site, values, frac, step)
            if d is not None:
                out.append(d)
        self.ranges = {
            path: {"min": v[0], "max": v[1], "saturated": worst.get(path, 0.0)}
            for path, t in range_stats.items()
            for v in [t.tolist()]
        }
        return out

    def _saturation_warning(self, site: _Site, values: list, frac: float, step: int):
        if frac <= self.saturation:
            return None
        n_bound, low, high = int(values[0]), values[1], values[2]
        fmt = float_format(site.dtype)
        where = _where(site)
        if site.kind == "softmax":
            code = "NT204"
            message = (
                f"softmax in {where}: {frac:.1%} of outputs ({n_bound} of {site.numel}) are "
                f"exactly 0 in {fmt.name}; logits span [{low:.4g}, {high:.4g}] and exp "
                f"underflows below {fmt.exp_underflow:.2f}, so log of these is -inf"
            )
            threshold = fmt.exp_underflow
        else:
            code = "NT203"
            threshold = fmt.sigmoid_one if site.kind == "sigmoid" else _tanh_one(fmt)
            bounds = "0 or 1" if site.kind == "sigmoid" else "-1 or 1"
            message = (
                f"{site.kind} in {where}: {frac:.1%} of outputs ({n_bound} of {site.numel}) "
                f"are exactly {bounds} in {fmt.name}; pre-activations reach "
                f"[{low:.4g}, {high:.4g}], beyond ±{threshold:.2f} where {site.kind} "
                "saturates: those units pass no gradient"
            )
        return _diagnosis(
            site,
            code,
            message,
            step,
            {
                "fraction": frac,
                "saturated": n_bound,
                "numel": site.numel,
                "pre_min": low,
                "pre_max": high,
                "threshold": threshold,
                "dtype": fmt.name,
            },
        )

    def _clip_warning(self, site: _Site, values: list, step: int):
        clipped, blocked = int(values[0]), int(values[1])
        if not len(values) > 2 or values[2] == 0:  # the hook never fired: not on the loss path
            return None
        frac, blocked_frac = clipped / site.numel, blocked / site.numel
        if blocked_frac <= self.clip:
            return None
        code = "NT102" if site.feeds_log else "NT303"
        target = "log" if site.feeds_log else "loss"
        message = (
            f"clamp in {_where(site)} clips {frac:.1%} of its input ({clipped} of "
            f"{site.numel}); {blocked} of those ({blocked_frac:.1%} of all) get a non-zero "
            f"gradient from the {target} but the clamp passes back exactly 0: the loss there "
            "is not being optimized"
        )
        return _diagnosis(
            site,
            code,
            message,
            step,
            {
                "clipped": clipped,
                "clipped_fraction": frac,
                "blocked": blocked,
                "blocked_fraction": blocked_frac,
                "numel": site.numel,
                "feeds_log": site.feeds_log,
            },
        )

    def _target_warning(self, site: _Site, values: list, step: int):
        """Binary cross-entropy targets outside [0, 1]: the loss has no minimum there."""
        from nantrap.guard.diagnose import OpRecord, diagnose
        from nantrap.guard.stats import TensorStats

        low, high = values
        if low >= 0.0 and high <= 1.0:
            return None
        op = site.key[0]
        record = OpRecord(
            op=op,
            neutral_op=op.split(".")[1],
            phase=Phase.FORWARD,
            module=site.module,
            path=site.path,
            line=site.line,
            source_line=_source_line(site),
            dtype=site.dtype,
            inputs=(
                TensorStats(site.numel, site.dtype),
                TensorStats(site.numel, site.dtype, min=low, max=high),
            ),
        )
        found = diagnose(record, step=step)
        return dataclasses.replace(found, severity=Severity.WARNING, incident=False)

    # called by the mode --------------------------------------------------------------------
    def _watch(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        packet = func.overloadpacket
        if packet in _LOGS:
            key = _key(args[0])
            for site in self._sites:
                if site.kind == "clamp" and site.key == key:
                    site.feeds_log = True
            return
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or not out.numel():
            return
        x = args[0]
        path, line = self._frames.user_frame()
        module = self._module_stack[-1] if self._module_stack else None
        site_args = dict(
            module=module, path=path, line=line, dtype=dtype_name(out.dtype), numel=out.numel()
        )
        if packet in _BINARY_LOSSES:
            target = args[1]
            counts = torch.stack([t.float() for t in torch.aminmax(target.detach())])
            site_args.update(numel=target.numel(), dtype=dtype_name(target.dtype))
            self._sites.append(_Site("target", counts=counts, key=(str(func),), **site_args))
            return
        if packet in _SATURATING:
            kind = _SATURATING[packet]
            if kind == "softmax":
                at_bound = (out == 0) & torch.isfinite(x)  # NB: -inf mask lanes are intended
            elif kind == "sigmoid":
                at_bound = (out == 0) | (out == 1)
            else:
                at_bound = out.abs() == 1
            if kind == "softmax":  # the logit range without the -inf mask lanes
                finite = torch.isfinite(x)
                low = torch.where(finite, x, math.inf).amin()
                high = torch.where(finite, x, -math.inf).amax()
            else:
                low, high = torch.aminmax(x)
            counts = torch.stack([at_bound.sum().float(), low.float(), high.float()])
            self._sites.append(_Site(kind, counts=counts, **site_args))
            return
        if packet in _CLAMPS:
            clipped = (out != x) & ~x.isnan()
            counts = torch.zeros(3, device=out.device)
            counts[0] = clipped.sum()
            site = _Site("clamp", counts=counts, key=_key(out), **site_args)
            self._sites.append(site)
            self._pending.append((weakref.ref(out), clipped, counts))

    def _resolve_pending(self) -> None:
        keep = []
        for ref, clipped, counts in self._pending:
            t = ref()
            if t is None:
                continue
            if t.requires_grad and t.grad_fn is not None:
                t.register_hook(_blocked_counter(clipped, counts))
            elif len(keep) < 64:
                keep.append((ref, clipped, counts))
        self._pending = keep


def _blocked_counter(clipped: torch.Tensor, counts: torch.Tensor):
    def hook(grad: torch.Tensor) -> None:
        with torch.no_grad():
            counts[1] += (clipped & (grad != 0)).sum()
            counts[2] += 1

    return hook


class _WarnMode(TorchDispatchMode):
    def __init__(self, owner: EarlyWarnings):
        super().__init__()
        self.owner = owner
        owner._pending = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        owner = self.owner
        if owner._pending:
            owner._resolve_pending()
        packet = func.overloadpacket
        if (
            packet in _SATURATING
            or packet in _CLAMPS
            or packet in _LOGS
            or packet in _BINARY_LOSSES
        ):
            owner._watch(func, args, kwargs, out)
        return out


class _paused:
    """Run bookkeeping ops outside the sampling mode."""

    def __init__(self, owner: EarlyWarnings):
        self.owner = owner
        self._ctx = None

    def __enter__(self):
        from torch.utils._python_dispatch import _disable_current_modes

        self._ctx = _disable_current_modes() if self.owner._mode is not None else None
        if self._ctx is not None:
            self._ctx.__enter__()

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


def _key(t: Any) -> tuple:
    if not isinstance(t, torch.Tensor) or not t.numel():
        return ()
    return (t.device.type, t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _tanh_one(fmt: FloatFormat) -> float:
    """tanh(x) rounds to exactly 1.0 once 2*exp(-2x) is below half an ulp under 1."""
    return (fmt.mantissa_bits + 2) * math.log(2.0) / 2


def _where(site: _Site) -> str:
    text = site.module or "the loss"
    if site.path:
        import os

        text += f" ({os.path.basename(site.path)}:{site.line})"
    return text


def _source_line(site: _Site) -> str | None:
    if not (site.path and site.line):
        return None
    import linecache

    return linecache.getline(site.path, site.line).strip() or None


def _diagnosis(site: _Site, code: str, message: str, step: int, evidence: dict) -> Diagnosis:
    from nantrap.traps import get_trap

    op = "aten.clamp" if site.kind == "clamp" else f"aten.{site.kind}"
    neutral = "clip" if site.kind == "clamp" else site.kind
    return Diagnosis(
        code=code,
        message=message,
        location=Location(
            path=site.path,
            line=site.line,
            source_line=_source_line(site),
            module=site.module,
            op=op,
            neutral_op=neutral,
            phase=Phase.FORWARD,
            step=step,
        ),
        severity=Severity.WARNING,
        evidence=evidence,
        fix=" ".join(get_trap(code).fix.split()),
        incident=False,
    )
