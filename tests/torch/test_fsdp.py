"""The guard under FSDP2 (``fully_shard``, gloo, CPU): parameters are DTensors; every rank
reads its own shards, the verdict is all-reduced, and a NaN batch on one rank makes every
rank skip the same step (none hangs, none applies an update another skipped)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.fsdp")

from tests.torch._dist import run_ranks  # noqa: E402
from tests.torch.fsdp_worker import FAULT_STEP, STEPS, run_rank  # noqa: E402


def test_fsdp2_one_bad_rank_every_rank_skips_the_same_step(tmp_path):
    results = run_ranks(run_rank, 2, tmp_path, 1)  # the fault on rank 1
    expected = [step != FAULT_STEP for step in range(STEPS)]
    for r in results:
        assert r["changed"] == expected  # the bad step was skipped, on every rank
        assert r["incident_steps"] == [FAULT_STEP]
        assert r["finite"]
