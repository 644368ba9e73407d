"""Localization under FSDP2 (``fully_shard``) and DDP (gloo, 2 CPU ranks): the op tracer
sees the plain tensors FSDP2 computes with, names the unsharded parameters after the module
parameter they gather, and reads a collective's result as another rank's values. Every
rank replays (closure form) or traces (loop form) the same step, so none hangs, and every
rank takes the same action."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.fsdp")

from tests.torch._dist import run_ranks  # noqa: E402
from tests.torch._models import line_of  # noqa: E402
from tests.torch.localize_dist_worker import (  # noqa: E402
    FAULT_RANK,
    FAULT_STEP,
    STEPS,
    run_rank,
)
from tests.torch.localize_dist_worker import __file__ as WORKER  # noqa: E402

LOG_LINE = line_of("# <- log of probabilities (FSDP2)", WORKER)
OTHER = 1 - FAULT_RANK


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp-localize")
    return run_ranks(run_rank, 2, out, ["closure", "loop", "shard", "ddp", "backward", "tied"])


def _assert_log_of_softmax(d: dict, step: int) -> None:
    assert (d["code"], d["step"], d["action"]) == ("NT101", step, "skipped")
    assert (d["op"], d["module"]) == ("aten.log.default", "model.head")
    assert (d["path"], d["line"]) == (WORKER, LOG_LINE)
    assert d["source"].startswith("return torch.log(p)")
    assert "softmax in model.head" in d["message"] and "underflowed to exactly 0" in d["message"]


def _assert_from_other_rank(
    d: dict, step: int, collective: str = "c10d._reduce_scatter_base_.default"
) -> None:
    assert (d["code"], d["step"], d["action"]) == ("NT903", step, "skipped")
    assert d["evidence"]["from_other_rank"] is True
    assert d["evidence"]["collective"] == collective
    assert f"arrived from another rank in {collective}" in d["message"]


def test_closure_form_localizes_on_the_rank_that_went_bad(ranks):
    bad, other = ranks[FAULT_RANK]["closure"], ranks[OTHER]["closure"]
    [found] = bad["diagnoses"]
    _assert_log_of_softmax(found, FAULT_STEP)
    [received] = other["diagnoses"]
    _assert_from_other_rank(received, FAULT_STEP)
    expected = [step != FAULT_STEP for step in range(STEPS)]
    assert bad["changed"] == other["changed"] == expected  # the same step skipped everywhere
    assert bad["finite"] and other["finite"]


def test_loop_form_traces_the_next_bad_step_on_every_rank(ranks):
    bad, other = ranks[FAULT_RANK]["loop"], ranks[OTHER]["loop"]
    armed, found = bad["diagnoses"]
    assert (armed["code"], armed["step"], armed["evidence"]["superseded_by"]) == (
        "NT903",
        FAULT_STEP,
        FAULT_STEP + 1,
    )
    _assert_log_of_softmax(found, FAULT_STEP + 1)
    assert [d["step"] for d in other["diagnoses"]] == [FAULT_STEP, FAULT_STEP + 1]
    assert [d["action"] for d in other["diagnoses"]] == ["skipped", "skipped"]
    _assert_from_other_rank(other["diagnoses"][1], FAULT_STEP + 1)


def test_nan_in_one_rank_shard_names_the_parameter_on_every_rank(ranks):
    for r in (0, 1):
        result = ranks[r]["shard"]
        [guarded] = result["guarded"]  # the guard's check of the weights, shard-aware
        assert (guarded["code"], guarded["step"]) == ("NT403", 1)
        assert guarded["module"] == "head.fc"
        assert "head.fc.weight (1 NaN, 0 Inf of 64)" in guarded["message"]
        assert f"head.fc.weight in the shard of rank {FAULT_RANK}" in guarded["message"]
        traced = result["traced"]  # the tracer: the all-gathered weight, named
        assert traced["code"] == "NT403" and traced["tensor"] == "model.head.fc.weight"
        assert traced["message"].startswith(
            "parameter model.head.fc.weight already holds 1 NaN of 64 elements"
        )
        assert (traced["module"], traced["op"]) == ("model.head.fc", "aten.t.default")


def test_ddp_closure_form_localizes_and_the_other_rank_names_the_all_reduce(ranks):
    bad, other = ranks[FAULT_RANK]["ddp"], ranks[OTHER]["ddp"]
    [found] = bad["diagnoses"]
    _assert_log_of_softmax(found, FAULT_STEP)
    [received] = other["diagnoses"]
    _assert_from_other_rank(received, FAULT_STEP, "c10d.allreduce_.default")
    assert "(all-reduced across ranks)" in received["message"]
    assert bad["changed"] == other["changed"] == [step != FAULT_STEP for step in range(STEPS)]


def test_backward_only_fault_is_followed_through_the_reduce_scatter(ranks):
    bad, other = ranks[FAULT_RANK]["backward"], ranks[OTHER]["backward"]
    assert (bad["code"], bad["op"], bad["node"]) == ("NT111", "aten.sqrt.default", "SqrtBackward0")
    assert bad["line"] == line_of("# <- sqrt at 0 (FSDP2)", WORKER)
    assert not bad["from_other_rank"]
    assert (other["code"], other["op"]) == ("NT903", "c10d._reduce_scatter_base_.default")
    assert other["from_other_rank"]


def test_a_weight_read_outside_its_module_is_named_after_it(ranks):
    for r in (0, 1):
        tied = ranks[r]["tied"]
        assert (tied["code"], tied["tensor"]) == ("NT403", "model.proj.weight"), r
