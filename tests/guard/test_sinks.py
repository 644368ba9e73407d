"""Metric sinks: the event log fans records out; TensorBoard files read back with
tensorboard's own reader; W&B without wandb installed or without a run is a clear error."""

import builtins
import logging
import math

import pytest

from nantrap.errors import ConfigError
from nantrap.findings import Diagnosis, Location, Phase
from nantrap.guard import EventLog, GuardConfig
from nantrap.guard.sinks import MetricSink, make_sinks
from nantrap.guard.tensorboard import TensorBoardSink


def read_tensorboard(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path))
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    texts = {
        t: [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(t)]
        for t in acc.Tags()["tensors"]
    }
    return scalars, texts


def incident(step: int) -> Diagnosis:
    return Diagnosis(
        code="NT103",
        message="log of 0",
        fix="use log_softmax",
        action="rolled back",
        location=Location(phase=Phase.FORWARD, step=step, module="head", op="aten.log"),
    )


def test_tensorboard_gets_step_scalars_and_incident_markers(tmp_path):
    log = EventLog(tmp_path / "run", sinks=[TensorBoardSink(tmp_path / "tb")])
    log.step(0, loss=2.5, grad_norm=1.25, update_ratio=None, lr=0.1)
    log.step(1, loss=2.0, grad_norm=1.0, update_ratio=0.001, lr=0.1)
    log.step(2, loss=math.inf, grad_norm=math.nan, update_ratio=None, lr=0.1)
    log.diagnosis(incident(2))
    log.emit("context", step=2, rank=0, epoch=1, batch=5)
    log.action(2, "rollback", to_step=1, lr_before=0.1, lr_after=0.05)
    log.end(2, "ok")
    scalars, texts = read_tensorboard(tmp_path / "tb")
    assert texts["nantrap/context"] == [(2, "epoch=1, batch=5")]
    assert scalars["nantrap/loss"] == [(0, 2.5), (1, 2.0)]  # non-finite values are left out
    assert scalars["nantrap/grad_norm"] == [(0, 1.25), (1, 1.0)]
    assert [s for s, _ in scalars["nantrap/update_ratio"]] == [1]
    assert scalars["nantrap/update_ratio"][0][1] == pytest.approx(0.001)
    assert scalars["nantrap/lr"][0][1] == pytest.approx(0.1)
    assert scalars["nantrap/incident"] == [(2, 1.0)]
    assert scalars["nantrap/rollback_to"] == [(2, 1.0)]
    [(step, text)] = texts["nantrap/diagnosis"]
    assert step == 2 and "NT103" in text and "aten.log" in text and "log_softmax" in text
    actions = [t for _, t in texts["nantrap/action"]]
    assert "rollback at step 2 -> back to step 1, lr 0.1 -> 0.05" in actions[0]
    assert actions[-1] == "run ended: ok"


def test_a_failing_sink_is_dropped_and_the_run_goes_on(tmp_path, caplog):
    class Full(MetricSink):
        def scalars(self, step, values):
            raise OSError("disk full")

        def text(self, step, tag, text):
            raise OSError("disk full")

        def close(self):
            self.closed = True

    full = Full()
    log = EventLog(tmp_path, sinks=[full])
    with caplog.at_level(logging.WARNING, logger="nantrap"):
        log.step(0, loss=1.0, grad_norm=1.0, update_ratio=None, lr=0.1)
        log.step(1, loss=1.0, grad_norm=1.0, update_ratio=None, lr=0.1)
    assert log.sinks == [] and log.written == 2
    assert "Full failed (OSError('disk full'))" in caplog.text


def test_tensorboard_true_resolves_under_log_dir_and_needs_one(tmp_path):
    config = GuardConfig(log_dir=str(tmp_path), tensorboard=True)
    assert config.tensorboard == f"{tmp_path}/tb"
    assert GuardConfig(tensorboard=False).tensorboard is None
    assert GuardConfig.from_state_dict(config.state_dict()) == config
    with pytest.raises(ConfigError, match=r"tensorboard=True writes to <log_dir>/tb"):
        GuardConfig(tensorboard=True)
    with pytest.raises(ConfigError, match="guard option wandb=1: use True or False"):
        GuardConfig(wandb=1)


def test_ranks_above_zero_write_their_own_tensorboard_run(tmp_path):
    [sink] = make_sinks(tensorboard=str(tmp_path / "tb"), wandb=False, rank=2)
    assert sink.log_dir == tmp_path / "tb" / "rank2"


def test_wandb_missing_is_a_clear_config_error(monkeypatch):
    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb" or name.startswith("wandb."):
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ConfigError, match=r"wandb package is not installed; pip install wandb"):
        make_sinks(tensorboard=None, wandb=True)
    assert make_sinks(tensorboard=None, wandb=True, rank=1) == []  # other ranks: quietly off


def test_wandb_without_an_active_run_is_a_clear_config_error():
    wandb = pytest.importorskip("wandb")
    assert wandb.run is None
    with pytest.raises(ConfigError, match=r"no active W&B run; call wandb.init"):
        make_sinks(tensorboard=None, wandb=True)


def test_wandb_offline_run_gets_the_scalars_and_the_incident(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="nantrap-test", dir=str(tmp_path))
    try:
        log = EventLog(None, sinks=make_sinks(tensorboard=None, wandb=True))
        log.step(0, loss=2.5, grad_norm=1.25, update_ratio=None, lr=0.1)
        log.diagnosis(incident(1))
        log.action(1, "rollback", to_step=0, lr_before=0.1, lr_after=0.05)
        summary = dict(run.summary)
    finally:
        wandb.finish()
    assert summary["nantrap/loss"] == 2.5 and summary["nantrap/grad_norm"] == 1.25
    assert summary["nantrap/incident"] == 1.0 and summary["nantrap/rollback_to"] == 0.0
    assert "NT103" in summary["nantrap/diagnosis"] and summary["nantrap/step"] == 1
