"""Facts about float formats that every engine needs: ranges and where results round.

The thresholds are where a well-behaved result *becomes* non-finite or exact in a format
(exp overflows above ``log(max)``; ``sigmoid(x)`` rounds to exactly 1.0 once ``exp(-x)``
is below half an ulp of 1). They are derived, not tuned; ``tests/test_floats.py`` checks
them against numpy (float16/32/64) and, where installed, torch (bfloat16).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["FORMATS", "FloatFormat", "float_format"]


@dataclass(frozen=True)
class FloatFormat:
    """One IEEE-like binary float format."""

    name: str
    bits: int
    mantissa_bits: int  # explicit fraction bits
    max: float
    tiny: float  # smallest positive normal
    smallest_subnormal: float

    @property
    def eps(self) -> float:
        """Distance from 1.0 to the next larger value."""
        return 2.0**-self.mantissa_bits

    @property
    def exp_overflow(self) -> float:
        """``exp(x)`` is ``inf`` for x above this."""
        return math.log(self.max)

    @property
    def exp_underflow(self) -> float:
        """``exp(x)`` is exactly 0 for x below this (half the smallest subnormal)."""
        return math.log(self.smallest_subnormal) - math.log(2.0)

    @property
    def sigmoid_one(self) -> float:
        """``sigmoid(x)`` rounds to exactly 1.0 for x above this.

        ``1 + exp(-x)`` rounds to 1 once ``exp(-x)`` is at most half an ulp of 1 (2**-(m+1)).
        """
        return (self.mantissa_bits + 1) * math.log(2.0)

    @property
    def sigmoid_zero(self) -> float:
        """``sigmoid(x)`` is exactly 0.0 for x below this (``exp(-x)`` overflows)."""
        return -self.exp_overflow

    def absorbs(self, eps: float, value: float = 1.0) -> bool:
        """True if ``value + eps == value`` in this format (the epsilon is lost)."""
        if eps == 0:
            return True
        return abs(eps) <= abs(value) * self.eps / 2

    def overflows(self, x: float) -> bool:
        return not math.isfinite(x) or abs(x) > self.max


def _ieee(name: str, bits: int, exp_bits: int, mant_bits: int) -> FloatFormat:
    bias = 2 ** (exp_bits - 1) - 1
    max_ = (2.0 - 2.0**-mant_bits) * 2.0**bias
    tiny = 2.0 ** (1 - bias)
    return FloatFormat(name, bits, mant_bits, max_, tiny, tiny * 2.0**-mant_bits)


FORMATS: dict[str, FloatFormat] = {
    f.name: f
    for f in (
        _ieee("float16", 16, 5, 10),
        _ieee("bfloat16", 16, 8, 7),
        _ieee("float32", 32, 8, 23),
        _ieee("float64", 64, 11, 52),
    )
}

_ALIASES = {
    "half": "float16",
    "fp16": "float16",
    "f16": "float16",
    "bf16": "bfloat16",
    "float": "float32",
    "fp32": "float32",
    "f32": "float32",
    "single": "float32",
    "double": "float64",
    "fp64": "float64",
    "f64": "float64",
}


def float_format(dtype: object) -> FloatFormat:
    """The format of a dtype given as a name or a framework dtype (``torch.float16``...).

    >>> float_format("torch.bfloat16").max
    3.3895313892515355e+38
    """
    text = str(getattr(dtype, "name", None) or dtype).lower()
    words = re.findall(r"[a-z0-9]+", text.replace("dtype", " "))
    text = next((w for w in reversed(words) if w in FORMATS or w in _ALIASES), text)
    text = _ALIASES.get(text, text)
    try:
        return FORMATS[text]
    except KeyError:
        raise ValueError(
            f"not a floating-point dtype: {dtype!r} (known: {', '.join(FORMATS)})"
        ) from None
