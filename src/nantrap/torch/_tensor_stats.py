"""torch tensor -> :class:`~nantrap.guard.stats.TensorStats`, and the cheap summary the tracer
takes of every op output."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from nantrap.guard.stats import TensorStats

__all__ = ["Summary", "dtype_name", "local_tensor", "summarize", "tensor_stats"]

_INF = math.inf
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP2, tensor parallel); any other tensor as it is.

    Reading the shard needs no collective, so every rank may do it on its own: the stats
    of a DTensor are those of this rank's shard."""
    if type(t) in _PLAIN:
        return t
    local = getattr(t, "_local_tensor", None)
    return local if isinstance(local, torch.Tensor) else t


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")


def tensor_stats(t: torch.Tensor) -> TensorStats:
    """Full evidence for one tensor: min/max over finite elements and the counts that matter.

    All reductions are stacked and read back with a single host sync.

    >>> tensor_stats(torch.tensor([0.0, 1.0, float("nan")])).describe()
    'float32[3] min 0 max 1, 1 zeros, 1 NaN'
    """
    t = local_tensor(t)
    dtype, shape, numel = dtype_name(t.dtype), tuple(t.shape), t.numel()
    if numel == 0:
        return TensorStats(0, dtype, shape)
    with torch.no_grad():
        x = t.detach()
        if x.is_complex():
            x = x.abs()
        if x.dtype == torch.bool:
            x = x.to(torch.uint8)
        if x.is_floating_point():
            nan = x.isnan()
            pos_inf, neg_inf = x == _INF, x == -_INF
            finite = ~(nan | pos_inf | neg_inf)
            low = torch.where(finite, x, _INF).amin().double()
            high = torch.where(finite, x, -_INF).amax().double()
            counts = [nan.sum(), pos_inf.sum(), neg_inf.sum()]
        else:
            low, high = x.amin().double(), x.amax().double()
            zero = torch.zeros((), dtype=torch.int64, device=x.device)
            counts = [zero, zero, zero]
        counts += [(x == 0).sum(), (x < 0).sum(), (x == 1).sum()]
        values = torch.stack([low, high, *(c.double() for c in counts)]).tolist()
    low, high, n_nan, n_pos, n_neg, zeros, negatives, ones = values
    if low == _INF:  # no finite element
        low = high = math.nan
    return TensorStats(
        numel=numel,
        dtype=dtype,
        shape=shape,
        min=low,
        max=high,
        zeros=int(zeros),
        negatives=int(negatives) - int(n_neg),
        nan=int(n_nan),
        inf=int(n_pos) + int(n_neg),
        neg_inf=int(n_neg),
        ones=int(ones),
    )


class Summary(NamedTuple):
    """What the tracer keeps of every op output: one fused pass (aminmax), one sync.

    ``min``/``max`` include infinities; ``nan`` is True if any element is NaN. NaN
    propagates through aminmax, so a finite min and max prove the tensor finite.
    """

    min: float
    max: float
    nan: bool
    inf: bool

    @property
    def finite(self) -> bool:
        return not (self.nan or self.inf)


CLEAN = Summary(0.0, 0.0, False, False)


def summarize(t: torch.Tensor) -> Summary:
    """Cheap finiteness summary: one aminmax pass, one sync.

    Exact about finiteness. When NaN is present, min/max are NaN and ``inf`` is left False
    (unknown): the tracer's path walk needs only "NaN or not", and a second pass over
    every NaN tensor of a poisoned step would double its cost.
    """
    t = local_tensor(t)
    if t.numel() == 0 or not (t.is_floating_point() or t.is_complex()):
        return CLEAN
    with torch.no_grad():
        x = t.detach()
        if x.is_complex():
            x = x.abs()
        low, high = (float(v) for v in torch.stack(torch.aminmax(x)).tolist())
    if math.isnan(low) or math.isnan(high):
        return Summary(math.nan, math.nan, True, False)
    return Summary(low, high, False, math.isinf(low) or math.isinf(high))
