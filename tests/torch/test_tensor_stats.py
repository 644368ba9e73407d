"""tensor_stats / summarize: exact counts, finite min/max, one pass for the tracer."""

from __future__ import annotations

import math

import pytest
import torch

from nantrap.torch._tensor_stats import summarize, tensor_stats

INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_counts_and_finite_range(dtype):
    x = torch.tensor([0.0, 1.0, -2.0, NAN, INF, -INF, 1.0, 0.0, 3.5], dtype=dtype)
    s = tensor_stats(x.view(3, 3))
    assert (s.numel, s.shape, s.dtype) == (9, (3, 3), str(dtype).removeprefix("torch."))
    assert (s.min, s.max) == (-2.0, 3.5)
    assert (s.zeros, s.negatives, s.nan, s.inf, s.neg_inf, s.ones) == (2, 1, 1, 2, 1, 2)
    assert not s.finite and s.nonfinite == 3


def test_integer_bool_empty_and_all_nan():
    s = tensor_stats(torch.tensor([3, 0, -1, 1]))
    assert (s.min, s.max, s.zeros, s.negatives, s.ones, s.nan) == (-1, 3, 1, 1, 1, 0)
    b = tensor_stats(torch.tensor([True, False, True]))
    assert (b.zeros, b.ones, b.dtype) == (1, 2, "bool")
    assert tensor_stats(torch.empty(0, 4)).numel == 0
    n = tensor_stats(torch.full((4,), NAN))
    assert math.isnan(n.min) and n.nan == 4


def test_summary_is_exact_about_finiteness():
    assert summarize(torch.tensor([1.0, 2.0])).finite
    s = summarize(torch.tensor([1.0, -INF]))
    assert s.inf and not s.nan and s.min == -INF
    s = summarize(torch.tensor([1.0, NAN, INF]))
    assert s.nan and not s.finite
    assert summarize(torch.tensor([1, 2])).finite
    assert summarize(torch.tensor([1.0, INF], requires_grad=True) * 1).inf
