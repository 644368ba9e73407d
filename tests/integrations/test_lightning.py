"""nantrap.lightning.NanTrap on a real Lightning Trainer: closure-form guard, accumulation,
bf16-mixed precision, stop policy; events that `nantrap report` renders."""

from __future__ import annotations

import logging
import math

import pytest

pl = pytest.importorskip("lightning.pytorch")
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from nantrap.lightning import NanTrap  # noqa: E402
from nantrap.report.run_log import load_run  # noqa: E402

logging.getLogger("lightning").setLevel(logging.ERROR)


class Regressor(pl.LightningModule):
    def __init__(self, lr: float = 0.05, poison_batch: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.lr = lr
        self.poison_batch = poison_batch

    def training_step(self, batch, batch_idx):
        x, y = batch
        pred = self.net(x)
        if batch_idx == self.poison_batch:
            pred = pred * torch.log(torch.zeros_like(pred))  # log(0): -inf, NaN gradients
        return F.mse_loss(pred, y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 100)}


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def _fit(module, callback, tmp_path, **trainer_args):
    trainer_args = {"max_epochs": 1, **trainer_args}
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
        **trainer_args,
    )
    trainer.fit(module, _data())
    return trainer


def _finite(module):
    return all(torch.isfinite(p).all() for p in module.parameters())


def test_skip_localizes_the_log_of_zero_and_names_the_batch(tmp_path):
    module = Regressor(poison_batch=3)
    trap = NanTrap(policy="skip", log_dir=tmp_path / "nt", log_every=1, early_warnings=0)
    trainer = _fit(module, trap, tmp_path)
    assert trainer.global_step == 8 and _finite(module)
    log = load_run(tmp_path / "nt")
    [incident] = log.incidents()
    diag = incident.diagnosis
    assert diag.step == 3 and incident.batch == 3
    assert diag.neutral_op == "log" and diag.category.value == "domain"
    assert diag.location.path.endswith("test_lightning.py")
    assert [a["action"] for a in incident.actions] == ["skip"]
    assert log.status == "ok"
    assert trap.diagnoses[0].code == diag.code


def test_accumulation_drops_the_whole_window(tmp_path):
    module = Regressor(poison_batch=2)  # first micro-batch of the 2nd window (batches 2, 3)
    trap = NanTrap(policy="skip", log_dir=tmp_path / "nt", log_every=1, early_warnings=0)
    trainer = _fit(module, trap, tmp_path, accumulate_grad_batches=2)
    assert trainer.global_step == 4 and _finite(module)
    log = load_run(tmp_path / "nt")
    [incident] = log.incidents()
    assert incident.step == 1 and incident.batch == 3  # optimizer step 1 ends at batch 3
    assert [a["action"] for a in log.actions] == ["skip"]


def test_bf16_mixed_divergence_rolls_back(tmp_path):
    module = Regressor(lr=30.0)
    trap = NanTrap(
        policy="rollback",
        log_dir=tmp_path / "nt",
        log_every=1,
        early_warnings=0,
        max_retries=6,
        lr_decay=0.1,
    )
    _fit(module, trap, tmp_path, precision="bf16-mixed", max_epochs=3)
    log = load_run(tmp_path / "nt")
    assert log.incidents() and log.actions[0]["action"] == "rollback"
    assert _finite(module)
    assert module.trainer.optimizers[0].param_groups[0]["lr"] < 30.0
    assert not hasattr(module.trainer.optimizers[0], "_nantrap_guard")  # closed at fit end


def test_stop_policy_ends_the_fit(tmp_path):
    module = Regressor(poison_batch=2)
    trap = NanTrap(policy="stop", log_dir=tmp_path / "nt", early_warnings=0)
    trainer = _fit(module, trap, tmp_path, max_epochs=3)
    assert trainer.should_stop and trainer.global_step <= 3
    assert load_run(tmp_path / "nt").status == "stopped"
    assert math.isfinite(float(module.net[0].weight.detach().sum()))
