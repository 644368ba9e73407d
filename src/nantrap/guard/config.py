"""The guard's options, validated once: a wrong name or value is a ConfigError that lists
what is allowed, raised before training starts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nantrap.errors import ConfigError

__all__ = ["POLICIES", "SPIKE_ACTIONS", "GuardConfig"]

POLICIES = ("raise", "warn", "skip", "rollback", "stop")
SPIKE_ACTIONS = ("warn", "skip", "policy", "ignore")


@dataclass(frozen=True)
class GuardConfig:
    """Every knob of the guard. Defaults keep the per-step cost within ~3% of a plain step.

    policy: what to do on a non-finite step (``raise`` a NanTrapError, ``warn`` and let the
        update happen, ``skip`` the update, ``rollback`` to the last good snapshot and lower
        the LR, ``stop`` training with the last good state restored).
    lr_decay: LR multiplier applied on every rollback (1.0 keeps the LR).
    max_retries: rollbacks allowed before the guard stops; the count resets once training
        has passed the next snapshot after a rollback.
    snapshot_every / snapshot_keep: a ring of ``keep`` good states, one every ``every`` steps.
    log_dir: where ``events.jsonl`` (and repro bundles) go; None keeps events in memory.
    log_every: write a step record every this many steps (incident steps always).
    spike_sigma / spike_ratio / spike_warmup: a loss is a spike (NT302) when it is above the
        running mean by ``spike_sigma`` standard deviations AND ``spike_ratio`` times the
        mean, after ``spike_warmup`` steps.
    on_spike: ``warn`` (record NT302), ``skip`` the step, ``policy`` (treat as an incident),
        ``ignore``.
    ema_beta: decay of the loss statistics (0.98 ~ the last 50 steps).
    history: number of steps of grad-norm / weight-norm / update-ratio history kept.
    ratio_every: measure the update-to-weight ratio every this many steps (0: never).
    early_warnings: sample saturation and clip-trap checks every this many steps (0: off).
    localize: replay / trace the failing step to name the first bad op.
    bundle: write a repro bundle for incidents (at most ``max_bundles`` per run).
    check_inputs: check the model's floating inputs for NaN/Inf in a forward pre-hook.
    trace_steps: loop form B: after an incident, trace up to this many following steps.
    min_loss_scale: a GradScaler scale below this is reported as a precision problem.
    tensorboard: a directory for TensorBoard scalars and incident markers (True:
        ``<log_dir>/tb``; needs the tensorboard package); None/False: off.
    wandb: log the same to the active W&B run (``wandb.init()`` before the guard).
    async_snapshots: CUDA only: copy snapshots to pinned host memory on a side stream
        instead of synchronous copies (no host stall on snapshot steps). Off until it has
        been verified on GPU hardware; the CPU path is the same either way.
    """

    policy: str = "rollback"
    lr_decay: float = 0.5
    max_retries: int = 3
    snapshot_every: int = 50
    snapshot_keep: int = 2
    log_dir: str | None = None
    log_every: int = 50
    spike_sigma: float = 6.0
    spike_ratio: float = 2.0
    spike_warmup: int = 20
    on_spike: str = "warn"
    ema_beta: float = 0.98
    history: int = 64
    ratio_every: int = 10
    early_warnings: int = 100
    localize: bool = True
    bundle: bool = True
    max_bundles: int = 3
    check_inputs: bool = True
    trace_steps: int = 3
    min_loss_scale: float = 1.0
    tensorboard: str | bool | None = None
    wandb: bool = False
    async_snapshots: bool = False

    def __post_init__(self) -> None:
        _choice("policy", self.policy, POLICIES)
        _choice("on_spike", self.on_spike, SPIKE_ACTIONS)
        _number("lr_decay", self.lr_decay, lo=0.0, hi=1.0, lo_open=True)
        _number("ema_beta", self.ema_beta, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        _number("spike_sigma", self.spike_sigma, lo=0.0, lo_open=True)
        _number("spike_ratio", self.spike_ratio, lo=1.0)
        _number("min_loss_scale", self.min_loss_scale, lo=0.0)
        for name in ("snapshot_every", "snapshot_keep", "log_every", "history"):
            _integer(name, getattr(self, name), lo=1)
        for name in (
            "max_retries",
            "spike_warmup",
            "ratio_every",
            "early_warnings",
            "max_bundles",
            "trace_steps",
        ):
            _integer(name, getattr(self, name), lo=0)
        for name in ("localize", "bundle", "check_inputs", "wandb", "async_snapshots"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"guard option {name}={getattr(self, name)!r}: use True or False")
        if self.log_dir is not None and not isinstance(self.log_dir, str):
            object.__setattr__(self, "log_dir", _path_text(self.log_dir))
        if self.log_dir is not None:
            _folder("log_dir", self.log_dir)
        object.__setattr__(self, "tensorboard", self._tensorboard_dir())

    def _tensorboard_dir(self) -> str | None:
        value = self.tensorboard
        if value is None or value is False:
            return None
        if value is True:
            if self.log_dir is None:
                raise ConfigError(
                    "guard option tensorboard=True writes to <log_dir>/tb, but log_dir is None: "
                    "give log_dir=... or tensorboard='path/to/dir'"
                )
            return f"{self.log_dir}/tb"
        return _path_text(value, "tensorboard")

    @classmethod
    def from_options(cls, **options: Any) -> GuardConfig:
        """Build from keyword options; unknown names list the known ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(
                f"unknown guard option(s) {', '.join(unknown)}; allowed: {', '.join(names)}"
            )
        return cls(**options)

    def replace(self, **changes: Any) -> GuardConfig:
        return dataclasses.replace(self, **changes)

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> GuardConfig:
        return cls.from_options(**state)


def _folder(name: str, path: str) -> None:
    """``path`` is a folder or can become one: nothing on the way is a file."""
    import os

    at = path
    while at and not os.path.exists(at):
        parent = os.path.dirname(at)
        if parent == at:
            return
        at = parent
    if at and not os.path.isdir(at):
        where = "" if at == path else f" ({at} is)"
        raise ConfigError(f"guard option {name}={path!r}: a file, not a folder{where}")


def _path_text(value: Any, name: str = "log_dir") -> str:
    try:
        import os

        return os.fspath(value)
    except TypeError:
        raise ConfigError(f"guard option {name}={value!r}: use a path or None") from None


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"guard option {name}={value!r}; allowed: {', '.join(allowed)}")


def _integer(name: str, value: Any, *, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"guard option {name}={value!r}: use an integer >= {lo}")


def _number(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ConfigError(f"guard option {name}={value!r}: use a number in {span}")
