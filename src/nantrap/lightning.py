"""``nantrap.lightning.NanTrap``: the training guard as a Lightning callback.

    trainer = lightning.Trainer(callbacks=[NanTrap(policy="rollback")])

At fit start every optimizer of the module is guarded with ``nantrap.torch.guard`` (the
guard swaps the optimizer's class, so Lightning's own ``optimizer.step(closure=...)`` runs
it in the closure form: an incident is replayed under op tracing and localized). The
callback wires in what Lightning owns:

- LR schedulers from ``configure_optimizers`` are snapshotted and rolled back with the
  optimizer;
- precision plugins: under ``16-mixed`` the plugin's ``GradScaler`` is handed to the guard
  (its skipped steps and a collapsing scale are watched); ``bf16-mixed`` / ``*-true`` need
  nothing extra;
- gradient accumulation: the guard judges each real optimizer step, so a NaN in any
  micro-batch of the window drops (or rolls back) the whole accumulated update, and the
  incident is reported at the optimizer step with the batch index that completed it;
- ``policy="stop"`` ends the fit cleanly (``trainer.should_stop``); ``"raise"`` raises
  ``NanTrapError`` out of ``fit``.

Events go to ``log_dir`` (default ``<trainer.log_dir or default_root_dir>/nantrap``);
``nantrap report`` renders them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

import nantrap.torch as nt

__all__ = ["NanTrap"]

log = logging.getLogger("nantrap")


class NanTrap(pl.Callback):
    """Guard every optimizer of the LightningModule against NaN/Inf (see module doc)."""

    def __init__(self, policy: str = "rollback", log_dir: str | Path | None = None, **options):
        self.policy = policy
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.options = options
        self.optimizers: list[Any] = []
        self._diagnoses: list[Any] = []
        self._seen: dict[int, int] = {}  # id(optimizer) -> diagnoses already collected

    # -- lifecycle --------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = self.log_dir or Path(trainer.log_dir or trainer.default_root_dir) / "nantrap"
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        schedulers = [cfg.scheduler for cfg in trainer.lr_scheduler_configs]
        for i, opt in enumerate(trainer.optimizers):
            if getattr(opt, "_nantrap_guard", None) is not None:
                continue  # guarded already (a previous fit of this trainer)
            mine = [s for s in schedulers if getattr(s, "optimizer", None) is opt]
            nt.guard(
                opt,
                pl_module,
                policy=self.policy,
                log_dir=log_dir if i == 0 else log_dir / f"optimizer-{i + 1}",
                scheduler=mine or None,
                scaler=scaler,
                **self.options,
            )
            self.optimizers.append(opt)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # which batch: the report shows it beside an incident (with accumulation, the
        # optimizer step runs in the batch that completes the window)
        for opt in self.optimizers:
            opt.guard.annotate(epoch=trainer.current_epoch, batch=batch_idx, source="lightning")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for opt in self.optimizers:
            guard = opt.guard
            for diag in guard.diagnoses[self._seen.get(id(opt), 0) :]:
                self._diagnoses.append(diag)
                if diag.incident:
                    log.warning(
                        "nantrap: incident in epoch %d, batch %d: %s",
                        trainer.current_epoch,
                        batch_idx,
                        diag.headline(),
                    )
            self._seen[id(opt)] = len(guard.diagnoses)
            if guard.stopped and not trainer.should_stop:
                log.warning("nantrap: the guard stopped training; ending the fit")
                trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close("stopped" if any(o.guard.stopped for o in self.optimizers) else "ok")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._close("error")

    def _close(self, status: str) -> None:
        for opt in self.optimizers:
            guard = getattr(opt, "_nantrap_guard", None)
            if guard is not None:
                self._diagnoses += guard.diagnoses[self._seen.get(id(opt), 0) :]
                guard.close(status)
        self.optimizers = []

    # -- results ----------------------------------------------------------------------
    @property
    def diagnoses(self) -> list:
        """Every guard's findings (kept after the fit ends)."""
        return list(self._diagnoses)

    def state_dict(self) -> dict[str, Any]:
        """Lightning checkpoints this; the guards' own state is ``opt.guard.state_dict()``."""
        return {"diagnoses": [d.to_dict() for d in self._diagnoses]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from nantrap.findings import Finding

        self._diagnoses = [Finding.from_dict(d) for d in state_dict.get("diagnoses", [])]
