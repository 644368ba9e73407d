"""Cheap per-step detection: fused device reductions, one small tensor, one host fetch.

Everything a step is judged by (loss, total gradient norm, total weight norm, the sum of
the model's floating inputs, the previous update's size, the GradScaler scale, how many
weights and floating buffers are non-finite) is reduced on the device into one 1-D tensor
and fetched with a single ``tolist()``. The weight and buffer flags count tensors whose
float32 norm is not finite; a norm can also overflow for finite values (|w| ~ 1e18 x 1000:
squares past 3.4e38), so a non-zero count is confirmed exactly (``isfinite(t).all()``) on
that rare path only: large finite weights are not "non-finite". Under
``torch.distributed`` that tensor is all-reduced (MAX) first, so every rank sees the same
numbers and makes the same decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist

from nantrap.guard.engine import Observation

__all__ = ["Probe", "total_norm"]

_LOW = (torch.float16, torch.bfloat16)
# layout of the fetched vector
_LOSS, _GRAD, _PARAM, _INPUT, _RATIO, _SCALE, _BAD_PARAMS, _BAD_BUFFERS = range(8)


def norms(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The 2-norm of each tensor, stacked, in float32 (fp16 norms overflow at 65504): one
    fused launch per device and dtype. (float64 accumulation would not overflow, but
    ``_foreach_norm`` with a wider dtype is ~40x slower on CPU.)"""
    dense = [_local(t.coalesce()._values() if t.is_sparse else t) for t in tensors]
    each = torch._foreach_norm(dense, 2, dtype=torch.float32)
    if any(n.device != device for n in each):
        each = [n.to(device, non_blocking=True) for n in each]
    return torch.stack(each)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP2, tensor parallel); plain tensors as they are.

    NB: under sharding each rank then measures its own shards; the all-reduce in
    ``_across_ranks`` turns that into one verdict (any shard non-finite -> every rank sees
    it), and the norms in the history are the largest shard's, not the global norm.
    """
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


def total_norm(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """2-norm of all ``tensors`` together."""
    if not tensors:
        return torch.zeros((), device=device)
    return torch.linalg.vector_norm(norms(tensors, device))


def input_sum(t: torch.Tensor) -> torch.Tensor:
    """A finite sum iff ``t`` is finite (one reduction; float32 accumulation for halves)."""
    return t.detach().sum(dtype=torch.float32 if t.dtype in _LOW else None).float()


class Probe:
    """Measures one step; holds the pending update-ratio measurement between steps."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self._before: list[torch.Tensor] | None = None
        self._param_norm: torch.Tensor | None = None
        self._ratio: torch.Tensor | None = None
        self._consts: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def measure(
        self,
        params: Sequence[torch.Tensor],
        *,
        loss: torch.Tensor | float | None,
        inputs: Sequence[torch.Tensor] = (),
        scale: torch.Tensor | None = None,
        buffers: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    ) -> Observation:
        """The step's Observation, with exactly one device-to-host transfer.

        ``buffers``: (buffer now, its copy from the step's start) pairs; a floating buffer
        that this step made non-finite (BatchNorm's running_var overflowing in the forward)
        makes ``buffers_finite`` False. Buffers already non-finite at the step's start
        (an intentional -inf mask) do not count, nor, by the same test, one whose float32
        norm had already overflowed (its values past ~1e19); that one is caught when it
        reaches the loss or the gradients.
        """
        device = params[0].device if params else torch.device("cpu")
        grads = [p.grad for p in params if p.grad is not None]
        floating = [(b, s) for b, s in buffers if b.is_floating_point()]
        if device not in self._consts:
            nan = torch.full((), math.nan, device=device)
            self._consts[device] = (nan, torch.zeros((), device=device))
        nan, zero = self._consts[device]
        n_grads, n_params, n_bufs = len(grads), len(params), len(floating)
        # grads, weights and buffers (now and at the step's start) in one fused reduction
        each = norms(
            [*grads, *params, *(b for b, _ in floating), *(s for _, s in floating)], device
        )
        grad_norm = torch.linalg.vector_norm(each[:n_grads]) if grads else nan
        weights = each[n_grads : n_grads + n_params]
        param_norm = torch.linalg.vector_norm(weights)
        bad = ~torch.isfinite(each[n_grads + n_params :])
        went_bad = bad[:n_bufs] & ~bad[n_bufs:]
        parts = [
            _scalar(loss, device) if loss is not None else nan,
            grad_norm,
            param_norm,
            torch.stack([s.to(device) for s in inputs]).sum() if inputs else zero,
            self._ratio if self._ratio is not None else nan,
            scale.detach().float().reshape(()).to(device) if scale is not None else nan,
            (~torch.isfinite(weights)).sum().float(),
            went_bad.sum().float() if n_bufs else zero,
        ]
        self._param_norm = param_norm
        vec = _across_ranks(torch.stack([_local(part) for part in parts]))
        values = vec.tolist()  # the one host sync of the step
        self._ratio = None
        return Observation(
            loss=values[_LOSS],
            has_loss=loss is not None,
            grad_norm=values[_GRAD] if grads else 0.0,
            param_norm=values[_PARAM],
            inputs_finite=math.isfinite(values[_INPUT]),
            update_ratio=values[_RATIO],
            loss_scale=values[_SCALE],
            weights_finite=values[_BAD_PARAMS] == 0 or _confirm_finite(params, [], device),
            buffers_finite=values[_BAD_BUFFERS] == 0 or _confirm_finite([], floating, device),
        )

    def before_update(self, params: Sequence[torch.Tensor], *, sample_ratio: bool) -> None:
        """Keep a copy of the weights when this update's size is to be measured."""
        self._before = torch._foreach_mul(list(params), 1.0) if sample_ratio and params else None

    def after_update(self, params: Sequence[torch.Tensor]) -> None:
        """Queue ``|w_new - w_old| / |w_old|`` for the next step's fetch (no sync now)."""
        if self._before is None or self._param_norm is None:
            return
        diff = torch._foreach_sub(list(params), self._before)
        self._before = None
        self._ratio = total_norm(diff, self._param_norm.device) / self._param_norm

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        self._before = self._ratio = self._param_norm = None


def _confirm_finite(
    tensors: Sequence[torch.Tensor],
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> bool:
    """Exact check behind a non-zero count (a norm overflowed, or a value is non-finite):
    all ``tensors`` finite, and no buffer of ``pairs`` (now, at the step's start) turned
    non-finite. Rare path: one more fetch, all-reduced so every rank decides alike."""

    def finite(t: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(_local(t.coalesce()._values() if t.is_sparse else t)).all()

    flags = [finite(t) for t in tensors]
    flags += [finite(now) | ~finite(start) for now, start in pairs]
    if not flags:
        return True
    bad = torch.stack([(~f).to(device) for f in flags]).sum().float().reshape(1)
    return _across_ranks(bad).item() == 0


def _scalar(value: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().float().reshape(-1)[0].to(device)
    return torch.tensor(float(value), device=device)


def _across_ranks(vec: torch.Tensor) -> torch.Tensor:
    """All-reduce MAX so every rank decides alike; non-finite entries survive the reduce
    as flags (NaN has no defined MAX), finite values are the maximum over ranks."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return vec
    bad = ~torch.isfinite(vec)
    both = torch.cat([bad.float(), torch.nan_to_num(vec, nan=0.0, posinf=0.0, neginf=0.0)])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    flags, values = both.chunk(2)
    return torch.where(flags > 0, torch.full_like(values, math.nan), values)
