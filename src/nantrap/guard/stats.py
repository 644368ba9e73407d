"""Summary statistics of a tensor, as plain numbers: the evidence in every runtime finding."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["TensorStats"]


@dataclass(frozen=True)
class TensorStats:
    """min/max over the finite elements, and counts of the values that matter for NaN hunts.

    Framework edges build it (``nantrap.torch`` from a torch tensor, ``nantrap.keras`` from a
    tf tensor); everything above the edge reads only these numbers.
    """

    numel: int
    dtype: str
    shape: tuple[int, ...] = ()
    min: float = math.nan  # over finite elements; nan when there are none
    max: float = math.nan
    zeros: int = 0
    negatives: int = 0  # finite values < 0 (and -inf counted under ``inf``)
    nan: int = 0
    inf: int = 0  # +inf and -inf together
    neg_inf: int = 0
    ones: int = 0  # exactly 1.0: saturated sigmoid/softmax outputs

    @property
    def finite(self) -> bool:
        return self.nan == 0 and self.inf == 0

    @property
    def nonfinite(self) -> int:
        return self.nan + self.inf

    def describe(self) -> str:
        """``float32[64,10] min -3.2 max 41.0, 37 zeros, 2 NaN, 1 Inf`` (counts only if > 0)."""
        shape = ",".join(map(str, self.shape))
        text = f"{self.dtype}[{shape}]"
        if not math.isnan(self.min):
            text += f" min {self.min:.4g} max {self.max:.4g}"
        counts = [(self.zeros, "zeros"), (self.negatives, "negative"), (self.nan, "NaN"),
                  (self.inf, "Inf")]
        extra = [f"{n} {label}" for n, label in counts if n]
        return text + (", " + ", ".join(extra) if extra else "")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        for key in ("min", "max"):
            if math.isnan(data[key]):
                data[key] = None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorStats:
        data = dict(data)
        data["shape"] = tuple(data.get("shape", ()))
        for key in ("min", "max"):
            if data.get(key) is None:
                data[key] = math.nan
        return cls(**data)
