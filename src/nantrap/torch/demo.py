"""``nantrap demo``: the seed's four NaN traps in PyTorch, each run plain and then guarded.

(a) softmax, then log, in a hand-written cross-entropy  -> NaN: domain (NT101)
(b) the "fix" log(clamp(p, 1e-8, 1))                    -> no NaN, accuracy stalls: clip trap
(c) sigmoid saturating to exactly 1.0, log(1 - p)       -> saturation, then domain
(d) a learning rate too high                            -> NaN weights: divergence; rollback
                                                           recovers to the loss of a sane LR

The data is synthetic (Gaussian blobs); features are left unnormalized (x10) in (a)-(c),
a common mistake that makes logits large. Every scenario checks its own verdict, so the
demo exits 1 if the guard ever failed to say what happened.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import nantrap.torch as nt
from nantrap.findings import Diagnosis

# The tracer names the user's own source lines; here the demo plays the user.
__nantrap_user_code__ = True

STEPS = 200
BATCH = 64
CLASSES = 10


@dataclass
class Run:
    """What one training run did."""

    steps: int
    loss: float
    accuracy: float
    nan_weights: int  # parameter tensors holding NaN/Inf at the end
    diagnoses: list[Diagnosis] = field(default_factory=list)
    lr: float = math.nan


@dataclass
class Scenario:
    key: str
    title: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    binary: bool = False
    scale: float = 10.0  # feature scale: unnormalized inputs
    lr: float = 0.05
    policy: str = "stop"
    expect: tuple[str, ...] = ()  # categories the guard must report
    fixed_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    fixed_lr: float | None = None


# --- the user's code: the losses as people write them -------------------------------------


def handwritten_cross_entropy(logits, y):
    p = torch.softmax(logits, dim=-1)
    return -(F.one_hot(y, CLASSES) * torch.log(p)).sum(dim=-1).mean()


def clipped_cross_entropy(logits, y):
    p = torch.softmax(logits, dim=-1)
    return -(F.one_hot(y, CLASSES) * torch.log(torch.clamp(p, 1e-8, 1.0))).sum(dim=-1).mean()


def handwritten_binary_cross_entropy(z, y):
    p = torch.sigmoid(z)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def cross_entropy(logits, y):
    return F.cross_entropy(logits, y)


def binary_cross_entropy_with_logits(z, y):
    return F.binary_cross_entropy_with_logits(z, y)


SCENARIOS = (
    Scenario(
        "a",
        "softmax, then log, in a hand-written cross-entropy",
        handwritten_cross_entropy,
        expect=("domain",),
        fixed_loss=cross_entropy,
    ),
    Scenario(
        "b",
        'the "fix" log(clamp(p, 1e-8, 1)): no NaN, but a fake loss',
        clipped_cross_entropy,
        policy="warn",
        expect=("clip-trap",),
        fixed_loss=cross_entropy,
    ),
    Scenario(
        "c",
        "sigmoid saturates to exactly 1.0, then log(1 - p)",
        handwritten_binary_cross_entropy,
        binary=True,
        scale=3.0,
        lr=0.1,
        expect=("domain",),
        fixed_loss=binary_cross_entropy_with_logits,
    ),
    Scenario(
        "d",
        "learning rate too high (SGD lr=8.0; 0.5 is sane)",
        cross_entropy,
        scale=1.0,
        lr=8.0,
        policy="rollback",
        expect=("divergence",),
        fixed_lr=0.5,
    ),
)


# --- training --------------------------------------------------------------------------------


def make_data(scale: float, n: int = 512, dim: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, dim, generator=g) * 2
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = (centers[y] + torch.randn(n, dim, generator=g)) * scale
    return x, y


def make_model(out: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, out))


def train(
    sc: Scenario,
    *,
    guarded: bool,
    log_dir: Path | None = None,
    loss_fn=None,
    lr: float | None = None,
) -> Run:
    loss_fn = loss_fn or sc.loss
    lr = lr or sc.lr
    x, y = make_data(sc.scale)
    target = (y < CLASSES // 2).float() if sc.binary else y
    model = make_model(1 if sc.binary else CLASSES)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    if guarded:
        opt = nt.guard(opt, model, policy=sc.policy, log_dir=log_dir, early_warnings=10)
    loss = torch.tensor(math.nan)
    step = 0
    for step in range(STEPS):
        i = (step * BATCH) % len(x)
        xb, yb = x[i : i + BATCH], target[i : i + BATCH]

        def closure(xb=xb, yb=yb):
            opt.zero_grad()
            out = model(xb)
            batch_loss = loss_fn(out.squeeze(-1) if sc.binary else out, yb)
            batch_loss.backward()
            return batch_loss

        loss = opt.step(closure)
        if guarded and opt.stopped:
            break
        if not guarded and not math.isfinite(loss.item()):
            break
    with torch.no_grad():
        out = model(x)
        pred = (out.squeeze(-1) > 0).float() if sc.binary else out.argmax(-1)
        acc = (pred == target).float().mean().item()
    bad = sum(not torch.isfinite(p).all() for p in model.parameters())
    return Run(
        step,
        loss.detach().item(),
        acc,
        int(bad),
        list(getattr(opt, "diagnoses", [])),
        opt.param_groups[0]["lr"],
    )


# --- the show --------------------------------------------------------------------------------


def run_demo(log_dir: str | None = None, out: Callable[[str], None] = print) -> int:
    """Run every scenario, print the verdicts; 0 if the guard said what happened each time."""
    start = time.perf_counter()
    logging.getLogger("nantrap").setLevel(logging.ERROR)  # the demo prints its own verdicts
    root = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="nantrap-demo-"))
    failures = 0
    out("nantrap demo: the seed's NaN traps, each run plain and then under nantrap.torch.guard\n")
    for sc in SCENARIOS:
        out(f"({sc.key}) {sc.title}")
        plain = train(sc, guarded=False)
        out(f"    plain    {_describe_plain(plain)}")
        guarded = train(sc, guarded=True, log_dir=root / sc.key)
        found = _relevant(guarded.diagnoses, sc.expect)
        if found is None:
            failures += 1
            out(
                f"    guarded  MISSED: expected {', '.join(sc.expect)}; got "
                f"{[d.code for d in guarded.diagnoses] or 'nothing'}"
            )
        else:
            for line in _describe_diagnosis(found):
                out(f"    {line}")
            out(f"    action   {_describe_action(sc, guarded)}")
        if sc.fixed_loss is not None:
            fixed = train(sc, guarded=False, loss_fn=sc.fixed_loss)
            out(
                f"    fixed    {sc.fixed_loss.__name__}: loss {fixed.loss:.4f}, "
                f"accuracy {fixed.accuracy:.0%} after {fixed.steps + 1} steps"
            )
        if sc.fixed_lr is not None:
            sane = train(sc, guarded=False, lr=sc.fixed_lr)
            out(
                f"    sane LR  lr={sc.fixed_lr}: loss {sane.loss:.4f}, "
                f"accuracy {sane.accuracy:.0%}; guarded run: loss {guarded.loss:.4f}, "
                f"accuracy {guarded.accuracy:.0%} at lr={guarded.lr:g}"
            )
        out("")
    out(f"events: {root}/*/events.jsonl   ({time.perf_counter() - start:.1f} s)")
    return 1 if failures else 0


def _relevant(diagnoses: list[Diagnosis], expect: tuple[str, ...]) -> Diagnosis | None:
    """The first incident of an expected category, else the first such warning."""
    matching = [d for d in diagnoses if str(d.category) in expect]
    return next((d for d in matching if d.incident), matching[0] if matching else None)


def _describe_plain(run: Run) -> str:
    if not math.isfinite(run.loss) or run.nan_weights:
        return (
            f"loss is {run.loss} at step {run.steps}; {run.nan_weights} of 4 weight tensors "
            "are NaN/Inf; nothing said why"
        )
    return (
        f"no NaN: loss {run.loss:.4f}, accuracy {run.accuracy:.0%} after {run.steps + 1} "
        "steps; nothing looks wrong"
    )


def _describe_diagnosis(d: Diagnosis) -> list[str]:
    head = f"guarded  {d.code} {d.category}"
    where = d.neutral_op or d.op
    if where:
        head += f" · {where}"
    if d.module:
        head += f" in {d.module}"
    if d.location.path:
        head += f" ({Path(d.location.path).name}:{d.location.line})"
    head += f" at step {d.step}" + (f", {d.phase}" if d.phase else "")
    lines = [head, f"         {d.message}"]
    if d.location.source_line:
        lines.append(f"         > {d.location.source_line}")
    if d.fix:
        lines.append(f"         fix: {d.fix}")
    return lines


def _describe_action(sc: Scenario, run: Run) -> str:
    acts = [d.action for d in run.diagnoses if d.action]
    if sc.policy == "rollback":
        return (
            f"rollback: {len([a for a in acts if 'roll' in a])} rollback(s), LR {sc.lr:g} "
            f"-> {run.lr:g}; weights finite: {run.nan_weights == 0}"
        )
    if sc.policy == "stop":
        return (
            f"stop: training stopped at step {run.steps}; the weights are the last good "
            f"ones (finite: {run.nan_weights == 0})"
        )
    return f"{sc.policy}: reported, training went on (accuracy {run.accuracy:.0%})"
