"""guard_ddp under real DDP on gloo, 2 and 4 processes, a fault on one rank only: every rank
makes the same decision, none hangs, none applies an update another skipped, and the run
folder names the rank and the batch that went bad."""

from __future__ import annotations

import pytest

from nantrap.report.html import render_html
from nantrap.report.markdown import render_markdown
from nantrap.report.run_log import load_run
from tests.torch._dist import run_ranks
from tests.torch.ddp_worker import FAULT_STEP, run_rank

POLICIES = ["skip", "rollback", "stop"]


def _run(world: int, fault_rank: int, tmp_path) -> list[dict]:
    return run_ranks(run_rank, world, tmp_path, fault_rank, POLICIES)


@pytest.mark.parametrize(("world", "fault_rank"), [(2, 1), (4, 2)])
def test_one_bad_rank_same_decision_everywhere(world, fault_rank, tmp_path):
    results = _run(world, fault_rank, tmp_path)
    for policy in POLICIES:
        per_rank = [r[policy] for r in results]
        params = [r["params"] for r in per_rank]
        assert all(p == params[0] for p in params), f"{policy}: ranks diverged"
        assert all(r["finite"] for r in per_rank)
        # nobody applied an update another rank skipped
        assert all(r["changed"] == per_rank[0]["changed"] for r in per_rank)
        assert all(r["codes"] for r in per_rank)  # every rank recorded the incident
        log = load_run(tmp_path / policy)
        assert log.ranks == list(range(world))
        actions = {(a["rank"], a["step"], a["action"]) for a in log.actions}
        expected = {"skip": "skip", "rollback": "rollback", "stop": "stop"}[policy]
        assert actions == {(r, FAULT_STEP, expected) for r in range(world)}
        [origin] = {i.rank for i in log.incidents() if i.context.get("origin")}
        assert origin == fault_rank
        assert all(i.context["bad_ranks"] == [fault_rank] for i in log.incidents())
        assert all(i.batch == FAULT_STEP for i in log.incidents())  # opt.guard.annotate
        for r in range(world):  # bundles say whose they are, even in a shared folder
            bundle = tmp_path / policy / f"rank{r}" / f"bundle-rank{r}-step{FAULT_STEP}.ntb"
            assert bundle.exists()
    assert results[0]["skip"]["changed"] == [True, True, False, True, True, True]
    assert results[0]["stop"]["stopped"] and not any(results[0]["stop"]["changed"][3:])
    page = render_html(load_run(tmp_path / "skip"))
    assert f"<b>Rank(s) that went bad:</b> {fault_rank}<" in page
    assert "NT401" in page  # the bad rank's own diagnosis: a non-finite input
    text = render_markdown(load_run(tmp_path / "rollback"))
    assert f"**Rank(s) that went bad:** {fault_rank}\n" in text
    assert f"**First incident (rank {fault_rank}):** step {FAULT_STEP}" in text
    assert "- **origin**: this rank's own gradients were non-finite" in text
    assert f"(rank {fault_rank}): rolled back to step 0" in text
