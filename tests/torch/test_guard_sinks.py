"""``nt.guard(..., tensorboard=True)``: a real loop's step scalars and its rollback, read
back from the event files."""

import pytest

from nantrap.guard import read_events
from tests.guard.test_sinks import read_tensorboard
from tests.torch._guard_setup import batches, closure_step, make


def test_guarded_loop_writes_tensorboard_scalars_and_the_rollback(tmp_path):
    pytest.importorskip("tensorboard")
    model, opt = make("rollback", log_dir=tmp_path, tensorboard=True, log_every=1, snapshot_every=2)
    for i, (x, y) in enumerate(batches(6)):
        closure_step(model, opt, x, y, poison=i == 4)
    opt.guard.close()
    steps = [r for r in read_events(tmp_path / "events.jsonl") if r["type"] == "step"]
    scalars, texts = read_tensorboard(tmp_path / "tb")
    # the numbers of events.jsonl, in order: steps 0-3, the incident, steps from 2 again
    logged = [(r["step"], r["loss"]) for r in steps if isinstance(r["loss"], float)]
    assert [s for s, _ in logged] == [0, 1, 2, 3, 2]
    assert scalars["nantrap/loss"] == [(s, pytest.approx(v)) for s, v in logged]
    assert {t for t in scalars} >= {"nantrap/loss", "nantrap/grad_norm", "nantrap/lr"}
    assert scalars["nantrap/incident"] == [(4, 1.0)]
    assert scalars["nantrap/rollback_to"] == [(4, 2.0)]
    [(step, text)] = texts["nantrap/diagnosis"]
    assert step == 4 and "NT103" in text and "aten.log" in text
