"""Scenario: a small transformer LM (padding mask, dropout) under bf16 autocast with
gradient accumulation (4 micro-batches per optimizer step, loop form B). Its hand-written
token loss masks the padding BEFORE the log, so only batches with padding hit log(0).

The guard must skip the bad updates, localize the fault at the next incident (form B
cannot replay) to the log and the user's line, write a repro bundle, and
``nantrap.torch.replay`` must localize the bundle offline to the same op and line."""

from __future__ import annotations

import json

import pytest
import torch

import nantrap.torch as nt
from tests.e2e._nets import TinyLM, token_batches
from tests.torch._models import line_of

MICRO = 4
BAD_FROM = 2  # from this optimizer step on, micro-batch 1 has padding


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    probs = logits.float().softmax(-1)
    p = probs.gather(-1, tokens[..., None]).squeeze(-1)
    mask = (tokens != 0).float()
    p = p * mask  # <- the bug: pads zeroed before the log
    nll = -torch.log(p)  # <- log in the custom loss
    return (nll * mask).sum() / mask.sum()


def _padded(steps: int, micro: int = MICRO) -> set[int]:
    return {s * micro + min(1, micro - 1) for s in range(BAD_FROM, steps)}


def _train(log_dir, *, steps: int = 5, micro: int = MICRO):
    torch.manual_seed(0)
    model = TinyLM()
    opt = nt.guard(
        torch.optim.AdamW(model.parameters(), lr=1e-3),
        model,
        policy="skip",
        log_dir=log_dir,
        early_warnings=0,
    )
    data = token_batches(steps * micro, padded=_padded(steps, micro))
    applied = []
    for step in range(steps):
        opt.zero_grad()
        for m in range(micro):
            tokens = data[step * micro + m]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(tokens)
            loss = lm_loss(logits, tokens) / micro
            loss.backward()
            opt.guard.observe(loss, targets=tokens)
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        after = list(model.parameters())
        applied.append(any(not torch.equal(a, p) for a, p in zip(before, after, strict=True)))
    return model, opt, data, applied


@pytest.fixture(scope="module")
def accumulated(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("lm")
    return (log_dir, *_train(log_dir))


LOG_LINE = line_of("# <- log in the custom loss")
MASK_LINE = line_of("# <- the bug: pads zeroed before the log")


def test_bad_accumulated_steps_are_skipped_whole(accumulated):
    _, model, opt, _, applied = accumulated
    assert applied == [True, True, False, False, False]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [d.action for d in opt.diagnoses] == ["skipped"] * 3
    assert [d.step for d in opt.diagnoses] == [2, 3, 4]


def test_form_b_localizes_at_the_next_incident(accumulated):
    _, _, opt, _, _ = accumulated
    first, second = opt.diagnoses[:2]
    assert first.code == "NT903" and "tracing is armed" in first.message
    assert second.code == "NT103" and second.category.value == "domain"
    assert second.op == "aten.log.default" and second.neutral_op == "log"
    assert second.source == f"{__file__}:{LOG_LINE}"
    assert second.location.source_line == "nll = -torch.log(p)  # <- log in the custom loss"
    # the evidence: 3 pads x 4 rows are exactly 0, produced by the masking line
    assert "exactly 0 in 12 of 48 elements" in second.message
    assert f"test_lm_accumulation.py:{MASK_LINE}" in second.message
    ev = second.evidence
    assert ev["input"]["zeros"] == 12 and ev["input"]["negatives"] == 0
    assert ev["outputs"][0]["neg_inf"] == 12 and ev["dtype"] == "float32"
    assert ev["producer"]["neutral_op"] == "mul" and ev["producer"]["line"] == MASK_LINE


def test_events_and_bundle_are_written(accumulated):
    log_dir, _, opt, _, _ = accumulated
    events = [json.loads(x) for x in (log_dir / "events.jsonl").read_text().splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run" and kinds.count("diagnosis") == 3
    assert [e["action"] for e in events if e["type"] == "action"] == ["skip"] * 3
    assert opt.guard.bundles and all(p.exists() for p in opt.guard.bundles)


def test_replay_of_the_accumulated_bundle_localizes_offline(accumulated):
    _, _, opt, _, _ = accumulated
    found = nt.replay(opt.guard.bundles[0], TinyLM(), lm_loss)
    assert found is not None and found.op == "aten.log.default"


def test_replay_without_accumulation_localizes_offline(tmp_path):
    _, opt, data, _ = _train(tmp_path, steps=BAD_FROM + 1, micro=1)
    assert opt.diagnoses and opt.diagnoses[0].step == BAD_FROM
    bundle = nt.load_bundle(opt.guard.bundles[0])
    assert torch.equal(bundle.inputs, data[BAD_FROM]) and bundle.step == BAD_FROM
    model = TinyLM()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = nt.replay(bundle, model, lm_loss)
    assert found.code == "NT103" and found.op == "aten.log.default"
    assert found.source == f"{__file__}:{LOG_LINE}"
    assert found.step == BAD_FROM
    # the model handed to replay is untouched (a deep copy is replayed)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
