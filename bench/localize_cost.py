"""How long localization and early warnings take, relative to a plain training step.

Prints CPU-time ratios against the plain step measured in the same process, rounds
interleaved (this machine is shared and noisy): ``localize`` on a clean step and on a
faulty one (NaN in the batch), ``EarlyWarnings`` on a sampled and on an unsampled step.
Workloads as in issue 2: W1 small CNN (32x32x3, batch 64, SGD), W2 small transformer LM
(2 layers, d_model 128, seq 64, batch 16, AdamW, dropout 0.1).

    python bench/localize_cost.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from nantrap.torch.early_warnings import EarlyWarnings
from nantrap.torch.localize import localize


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 8 * 8, 10)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.c1(x)), 2)
        x = F.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


class LM(nn.Module):
    def __init__(self, vocab=1000, d=128, seq=64):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(seq, d))
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(d, vocab)
        self.register_buffer("causal", torch.triu(torch.full((seq, seq), -math.inf), 1))

    def forward(self, ids):
        return self.out(self.enc(self.tok(ids) + self.pos, mask=self.causal, is_causal=True))


def workloads():
    g = torch.Generator().manual_seed(0)
    cnn = CNN()
    x, y = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    yield "W1 CNN bs64 SGD", cnn, torch.optim.SGD(cnn.parameters(), lr=0.01), x, y, F.cross_entropy
    lm = LM()
    ids = torch.randint(0, 1000, (16, 65), generator=g)

    def lm_loss(logits, target):
        return F.cross_entropy(logits.reshape(-1, 1000), target.reshape(-1))

    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    yield "W2 TF-LM bs16 AdamW", lm, opt, ids[:, :-1], ids[:, 1:], lm_loss


def timed(fn) -> float:
    """CPU seconds of this process (all threads): robust to other processes on a shared
    2-core machine, where wall time mostly measures the neighbours."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def measure(name, model, opt, x, y, loss_fn, rounds: int) -> None:
    bad_x = x.clone()
    if bad_x.is_floating_point():
        bad_x[0].view(-1)[5] = math.nan
    else:  # token ids: poison the embedding row of the first token instead
        bad_x = None

    def plain():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    def run_step(inp=x):
        def step():
            opt.zero_grad()
            loss = loss_fn(model(inp), y)
            loss.backward()
            return loss

        return step

    ew = EarlyWarnings(model, every=10**9)
    ew.close()

    def sampled():
        ew2 = EarlyWarnings(model, every=1)
        plain()
        ew2.end_step(0)
        ew2.close()

    def unsampled():
        ew3 = EarlyWarnings(model, every=10**9)
        ew3.end_step(0)  # step 0 is sampled by default: skip it
        plain()
        ew3.end_step(1)
        ew3.close()

    def faulty():
        if bad_x is not None:
            return localize(run_step(bad_x), model)
        tok = model.tok.weight
        saved = tok.data[x[0, 0]].clone()
        tok.data[x[0, 0]] = math.nan
        try:
            return localize(run_step(), model)
        finally:
            tok.data[x[0, 0]] = saved

    variants = {
        "localize clean step": lambda: localize(run_step(), model),
        "localize faulty step": faulty,
        "early warnings, sampled step": sampled,
        "early warnings, unsampled step": unsampled,
    }
    for _ in range(3):
        plain()
        for fn in variants.values():
            fn()
    assert faulty() is not None
    ratios: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        base = statistics.median(timed(plain) for _ in range(3))
        for key, fn in variants.items():
            ratios[key].append(timed(fn) / base)
    print(f"{name}: ratio to one plain step (median of {rounds} rounds [min-max])")
    for key, values in ratios.items():
        print(
            f"  {key:32s} {statistics.median(values):5.2f}x  [{min(values):.2f}-{max(values):.2f}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for name, model, opt, x, y, loss_fn in workloads():
        measure(name, model, opt, x, y, loss_fn, args.rounds)


if __name__ == "__main__":
    main()
