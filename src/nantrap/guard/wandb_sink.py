"""Guard records to the active Weights & Biases run (``wandb.init()`` first)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from nantrap.errors import ConfigError
from nantrap.guard.sinks import PREFIX, MetricSink

__all__ = ["WandbSink", "active_run"]

logger = logging.getLogger("nantrap")


def active_run(*, required: bool = True) -> Any:
    """``wandb.run``; a ConfigError when wandb is missing or no run is active (``required``)
    or None (not required: e.g. ranks > 0, where only rank 0 usually has a run)."""
    try:
        import wandb
    except ImportError:
        if not required:
            return None
        raise ConfigError(
            "guard option wandb=True: the wandb package is not installed; pip install wandb "
            "(or drop wandb=True)"
        ) from None
    run = getattr(wandb, "run", None)
    if run is None and required:
        raise ConfigError(
            "guard option wandb=True: no active W&B run; call wandb.init(...) before "
            "creating the guard"
        )
    return run


class WandbSink(MetricSink):
    """Logs against its own step axis ``nantrap/step`` (the guard's step, which goes back on
    a rollback), so it never fights the step counter of the user's own ``wandb.log``."""

    def __init__(self, run: Any):
        self.run = run
        run.define_metric(PREFIX + "step")
        run.define_metric(PREFIX + "*", step_metric=PREFIX + "step")
        logger.info("nantrap: logging guard metrics to W&B run %s", getattr(run, "name", run))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log({**values, PREFIX + "step": step})

    def text(self, step: int, tag: str, text: str) -> None:
        self.run.log({tag: text, PREFIX + "step": step})

    def close(self) -> None:
        """The run belongs to the user, who ends it (``wandb.finish()``): left open."""
