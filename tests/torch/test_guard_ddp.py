"""Two DDP processes (gloo, CPU): a NaN in one rank's batch, or a log(0) in one rank's loss,
leads every rank to the same decision, so the replicas stay identical."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.torch._dist import exit_rank

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    for poison in ("input", "loss"):
        _train(rank, poison, out)
    dist.destroy_process_group()
    exit_rank(0)


def _train(rank: int, poison: str, out: str) -> None:
    import nantrap.torch as nt
    from tests.torch._guard_setup import Net, batches

    torch.manual_seed(0)
    net = Net()
    model = torch.nn.parallel.DistributedDataParallel(net)
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=0.05),
        model,
        policy="rollback",
        snapshot_every=2,
        early_warnings=0,
    )
    for i, (x, y) in enumerate(batches(6, seed=rank)):
        x = x.clone()
        if i == 3 and rank == 1 and poison == "input":
            x[0, 0] = math.nan
        opt.zero_grad()
        err = (model(x) - y) ** 2
        loss = err.mean()
        if i == 3 and rank == 1 and poison == "loss":
            loss = loss - torch.log(err[:1] * 0).mean()
        loss.backward()
        opt.step()
    torch.save(
        {
            "params": [p.detach() for p in net.parameters()],
            "decisions": [(d.code, d.step, d.action, d.location.rank) for d in opt.diagnoses],
            "lr": opt.param_groups[0]["lr"],
        },
        f"{out}/{poison}-rank{rank}.pt",
    )
    opt.guard.close()


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, f"file://{out}/init", str(out)), nprocs=2, join=True)
    return out


@pytest.mark.parametrize("poison", ["input", "loss"])
def test_every_rank_makes_the_same_decision(ddp_runs, poison):
    r0, r1 = (torch.load(ddp_runs / f"{poison}-rank{r}.pt") for r in (0, 1))
    assert [d[:3] for d in r0["decisions"]] == [d[:3] for d in r1["decisions"]]
    assert [d[3] for d in r0["decisions"]] == [0] and [d[3] for d in r1["decisions"]] == [1]
    code, step, action = r0["decisions"][0][:3]
    assert step == 3
    if poison == "input":
        assert (code, action) == ("NT401", "skipped") and r0["lr"] == 0.05
    else:
        assert action == "rolled-back" and r0["lr"] == r1["lr"] == 0.025
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"], strict=True))
    assert all(torch.isfinite(p).all() for p in r0["params"])
