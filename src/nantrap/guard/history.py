"""Running statistics of a run: the loss EMA for spikes (NT302) and the recent history of
gradient norm, weight norm, update-to-weight ratio and LR that a divergence verdict
(NT301) quotes."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["EMA", "History", "Spike"]


class EMA:
    """Exponential moving mean and variance (West's update), bias-corrected."""

    def __init__(self, beta: float = 0.98):
        self.beta = beta
        self.mean = 0.0
        self.var = 0.0
        self.count = 0

    def update(self, x: float) -> None:
        if self.count == 0:
            self.mean, self.var = x, 0.0
        else:
            a = 1.0 - self.beta
            delta = x - self.mean
            self.mean += a * delta
            self.var = (1.0 - a) * (self.var + a * delta * delta)
        self.count += 1

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self.beta, "mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])
        self.mean = float(state["mean"])
        self.var = float(state["var"])
        self.count = int(state["count"])


@dataclass(frozen=True)
class Spike:
    """A finite loss far above its running statistics."""

    loss: float
    mean: float
    std: float

    @property
    def sigmas(self) -> float:
        return (self.loss - self.mean) / self.std if self.std > 0 else math.inf

    @property
    def ratio(self) -> float:
        return self.loss / self.mean if self.mean > 0 else math.inf


_SERIES = ("step", "loss", "grad_norm", "param_norm", "lr")


class History:
    """The last ``window`` steps of a run, plus the loss EMA.

    ``observe`` is called once per applied step with host floats (``nan`` where unknown);
    update-to-weight ratios arrive separately because they are sampled.
    """

    def __init__(self, window: int = 64, beta: float = 0.98):
        self.window = window
        self.loss_ema = EMA(beta)
        self.series: dict[str, deque[float]] = {k: deque(maxlen=window) for k in _SERIES}
        self.ratios: deque[tuple[int, float]] = deque(maxlen=window)
        self._rising = 0  # consecutive steps on which the weight norm grew

    def __len__(self) -> int:
        return len(self.series["step"])

    def observe(
        self,
        step: int,
        *,
        loss: float = math.nan,
        grad_norm: float = math.nan,
        param_norm: float = math.nan,
        lr: float = math.nan,
    ) -> None:
        norms = self.series["param_norm"]
        grew = bool(norms) and math.isfinite(param_norm) and param_norm > norms[-1] > 0
        self._rising = self._rising + 1 if grew else 0
        for key, value in zip(_SERIES, (step, loss, grad_norm, param_norm, lr), strict=True):
            self.series[key].append(value)
        if math.isfinite(loss):
            self.loss_ema.update(loss)

    def observe_ratio(self, step: int, ratio: float) -> None:
        self.ratios.append((step, ratio))

    def truncate(self, step: int) -> None:
        """Forget steps >= ``step`` (a rollback returned to the state before ``step``); the
        loss statistics are rebuilt from what is left."""
        keep = [i for i, s in enumerate(self.series["step"]) if s < step]
        self.series = {
            k: deque((v[i] for i in keep), maxlen=self.window) for k, v in self.series.items()
        }
        self.ratios = deque(((s, r) for s, r in self.ratios if s < step), maxlen=self.window)
        self._rising = 0
        self.loss_ema = EMA(self.loss_ema.beta)
        for loss in self.series["loss"]:
            if math.isfinite(loss):
                self.loss_ema.update(loss)

    def weights_growing(self, steps: int = 8, factor: float = 3.0) -> bool:
        """True when the weight norm rose on each of the last ``steps`` steps and by
        ``factor`` in total: the cheap per-step trigger for a divergence check."""
        norms = self.series["param_norm"]
        if self._rising < steps or len(norms) <= steps:
            return False
        return norms[-1] >= factor * norms[-steps - 1]

    def rising(self, key: str) -> tuple[int, float]:
        """(steps, factor): on how many of the newest steps in a row series ``key`` (loss,
        param_norm) grew, and by what factor over them; (0, 1.0) when it did not grow or
        started from a value <= 0 (a log-likelihood loss can be negative)."""
        values = self.series[key]
        steps = 0
        for i in range(len(values) - 1, 0, -1):
            if not (math.isfinite(values[i]) and values[i] > values[i - 1] > 0):
                break
            steps += 1
        if steps == 0:
            return 0, 1.0
        return steps, values[-1] / values[-1 - steps]

    def spike(self, loss: float, *, sigma: float, ratio: float, warmup: int) -> Spike | None:
        """The spike that ``loss`` would be against the statistics so far, or None."""
        ema = self.loss_ema
        if not math.isfinite(loss) or ema.count < max(warmup, 2):
            return None
        candidate = Spike(loss=loss, mean=ema.mean, std=ema.std)
        above = loss - ema.mean
        if above > sigma * ema.std and above > (ratio - 1.0) * abs(ema.mean):
            return candidate
        return None

    def last(self, key: str, *, finite: bool = True) -> float | None:
        """The newest value of a series (the newest finite one by default)."""
        values = self.ratios if key == "update_ratio" else self.series[key]
        for value in reversed(values):
            value = value[1] if key == "update_ratio" else value
            if not finite or math.isfinite(value):
                return value
        return None

    def finite(self, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of a series with finite values, oldest first."""
        if key == "update_ratio":
            return [(s, v) for s, v in self.ratios if math.isfinite(v)]
        steps = self.series["step"]
        return [
            (int(s), v) for s, v in zip(steps, self.series[key], strict=True) if math.isfinite(v)
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "loss_ema": self.loss_ema.state_dict(),
            "series": {k: list(v) for k, v in self.series.items()},
            "ratios": [list(p) for p in self.ratios],
            "rising": self._rising,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window = int(state["window"])
        self.loss_ema.load_state_dict(state["loss_ema"])
        self.series = {
            k: deque((float(x) for x in state["series"][k]), maxlen=self.window) for k in _SERIES
        }
        self.ratios = deque(((int(s), float(r)) for s, r in state["ratios"]), maxlen=self.window)
        self._rising = int(state.get("rising", 0))
