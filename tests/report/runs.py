"""Run folders written to the events.jsonl schema (HELPERS.md), for the renderer tests.

``diverging_run`` is what a guarded run with too high a learning rate writes: rising loss and
gradient norm, a NaN at step 37 diagnosed as divergence, a rollback to step 30 with the LR
halved, then convergence; saturation warnings on the way. ``domain_run`` is a log(0) in a
real source file written next to it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nantrap.findings import Category, Diagnosis, Location, Phase, _plain
from nantrap.guard.stats import TensorStats

TRAIN_PY = """\
import torch
import torch.nn.functional as F


def loss_fn(model, x, y):
    logits = model(x)
    p = F.softmax(logits, dim=-1)
    picked = p.gather(1, y[:, None])
    loss = -torch.log(picked).mean()
    return loss
"""
LOG_LINE = 9  # the line of torch.log in TRAIN_PY


def write_events(run_dir: Path, records: list[dict], name: str = "events.jsonl") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / name
    with path.open("w") as fh:
        for rec in records:
            fh.write(json.dumps({"schema_version": 1, **_plain(rec)}) + "\n")
    return path


def header(**extra) -> dict:
    base = {
        "type": "run",
        "time": "2026-11-26T08:00:00+00:00",
        "framework": "torch",
        "policy": "rollback",
        "model": "MLP",
        "optimizer": "SGD",
        "lr": [0.5],
        "rank": 0,
        "world_size": 1,
        "argv": ["train.py", "--epochs", "1"],
    }
    return {**base, **extra}


def diverging_run(run_dir: Path, rank: int = 0) -> Path:
    recs = [header(rank=rank)]
    loss, gnorm = 2.3, 1.0
    for step in range(1, 38):
        loss *= 1.12
        gnorm *= 1.35
        rec = {
            "type": "step",
            "step": step,
            "loss": loss,
            "grad_norm": gnorm,
            "update_ratio": 0.01 * 1.3**step,
            "lr": 0.5,
            "rank": rank,
        }
        if step == 37:
            rec.update(loss=math.nan, grad_norm=math.inf, update_ratio=None)
        if step % 5 == 0:
            rec["ranges"] = _ranges(step)
        recs.append(rec)
        if step in (20, 25, 30, 35):
            recs.append({"type": "diagnosis", **_saturation(step, rank).to_dict()})
    recs.append({"type": "diagnosis", **_divergence(37, rank).to_dict()})
    recs.append(
        {
            "type": "action",
            "step": 37,
            "action": "rollback",
            "to_step": 30,
            "lr_before": 0.5,
            "lr_after": 0.25,
            "retries": 1,
            "detail": "restored the snapshot of step 30",
            "rank": rank,
        }
    )
    loss = 3.0
    for step in range(31, 80):
        loss *= 0.95
        rec = {
            "type": "step",
            "step": step,
            "loss": loss,
            "grad_norm": 0.8,
            "update_ratio": 0.002,
            "lr": 0.25,
            "rank": rank,
        }
        if step % 5 == 0:
            rec["ranges"] = _ranges(10)
        recs.append(rec)
    recs.append({"type": "end", "step": 79, "status": "ok", "rank": rank})
    return write_events(run_dir, recs)


def domain_run(run_dir: Path) -> Path:
    src = run_dir / "train_src.py"
    run_dir.mkdir(parents=True, exist_ok=True)
    src.write_text(TRAIN_PY)
    probs = TensorStats(
        numel=640, dtype="torch.float32", shape=(64, 1), min=0.0, max=0.93, zeros=37
    )
    out = TensorStats(
        numel=640, dtype="torch.float32", shape=(64, 1), min=-0.07, max=-0.07, inf=37, neg_inf=37
    )
    diag = Diagnosis(
        code="NT101",
        message="log got exact zeros: 37 of 640 inputs are 0.0 (softmax in model.head "
        "underflowed); log(0) = -inf",
        location=Location(
            path=str(src),
            line=LOG_LINE,
            source_line="loss = -torch.log(picked).mean()",
            module="model.head",
            op="aten.log.default",
            neutral_op="log",
            phase=Phase.FORWARD,
            step=12,
        ),
        severity="error",
        category=Category.DOMAIN,
        evidence={
            "inputs": [probs.to_dict()],
            "output": out.to_dict(),
            "producer": "softmax in model.head",
        },
        fix="compute the loss from logits: F.cross_entropy(logits, y)",
        action="raised",
    )
    recs = [header(policy="raise", model="Classifier", optimizer="Adam", lr=[1e-3])]
    recs += [
        {
            "type": "step",
            "step": s,
            "loss": 2.3 - 0.1 * s,
            "grad_norm": 1.0,
            "update_ratio": 1e-3,
            "lr": 1e-3,
        }
        for s in range(1, 12)
    ]
    recs.append(
        {
            "type": "step",
            "step": 12,
            "loss": math.inf,
            "grad_norm": math.nan,
            "update_ratio": None,
            "lr": 1e-3,
        }
    )
    recs.append({"type": "diagnosis", **diag.to_dict()})
    recs.append({"type": "action", "step": 12, "action": "raise", "detail": "NanTrapError"})
    recs.append({"type": "end", "step": 12, "status": "error"})
    return write_events(run_dir, recs)


def _ranges(step: int) -> dict:
    grow = 1.25**step
    return {
        "model.fc1": {"min": -2.0 * grow, "max": 2.0 * grow, "saturated": 0.0},
        "model.act": {"min": 0.0, "max": 1.0, "saturated": min(1.0, step / 40)},
        "model.fc2": {
            "min": -5.0 * grow,
            "max": 6.0 * grow if step < 35 else math.inf,
            "saturated": 0.0,
        },
    }


def _saturation(step: int, rank: int) -> Diagnosis:
    return Diagnosis(
        code="NT203",
        message=f"{min(100, 2.5 * step):.0f}% of sigmoid outputs in model.act are exactly 1.0",
        location=Location(
            module="model.act",
            op="aten.sigmoid.default",
            neutral_op="sigmoid",
            phase=Phase.FORWARD,
            step=step,
            rank=rank,
        ),
        category=Category.SATURATION,
        evidence={"saturated_fraction": step / 40},
        incident=False,
        action="warned",
    )


def _divergence(step: int, rank: int) -> Diagnosis:
    return Diagnosis(
        code="NT301",
        message="the learning rate is too high: gradient norm grew 1.35x per step for 36 "
        "steps and the update/weight ratio reached 0.13 (healthy ~1e-3) before the "
        "weights became non-finite",
        location=Location(
            module="model.fc2", op="aten.add_.Tensor", phase=Phase.UPDATE, step=step, rank=rank
        ),
        category=Category.DIVERGENCE,
        evidence={
            "grad_norm_growth": 1.35,
            "update_ratio": 0.13,
            "lr": 0.5,
            "suggested_lr": 0.05,
            "batch": step,
        },
        fix="lower the learning rate about 10x (0.5 -> 0.05), or add warmup / clip_grad_norm_",
        action="rolled back",
    )
