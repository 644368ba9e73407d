"""Small real training setups for the guard tests: an MLP with BatchNorm and dropout, a
data stream, both loop forms, and exact state comparison."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import nantrap.torch as nt


class Net(nn.Module):
    """6 -> 1 regression MLP with BatchNorm (buffers) and dropout (RNG)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def batches(n: int, *, seed: int = 0, size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 1, generator=g)
    out = []
    for _ in range(n):
        x = torch.randn(size, 6, generator=g)
        out.append((x, x @ w + 0.1 * torch.randn(size, 1, generator=g)))
    return out


def make(
    policy: str = "rollback", *, lr: float = 0.05, seed: int = 0, guarded: bool = True, **options
):
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if guarded:
        options.setdefault("early_warnings", 0)
        opt = nt.guard(opt, model, policy=policy, **options)
    return model, opt


def closure_step(model, opt, x, y, *, poison: bool = False):
    """Closure form; ``poison`` puts log(0) into the loss (forward +inf, backward NaN)."""

    def closure():
        opt.zero_grad()
        err = (model(x) - y) ** 2
        loss = err.mean()
        if poison:
            keep = torch.ones_like(err)
            keep[0] = 0.0
            loss = loss - torch.log(err * keep).mean()  # <- log of zero
        loss.backward()
        return loss

    return opt.step(closure)


def loop_step(model, opt, x, y, *, poison: bool = False):
    """Loop form B: backward then a bare opt.step()."""
    opt.zero_grad()
    err = (model(x) - y) ** 2
    loss = err.mean()
    if poison:
        keep = torch.ones_like(err)
        keep[0] = 0.0
        loss = loss - torch.log(err * keep).mean()  # <- log of zero in the loop
    loss.backward()
    opt.step()
    return loss


def state(model, opt) -> list[torch.Tensor]:
    """Every tensor a step changes: weights, buffers, optimizer state."""
    tensors = [t.detach().clone() for t in model.state_dict().values()]
    for p in (p for g in opt.param_groups for p in g["params"]):
        tensors += [v.clone() for v in opt.state.get(p, {}).values() if torch.is_tensor(v)]
    return tensors


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def finite(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def mse(model, data) -> float:
    model.eval()
    with torch.no_grad():
        value = sum(F.mse_loss(model(x), y).item() for x, y in data) / len(data)
    model.train()
    return value if math.isfinite(value) else math.inf


def source_line(marker: str, path: str = __file__) -> str:
    """``path:line`` of the line in ``path`` (default: this file) ending with ``marker``."""
    from pathlib import Path

    lines = Path(path).read_text().splitlines()
    hits = [i for i, text in enumerate(lines, 1) if text.rstrip().endswith(marker)]
    assert len(hits) == 1, (marker, hits)
    return f"{path}:{hits[0]}"
