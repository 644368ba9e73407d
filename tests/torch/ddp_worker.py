"""One rank of the DDP tests (imported by spawned processes): a real DDP training loop on
gloo with a fault on one rank only, under ``guard_ddp``, for several policies."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from nantrap.torch.distributed import guard_ddp
from tests.torch._dist import exit_rank

FAULT_STEP = 2
STEPS = 6


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 1)

    def forward(self, x, sqrt_fault: bool = False):
        h = self.fc1(x)
        if sqrt_fault:  # backward-only fault: sqrt at exactly 0 has an infinite slope
            h = torch.sqrt(h * 0.0) + h
        return self.fc2(torch.tanh(h))


def run_rank(rank: int, world: int, port: int, out: str, fault_rank: int, policies: list[str]):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    results = {}
    for policy in policies:
        torch.manual_seed(0)
        model = DDP(Net())
        opt = guard_ddp(
            torch.optim.SGD(model.parameters(), lr=0.05),
            model,
            policy=policy,
            log_dir=Path(out) / policy,
            log_every=1,
            early_warnings=0,
        )
        g = torch.Generator().manual_seed(100 + rank)
        changed = []
        for step in range(STEPS):
            x = torch.randn(8, 4, generator=g)
            fault = rank == fault_rank and step == FAULT_STEP
            if fault and policy != "rollback":
                x[0, 0] = float("nan")  # a bad sample in this rank's batch only
            opt.guard.annotate(batch=step)
            opt.zero_grad()
            pred = model(x, sqrt_fault=fault and policy == "rollback")
            loss = ((pred - x.sum(1, keepdim=True)) ** 2).mean()
            loss.backward()
            before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            after = model.parameters()
            changed.append(any(not torch.equal(b, p) for b, p in zip(before, after, strict=True)))
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        results[policy] = {
            "changed": changed,  # per step: did the parameters change
            "params": flat.tolist(),
            "finite": bool(torch.isfinite(flat).all()),
            "codes": [d.code for d in opt.diagnoses if d.incident],
            "stopped": opt.stopped,
        }
        opt.guard.close("stopped" if opt.stopped else "ok")
    dist.barrier()
    dist.destroy_process_group()
    Path(out, f"result-{rank}.json").write_text(json.dumps(results))
    exit_rank(0)
