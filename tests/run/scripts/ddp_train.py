"""A plain DDP training script (no nantrap in it) with a NaN in rank 1's batch at step 3."""

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DDP(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
g = torch.Generator().manual_seed(rank)
for step in range(6):
    x = torch.randn(8, 4, generator=g)
    if rank == 1 and step == 3:
        x[0, 0] = float("nan")
    opt.zero_grad()
    loss = ((model(x) - 1) ** 2).mean()
    loss.backward()
    opt.step()
total = sum(p.sum().item() for p in model.parameters())
line = f"rank {rank} weights {total:.6f}"
print(line, flush=True)
with open(f"weights.rank{rank}.txt", "w") as fh:  # per rank: stdout of ranks interleaves
    fh.write(line + "\n")
dist.destroy_process_group()
