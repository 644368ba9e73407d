"""TensorStats from a TensorFlow tensor or a numpy array (numpy only: no TF op is run)."""

from __future__ import annotations

import math

import numpy as np

from nantrap.guard.stats import TensorStats


def as_array(value) -> np.ndarray | None:
    """The value as a numpy array if it holds floating-point data, else None."""
    dtype = getattr(value, "dtype", None)
    floating = getattr(dtype, "is_floating", None)  # a tf.DType
    if floating is None:
        try:
            floating = np.issubdtype(np.dtype(dtype), np.floating)
        except TypeError:
            return None
    if not floating:
        return None
    try:
        arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    except Exception:  # a symbolic tensor: not data
        return None
    if not np.issubdtype(arr.dtype, np.floating):  # bfloat16 and friends
        arr = arr.astype(np.float32)
    return arr


def is_finite(arr: np.ndarray) -> bool:
    """True if every element is finite (one pass, no temporaries beyond a sum)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.isfinite(arr.sum(dtype=np.float64) * 0.0)) or bool(np.isfinite(arr).all())


def tensor_stats(value) -> TensorStats:
    """min/max over finite elements and the counts that matter (zeros, ones, NaN, Inf)."""
    arr = np.asarray(value)
    name = getattr(getattr(value, "dtype", None), "name", None) or str(arr.dtype)
    flat = arr.reshape(-1)
    if not np.issubdtype(flat.dtype, np.floating):
        flat = flat.astype(np.float64)
    finite = np.isfinite(flat)
    vals = flat[finite]
    nan = int(np.isnan(flat).sum())
    inf = int(flat.size - finite.sum() - nan)
    return TensorStats(
        numel=int(flat.size),
        dtype=name,
        shape=tuple(int(d) for d in arr.shape),
        min=float(vals.min()) if vals.size else math.nan,
        max=float(vals.max()) if vals.size else math.nan,
        zeros=int((vals == 0).sum()),
        negatives=int((vals < 0).sum()),
        nan=nan,
        inf=inf,
        neg_inf=int(np.isneginf(flat).sum()),
        ones=int((vals == 1).sum()),
    )
