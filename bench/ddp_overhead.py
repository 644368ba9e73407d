"""Step-time cost of nantrap's guard under DDP against plain DDP, 2 processes on gloo (CPU).

Variants, each with its own identically seeded model, DDP wrapper and optimizer,
interleaved in rotated order within the same process group:

- plain: DDP, zero_grad, forward, loss, backward, step
- guard: ``nantrap.torch.guard`` (its per-step verdict is all-reduced across ranks)
- guard_ddp: ``nantrap.torch.distributed.guard_ddp`` (+ the RankWatch comm hook that
  carries each rank's own-gradient flag inside the bucket all-reduce, per-rank folders)

Workload: a small CNN (32x32x3, batch 64 per rank, SGD), one thread per rank. On rank 0:
ms/step is the median wall time over rounds; "x plain" the median over rounds of
variant/plain from the same round (cancels drift); "best x" the ratio of the fastest rounds
(least disturbed by other processes on a shared machine); "CPU ms" / "CPU x" the same in
this process's CPU time (what the guard itself costs, without waiting for other ranks).

    python bench/ddp_overhead.py            # ~1 min on 2 CPU cores
    python bench/ddp_overhead.py --rounds 10 --steps 30
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

VARIANTS = ("plain", "guard", "guard_ddp")


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def _setup(variant: str, log_dir: Path):
    import nantrap.torch as nt
    from nantrap.torch.distributed import guard_ddp

    torch.manual_seed(0)
    model = DDP(CNN())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if variant == "guard":
        nt.guard(opt, model, policy="rollback", log_dir=log_dir / "guard")
    elif variant == "guard_ddp":
        guard_ddp(opt, model, policy="rollback", log_dir=log_dir / "guard_ddp")
    return model, opt


def _steps(model, opt, batches, n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) per step."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        x, y = batches[i % len(batches)]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def _paired(times: list[float], base: list[float]) -> float:
    return statistics.median(t / b for t, b in zip(times, base, strict=True))


def _rank(rank: int, world: int, port: int, args, out: str) -> None:
    torch.set_num_threads(1)
    logging.getLogger("nantrap").setLevel(logging.ERROR)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120)
    )
    g = torch.Generator().manual_seed(rank)
    batches = [
        (torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
        for _ in range(8)
    ]
    runs = {v: _setup(v, Path(out)) for v in VARIANTS}
    for v in VARIANTS:
        _steps(*runs[v], batches, args.warmup)
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
        for v in order:
            dist.barrier()
            w, c = _steps(*runs[v], batches, args.steps)
            wall[v].append(w)
            cpu[v].append(c)
    if rank == 0:
        print(
            f"DDP on gloo, {world} processes x 1 thread, CNN 32x32x3 batch 64/rank, "
            f"{args.rounds} rounds x {args.steps} steps"
        )
        head = ("variant", "ms/step", "x plain", "best x", "CPU ms", "CPU x")
        print(f"{head[0]:<10} {head[1]:>8} {head[2]:>8} {head[3]:>7} {head[4]:>8} {head[5]:>6}")
        for v in VARIANTS:
            print(
                f"{v:<10} {1000 * statistics.median(wall[v]):>8.2f} "
                f"{_paired(wall[v], wall['plain']):>8.3f} "
                f"{min(wall[v]) / min(wall['plain']):>7.3f} "
                f"{1000 * statistics.median(cpu[v]):>8.2f} {_paired(cpu[v], cpu['plain']):>6.3f}"
            )
    for _, opt in runs.values():
        guard = getattr(opt, "_nantrap_guard", None)
        if guard is not None:
            guard.close("ok")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_rank, args=(args.world, port, args, out), nprocs=args.world)


if __name__ == "__main__":
    main()
