"""``nantrap.hf.NanTrap``: the training guard as a Hugging Face ``TrainerCallback``.

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[NanTrap(policy="skip")])

At ``on_train_begin`` the Trainer's optimizer (the torch optimizer inside accelerate's
wrapper) is guarded with ``nantrap.torch.guard`` and its LR scheduler is tracked, so a skip
or rollback keeps them consistent. A forward hook hands the model output's ``loss`` (and
the ``labels``, for repro bundles) to the guard: loss spikes, the loss curve in the report.
The Trainer steps the optimizer itself, so the guard runs in loop form B: the first incident
is acted on by policy and tracing is armed; the next one is localized to the op and source
line.

``logging_nan_inf_filter`` (a ``TrainingArguments`` option, on by default): when a step's
loss is NaN/Inf, the Trainer logs the average of the previous losses instead, so the logs
and ``state.log_history`` look healthy while the weights may already be NaN. The guard does
not read the logged loss: it checks the real loss, gradients and weights of every step,
so with the filter on the incidents are still caught, recorded and acted on. The callback
warns once at train start when the filter is on, because ``loss`` in the Trainer's logs
then cannot be trusted to show the incident; read ``events.jsonl`` / ``nantrap report``.

``policy="stop"`` sets ``control.should_training_stop``; ``"raise"`` raises ``NanTrapError``
out of ``trainer.train()``. Events go to ``log_dir`` (default ``<output_dir>/nantrap``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

import nantrap.torch as nt

__all__ = ["NanTrap"]

log = logging.getLogger("nantrap")


class NanTrap(TrainerCallback):
    """Guard the Trainer's optimizer against NaN/Inf (see the module doc)."""

    def __init__(self, policy: str = "rollback", log_dir: str | Path | None = None, **options):
        self.policy = policy
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.options = options
        self.optimizer: torch.optim.Optimizer | None = None
        self.diagnoses: list[Any] = []
        self._hook = None
        self._seen = 0

    def on_train_begin(
        self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs
    ):
        opt = optimizer
        while opt is not None and not isinstance(opt, torch.optim.Optimizer):
            opt = getattr(opt, "optimizer", None)  # accelerate's AcceleratedOptimizer
        if opt is None:
            log.warning("nantrap: the Trainer has no torch optimizer to guard")
            return
        if getattr(args, "logging_nan_inf_filter", False):
            log.warning(
                "nantrap: logging_nan_inf_filter=True hides NaN/Inf losses in the Trainer's "
                "logs (it logs the running average instead); nantrap still checks every step: "
                "see its events.jsonl / `nantrap report`"
            )
        log_dir = self.log_dir or Path(args.output_dir) / "nantrap"
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate wrapper
        nt.guard(
            opt,
            model,
            policy=self.policy,
            log_dir=log_dir,
            scheduler=scheduler if hasattr(scheduler, "state_dict") else None,
            **self.options,
        )
        self.optimizer = opt
        if model is not None:
            self._hook = model.register_forward_hook(self._on_output, with_kwargs=True)

    def _on_output(self, module, args, kwargs, output) -> None:
        loss = getattr(output, "loss", None)
        if loss is None and isinstance(output, dict):
            loss = output.get("loss")
        if module.training and isinstance(loss, torch.Tensor) and loss.numel() == 1:
            guard = getattr(self.optimizer, "_nantrap_guard", None)
            if guard is not None:
                # the labels go into repro bundles, so nt.replay can recompute the loss
                guard.observe(loss=loss.detach(), targets=kwargs.get("labels"))

    def on_step_end(self, args, state, control, **kwargs):
        guard = getattr(self.optimizer, "_nantrap_guard", None)
        if guard is None:
            return control
        for diag in guard.diagnoses[self._seen :]:
            self.diagnoses.append(diag)
            if diag.incident:
                guard.engine.log.emit(
                    "context",
                    step=diag.step,
                    epoch=state.epoch,
                    batch=state.global_step,
                    source="transformers",
                )
        self._seen = len(guard.diagnoses)
        if guard.stopped:
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        guard = getattr(self.optimizer, "_nantrap_guard", None)
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if guard is not None:
            self.diagnoses += guard.diagnoses[self._seen :]
            guard.close("stopped" if guard.stopped else "ok")
        return control
