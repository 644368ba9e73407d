"""The guard under FSDP2 (``fully_shard``, gloo, CPU): parameters are DTensors; every rank
reads its own shards, the verdict is all-reduced, and a NaN batch on one rank makes every
rank skip the same step (none hangs, none applies an update another skipped)."""

from __future__ import annotations

import json
import multiprocessing as mp
import socket

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.fsdp")

from tests.torch.fsdp_worker import FAULT_STEP, STEPS, run_rank  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp2_one_bad_rank_every_rank_skips_the_same_step(tmp_path):
    world, fault_rank = 2, 1
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [
        ctx.Process(target=run_rank, args=(r, world, port, str(tmp_path), fault_rank))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"ranks {hung} hung"
    assert [p.exitcode for p in procs] == [0] * world
    results = [json.loads((tmp_path / f"result-{r}.json").read_text()) for r in range(world)]
    expected = [step != FAULT_STEP for step in range(STEPS)]
    for r in results:
        assert r["changed"] == expected  # the bad step was skipped, on every rank
        assert r["incident_steps"] == [FAULT_STEP]
        assert r["finite"]
