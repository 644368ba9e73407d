"""One rank of the distributed localization tests (spawned; module-level so it pickles):
real ``fully_shard`` training loops on gloo, the guard in closure form (every rank replays
the bad step) and in loop form (every rank traces the next step), a NaN written into one
rank's shard of a weight, and the closure form under DDP with ``guard_ddp``."""

from __future__ import annotations

import datetime
import json
import os
import traceback

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tests.torch._dist import exit_rank

FAULT_RANK = 1
FAULT_STEP = 2
STEPS = 4


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        p = F.softmax(self.fc(h), dim=-1)
        return torch.log(p)  # <- log of probabilities (FSDP2)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.head = Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def _sharded_net():
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = Net()
    fully_shard(model.body)
    fully_shard(model.head)
    fully_shard(model)
    return model


def _batch(rank: int, step: int, fault_steps: tuple[int, ...]):
    g = torch.Generator().manual_seed(100 * rank + step)
    x, y = torch.randn(4, 8, generator=g), torch.randint(0, 4, (4,), generator=g)
    if rank == FAULT_RANK and step in fault_steps:
        x = x * 1e4  # logit gaps of thousands: softmax underflows to exactly 0
    return x, y


def _diagnoses(opt) -> list[dict]:
    return [
        {
            "code": d.code,
            "step": d.step,
            "action": d.action,
            "op": d.op,
            "module": d.module,
            "line": d.location.line,
            "path": d.location.path,
            "source": d.location.source_line,
            "message": d.message,
            "evidence": {k: v for k, v in d.evidence.items() if isinstance(v, (str, int, bool))},
        }
        for d in opt.diagnoses
        if d.incident
    ]


def _closure_form(rank: int, ddp: bool = False) -> dict:
    """opt.step(closure): the incident is replayed under op tracing on every rank."""
    import nantrap.torch as nt
    from nantrap.torch.distributed import guard_ddp

    if ddp:
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(Net())
        opt = guard_ddp(
            torch.optim.SGD(model.parameters(), lr=0.1), model, policy="skip", early_warnings=0
        )
    else:
        model = _sharded_net()
        opt = nt.guard(
            torch.optim.SGD(model.parameters(), lr=0.1), model, policy="skip", early_warnings=0
        )
    local = (lambda p: p.detach()) if ddp else (lambda p: p.detach().to_local())
    changed = []
    for step in range(STEPS):
        x, y = _batch(rank, step, (FAULT_STEP,))

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = F.nll_loss(model(x), y)
            loss.backward()
            return loss

        before = [local(p).clone() for p in model.parameters()]
        opt.step(closure)
        after = [local(p) for p in model.parameters()]
        changed.append(any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)))
    finite = all(bool(torch.isfinite(local(p)).all()) for p in model.parameters())
    found = _diagnoses(opt)
    opt.guard.close()
    return {"changed": changed, "diagnoses": found, "finite": finite}


def _loop_form(rank: int) -> dict:
    """loss.backward(); opt.step(): the first incident arms tracing on every rank, the
    next bad step is traced on every rank."""
    import nantrap.torch as nt

    model = _sharded_net()
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=0.1), model, policy="skip", early_warnings=0
    )
    for step in range(STEPS):
        x, y = _batch(rank, step, (FAULT_STEP, FAULT_STEP + 1))
        opt.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        opt.step()
    found = _diagnoses(opt)
    opt.guard.close()
    return {"diagnoses": found}


def _bad_shard(rank: int) -> dict:
    """A NaN written into rank 1's shard of head.fc.weight between two steps."""
    import nantrap.torch as nt
    from nantrap.torch.localize import localize

    model = _sharded_net()
    opt = nt.guard(
        torch.optim.SGD(model.parameters(), lr=0.1), model, policy="skip", early_warnings=0
    )
    x, y = _batch(rank, 0, ())
    for step in range(2):
        if step == 1 and rank == FAULT_RANK:
            with torch.no_grad():
                model.head.fc.weight.to_local()[0, 0] = float("nan")
        opt.zero_grad()
        F.nll_loss(model(x), y).backward()
        opt.step()
    guarded = _diagnoses(opt)
    opt.guard.close()
    if rank == FAULT_RANK:  # the rollback restored it: corrupt it again, then trace a step
        with torch.no_grad():
            model.head.fc.weight.to_local()[0, 0] = float("nan")

    def step_fn():
        loss = F.nll_loss(model(x), y)
        loss.backward()
        return loss

    found = localize(step_fn, model, step=5)
    traced = None
    if found is not None:
        traced = {"code": found.code, "message": found.message, "op": found.op}
        traced.update(module=found.module, tensor=found.evidence.get("tensor"))
    return {"guarded": guarded, "traced": traced}


class TiedNet(nn.Module):
    """Reads ``proj``'s weight in its own forward without calling ``proj`` (weight tying)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.proj = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.body(x))
        return F.log_softmax(F.linear(h, self.proj.weight, self.proj.bias), dim=-1)


def _bad_tied_shard(rank: int) -> dict:
    """One FSDP2 unit (the root) holding all weights; a NaN in rank 1's shard of a weight
    that no module forward reads, localized directly."""
    from torch.distributed.fsdp import fully_shard

    from nantrap.torch.localize import localize

    torch.manual_seed(0)
    model = TiedNet()
    fully_shard(model)
    x, y = _batch(rank, 0, ())
    if rank == FAULT_RANK:
        with torch.no_grad():
            model.proj.weight.to_local()[-1, -1] = float("inf")

    def step_fn():
        loss = F.nll_loss(model(x), y)
        loss.backward()
        return loss

    found = localize(step_fn, model, step=5)
    return {"code": found.code, "tensor": found.evidence.get("tensor"), "op": found.op}


def _backward_fault(rank: int) -> dict:
    """A fault only the backward sees (sqrt's slope at 0) on one rank, localized directly:
    its path runs through FSDP2's gradient copy-in and reduce-scatter."""
    from nantrap.torch.localize import localize

    model = _sharded_net()
    x, y = _batch(rank, 0, ())

    def step_fn():
        out = model(x)
        if rank == FAULT_RANK:
            out = out + torch.sqrt(out * 0.0)  # <- sqrt at 0 (FSDP2)
        loss = F.nll_loss(out, y)
        loss.backward()
        return loss

    found = localize(step_fn, model, step=5)
    return {
        "code": found.code,
        "op": found.op,
        "node": found.location.node,
        "line": found.location.line,
        "from_other_rank": found.evidence.get("from_other_rank", False),
    }


SCENARIOS = {
    "closure": _closure_form,
    "loop": _loop_form,
    "shard": _bad_shard,
    "ddp": lambda rank: _closure_form(rank, ddp=True),
    "backward": _backward_fault,
    "tied": _bad_tied_shard,
}


def run_rank(rank: int, world: int, port: int, out: str, scenarios: list[str]) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    code = 1
    try:
        result = {name: SCENARIOS[name](rank) for name in scenarios}
        with open(os.path.join(out, f"result-{rank}.json"), "w") as f:
            json.dump(result, f)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        dist.destroy_process_group()
        exit_rank(code)
