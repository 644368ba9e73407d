"""The guard on a GPU: host syncs it adds per step, step-time ratios, and that it still
catches and localizes a fault there (and stays quiet under AMP).

Run on a CUDA machine: ``PYTHONPATH=src python bench/gpu_check.py [--json out.json]``.
Ratios are against the plain loop in the same process, variants interleaved.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import nantrap.torch as nt

DEV = "cuda" if torch.cuda.is_available() else "cpu"


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 8 * 8, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class LM(nn.Module):
    def __init__(self, vocab=1000, d=128, seq=64, layers=2, heads=4):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(seq))

    def forward(self, idx):
        h = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.enc(h, mask=self.causal, is_causal=True))


def workload(name):
    g = torch.Generator().manual_seed(0)
    if name == "cnn":
        model = CNN()
        batches = [
            (torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
            for _ in range(8)
        ]
        opt_cls, lr = torch.optim.SGD, 0.01
        loss_fn = F.cross_entropy
    else:
        # "lm": the small LM; "gpt": GPT-2-small-sized (12 layers, d 768, seq 256)
        big = name == "gpt"
        model = LM(vocab=8000, d=768, seq=256, layers=12, heads=12) if big else LM()
        vocab, seq = (8000, 256) if big else (1000, 64)
        batches = []
        for _ in range(8):
            idx = torch.randint(0, vocab, (16, seq + 1), generator=g)
            batches.append((idx[:, :-1], idx[:, 1:]))
        opt_cls, lr = torch.optim.AdamW, 1e-3

        def loss_fn(out, y):
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    batches = [(x.to(DEV), y.to(DEV)) for x, y in batches]
    return model, batches, opt_cls, lr, loss_fn


def make(name, variant):
    torch.manual_seed(0)
    model, batches, opt_cls, lr, loss_fn = workload(name)
    model = model.to(DEV)
    opt = opt_cls(model.parameters(), lr=lr)
    if variant == "guard":
        opt = nt.guard(opt, model, policy="skip")
    state = {"i": 0}

    def step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        if variant == "anomaly":
            with torch.autograd.detect_anomaly(check_nan=True):
                loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
        else:
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        if variant == "plain+item":
            loss.item()

    return step, opt


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def count_syncs(step, n=20):
    """Host syncs per step, as CUDA's sync debug mode reports them."""
    for _ in range(3):
        step()
    _sync()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(n):
                step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    where = sorted({f"{w.filename.rsplit('/', 2)[-1]}:{w.lineno}" for w in syncs})
    return len(syncs) / n, where


def timing(name, variants, reps=7, steps=40):
    steps_fns = {v: make(name, v)[0] for v in variants}
    for fn in steps_fns.values():
        for _ in range(10):
            fn()
    _sync()
    times = {v: [] for v in variants}
    for r in range(reps):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            _sync()
            t = time.perf_counter()
            for _ in range(steps):
                steps_fns[v]()
            _sync()
            times[v].append((time.perf_counter() - t) / steps * 1e3)
    base = statistics.median(times["plain"])
    return {v: (statistics.median(ts), statistics.median(ts) / base) for v, ts in times.items()}


def fault_check():
    """log(0) injected at step 5 on the GPU: caught, localized, weights kept finite."""
    torch.manual_seed(0)
    model, batches, _, _, _ = workload("cnn")
    model = model.to(DEV)
    opt = nt.guard(torch.optim.SGD(model.parameters(), lr=0.01), model, policy="skip")
    for i in range(8):
        x, y = batches[i % 8]

        def closure(x=x, y=y, i=i):
            opt.zero_grad()
            p = torch.softmax(model(x), -1).gather(1, y[:, None]).squeeze(1)
            keep = torch.ones_like(p)
            if i == 5:
                keep[0] = 0
            loss = -torch.log(p * keep).mean()
            loss.backward()
            return loss

        opt.step(closure)
    d = [x for x in opt.diagnoses if x.incident]
    finite = all(torch.isfinite(p).all() for p in model.parameters())
    return {
        "diagnoses": [x.headline() for x in d],
        "weights_finite": bool(finite),
        "first": d[0].to_dict() if d else None,
    }


def amp_check(dtype):
    """A clean AMP run (fp16 + GradScaler, or bf16) must give no incident."""
    torch.manual_seed(0)
    model, batches, _, _, loss_fn = workload("lm")
    model = model.to(DEV)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    opt = nt.guard(opt, model, policy="skip", scaler=scaler)
    for i in range(30):
        x, y = batches[i % 8]
        with torch.autocast(DEV, dtype=dtype):
            loss = loss_fn(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return {
        "incidents": [d.headline() for d in opt.diagnoses if d.incident],
        "final_loss": loss.item(),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    parser.add_argument("--dry-run", action="store_true", help="CPU smoke run of this script")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.dry_run:
        print("no CUDA device (use --dry-run to smoke-test on the CPU)", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}
    print(f"# guard on {result['device']} (torch {torch.__version__})\n")
    print("| workload | variant | host syncs/step | where |")
    print("|---|---|---|---|")
    for name in ("cnn", "lm") if cuda else ():
        for v in ("plain", "guard"):
            per_step, where = count_syncs(make(name, v)[0])
            result[f"syncs_{name}_{v}"] = per_step
            print(f"| {name} | {v} | {per_step:g} | {', '.join(where[:4])} |")
    print("\n| workload | variant | ms/step (median) | ratio to plain |")
    print("|---|---|---|---|")
    for name in ("cnn", "lm", "gpt") if cuda else ("cnn", "lm"):
        res = timing(
            name,
            ["plain", "plain+item", "guard", "anomaly"],
            reps=7 if cuda else 1,
            steps=40 if cuda else 3,
        )
        for v, (ms, ratio) in res.items():
            result[f"time_{name}_{v}"] = [ms, ratio]
            print(f"| {name} | {v} | {ms:.3f} | {ratio:.3f}x |")
    result["fault"] = fault_check()
    print(
        "\nfault (log(0) at step 5, policy skip):",
        json.dumps(result["fault"]["diagnoses"]),
        "weights finite:",
        result["fault"]["weights_finite"],
    )
    for dt in (torch.float16, torch.bfloat16):
        r = amp_check(dt)
        result[f"amp_{dt}"] = r
        ok = not r["incidents"] and math.isfinite(r["final_loss"])
        print(
            f"AMP {dt}: incidents {r['incidents'] or 'none'}, final loss {r['final_loss']:.3f}"
            f" -> {'ok' if ok else 'PROBLEM'}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
