"""nantrap.hf.NanTrap on a real transformers Trainer with a tiny GPT-2 built from a config
(no downloads): a fault in one step is skipped, recorded, and hidden from the Trainer's own
logs by ``logging_nan_inf_filter`` — which is why the guard checks the real loss."""

from __future__ import annotations

import logging
import math

import pytest

transformers = pytest.importorskip("transformers")
import torch  # noqa: E402

from nantrap.hf import NanTrap  # noqa: E402
from nantrap.report.run_log import load_run  # noqa: E402

transformers.logging.set_verbosity_error()


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=32, length=8):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 32, (n, length), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2)
    return transformers.GPT2LMHeadModel(config)


def _poison(model, at_calls):
    """A fault in the MLP on the given forward calls: its output becomes inf."""
    calls = {"n": 0}

    def hook(module, args, out):
        calls["n"] += 1
        if calls["n"] in at_calls:
            return out * float("inf")
        return out

    return model.transformer.h[0].mlp.register_forward_hook(hook)


def _train(tmp_path, model, trap, **extra):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        **extra,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[trap])
    trainer.train()
    return trainer


def test_skip_records_the_fault_the_filtered_logs_hide(tmp_path, caplog):
    model = _model()
    _poison(model, at_calls={4})  # the 4th training forward: optimizer step 3
    trap = NanTrap(policy="skip", early_warnings=0, log_every=1)
    with caplog.at_level(logging.WARNING, logger="nantrap"):
        trainer = _train(tmp_path, model, trap)  # logging_nan_inf_filter=True (default)
    assert "logging_nan_inf_filter=True hides NaN/Inf losses" in caplog.text
    assert all(torch.isfinite(p).all() for p in model.parameters())
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 8 and all(math.isfinite(x) for x in logged)  # the filter hid it
    log = load_run(tmp_path / "out" / "nantrap")
    [incident] = log.incidents()
    assert incident.step == 3 and incident.batch == 4  # HF's global_step after the step
    assert [a["action"] for a in incident.actions] == ["skip"]
    losses = dict(zip(*log.series("loss")[0], strict=True))
    assert math.isinf(losses[3]) or math.isnan(losses[3])  # the guard saw the real loss
    assert log.header["model"] == "GPT2LMHeadModel" and log.status == "ok"


def test_second_fault_is_localized_to_the_module(tmp_path):
    model = _model()
    _poison(model, at_calls={3, 6})
    trap = NanTrap(policy="skip", early_warnings=0)
    _train(tmp_path, model, trap)
    (incident,) = load_run(tmp_path / "out" / "nantrap").incidents()
    # loop form: step 2 armed tracing (NT903), the traced step 5 names it; the report folds
    (first,) = incident.earlier
    assert (first.step, first.diagnosis.code, incident.step) == (2, "NT903", 5)
    diag = incident.diagnosis
    assert diag.evidence["supersedes"] == [{"code": "NT903", "step": 2}]
    assert diag.module == "model.transformer.h.0.mlp" and diag.neutral_op == "mul"
    assert diag.location.path.endswith("test_hf.py")  # the line of the injected fault


def test_stop_policy_stops_the_trainer(tmp_path):
    model = _model()
    _poison(model, at_calls={2})
    trainer = _train(tmp_path, model, NanTrap(policy="stop", early_warnings=0))
    assert trainer.state.global_step < 8
    assert load_run(tmp_path / "out" / "nantrap").status == "stopped"
