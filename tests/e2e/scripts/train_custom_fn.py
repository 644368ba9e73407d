"""A plain training script: scheduler, a custom autograd.Function, optional torch.compile."""

import argparse

import torch
from torch import nn


class SafeLog(torch.autograd.Function):
    """A hand-written log whose backward divides by the input (1/x at 0 is inf)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.log()  # <- custom Function forward

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--bad-step", type=int, default=6)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = Net()
    run = torch.compile(model) if args.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    g = torch.Generator().manual_seed(1)
    for step in range(args.steps):
        x = torch.randn(32, 8, generator=g)
        y = torch.randint(0, 4, (32,), generator=g)
        probs = run(x).softmax(-1)
        if step >= args.bad_step:
            probs = probs * (y[:, None] != 3).float()  # a bug zeroes class 3
        p = probs.gather(1, y[:, None]).squeeze(1)
        loss = -SafeLog.apply(p).mean()  # <- custom log
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        print(f"step {step} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
