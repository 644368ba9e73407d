"""One rank of the FSDP2 test (spawned; module-level so it pickles)."""

from __future__ import annotations

import json
import os
import traceback

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tests.torch._dist import exit_rank

FAULT_STEP = 2
STEPS = 5


def run_rank(rank: int, world: int, port: int, out: str, fault_rank: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    code = 1
    try:
        from torch.distributed.fsdp import fully_shard

        import nantrap.torch as nt

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        opt = nt.guard(torch.optim.SGD(model.parameters(), lr=0.1), model, policy="skip")
        g = torch.Generator().manual_seed(rank)
        changed = []
        for step in range(STEPS):
            x, y = torch.randn(4, 8, generator=g), torch.randint(0, 2, (4,), generator=g)
            if step == FAULT_STEP and rank == fault_rank:
                x[0, 0] = float("nan")
            before = [p.detach().to_local().clone() for p in model.parameters()]
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            after = [p.detach().to_local() for p in model.parameters()]
            changed.append(any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)))
        result = {
            "changed": changed,
            "incident_steps": [d.step for d in opt.diagnoses if d.incident],
            "finite": all(bool(torch.isfinite(p.to_local()).all()) for p in model.parameters()),
        }
        with open(os.path.join(out, f"result-{rank}.json"), "w") as f:
            json.dump(result, f)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        dist.destroy_process_group()
        exit_rank(code)
