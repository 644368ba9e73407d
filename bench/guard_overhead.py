"""Step-time cost of nantrap's torch guard against the plain loop, in one process.

Variants (each with its own identically seeded model and optimizer, interleaved):

- plain: zero_grad, forward, loss, backward, step
- guard: ``nantrap.torch.guard(opt, model)`` with default settings (loop form B)
- anomaly: ``torch.autograd.detect_anomaly()`` around forward + backward
- naive: ``isfinite(loss).item()`` and ``isfinite(g).all().item()`` per parameter

Workloads: a small CNN (32x32x3, batch 64, SGD) and a small transformer LM (2 layers,
d_model 128, seq 64, batch 16, AdamW); a fixed pool of 8 synthetic batches, cycled.
Protocol: warm-up, then R rounds of S steps per variant in rotated order; ms/step is the
median over rounds, the paired ratio the median over rounds of variant/plain from the same
round (it cancels slow drift on a shared machine).

Then localization: on a guarded closure-form step with an injected log(0), the extra time
of the incident step (detect + replay under op tracing + restore) in clean step-times; and
the loop-form traced step (ArmedTrace) in step-times.

``--syncs`` (CUDA only): host syncs per guarded step, counted with
``torch.cuda.set_sync_debug_mode``.

    python bench/guard_overhead.py                 # ~2-3 min on 2 CPU cores
    python bench/guard_overhead.py --device cuda --syncs
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import nantrap.torch as nt

VARIANTS = ("plain", "guard", "anomaly", "naive")


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


class LM(nn.Module):
    def __init__(self, vocab=1000, d=128, layers=2, seq=64):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d, vocab)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(seq))
        self.register_buffer("positions", torch.arange(seq))

    def forward(self, idx):
        h = self.tok(idx) + self.pos(self.positions[: idx.shape[1]])
        h = self.enc(h, mask=self.causal, is_causal=True)
        return self.out(h)


def workloads(device):
    g = torch.Generator().manual_seed(0)
    cnn_data = [
        (torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
        for _ in range(8)
    ]
    lm_data = []
    for _ in range(8):
        ids = torch.randint(0, 1000, (16, 65), generator=g)
        lm_data.append((ids[:, :-1], ids[:, 1:]))

    def cnn():
        return CNN(), lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    def lm():
        return LM(), lambda m: torch.optim.AdamW(m.parameters(), lr=3e-4)

    def ce(logits, y):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    move = lambda data: [(x.to(device), y.to(device)) for x, y in data]  # noqa: E731
    return {
        "CNN 32x32x3 bs64 SGD": (cnn, move(cnn_data), ce),
        "LM 2x128 seq64 bs16 AdamW": (lm, move(lm_data), ce),
    }


def build(factory, variant, device):
    torch.manual_seed(0)
    model, make_opt = factory()
    model = model.to(device)
    opt = make_opt(model)
    if variant == "guard":
        opt = nt.guard(opt, model)
    return model, opt


def make_step(variant, model, opt, loss_fn) -> Callable:
    params = [p for p in model.parameters()]

    def plain(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    def anomaly(x, y):
        opt.zero_grad()
        with torch.autograd.detect_anomaly(check_nan=True):
            loss = loss_fn(model(x), y)
            loss.backward()
        opt.step()

    def naive(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        if not torch.isfinite(loss).item():
            raise FloatingPointError("loss")
        loss.backward()
        for p in params:
            if p.grad is not None and not torch.isfinite(p.grad).all().item():
                raise FloatingPointError("grad")
        opt.step()

    return {"plain": plain, "guard": plain, "anomaly": anomaly, "naive": naive}[variant]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, data, start, n, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for i in range(n):
        x, y = data[(start + i) % len(data)]
        step(x, y)
    sync(device)
    return (time.perf_counter() - t0) / n * 1e3


def bench_workload(name, factory, data, loss_fn, device, rounds, steps, warmup):
    runs = {}
    for v in VARIANTS:
        model, opt = build(factory, v, device)
        runs[v] = make_step(v, model, opt, loss_fn)
        time_steps(runs[v], data, 0, warmup, device)
    times = {v: [] for v in VARIANTS}
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for v in order:
            times[v].append(time_steps(runs[v], data, r * steps, steps, device))
    return times


def localization_cost(factory, data, loss_fn, device, reps=3):
    """Incident step time minus a clean step, in clean step-times (closure form), and the
    traced step of the loop form in step-times."""
    model, opt = build(factory, "guard", device)
    opt.guard.config = opt.guard.config.replace(policy="skip")
    opt.guard.engine.policy.policy = type(opt.guard.engine.policy.policy)("skip")

    def step(x, y, poison=False):
        def closure():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            if poison:
                loss = loss - torch.log(torch.zeros((), device=x.device))
            loss.backward()
            return loss

        opt.step(closure)

    clean, incident = [], []
    for r in range(reps):
        for i in range(6):
            clean.append(time_steps(step, data, i + r * 6, 1, device))
        sync(device)
        t0 = time.perf_counter()
        step(*data[r % len(data)], poison=True)
        sync(device)
        incident.append((time.perf_counter() - t0) * 1e3)
    base = statistics.median(clean)
    found = opt.diagnoses[-1]
    closure_ratio = (statistics.median(incident) - base) / base

    from nantrap.torch.localize import ArmedTrace

    plain = make_step("plain", model, opt, loss_fn)
    trace = ArmedTrace(model)
    traced = []
    for r in range(reps):
        trace.arm()
        sync(device)
        t0 = time.perf_counter()
        plain(*data[r % len(data)])  # the guard's own step finishes nothing here
        trace.finish(0)
        sync(device)
        traced.append((time.perf_counter() - t0) * 1e3)
    trace.close()
    return base, closure_ratio, statistics.median(traced) / base, found


def count_syncs(factory, data, loss_fn, device, steps=60):
    """Host syncs per step, plain vs guarded (CUDA sync debug mode)."""
    out = {}
    for v in ("plain", "guard"):
        model, opt = build(factory, v, device)
        step = make_step(v, model, opt, loss_fn)
        time_steps(step, data, 0, 3, device)
        per_step = []
        for i in range(steps):
            x, y = data[i % len(data)]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    step(x, y)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            per_step.append(sum("synchroniz" in str(w.message) for w in caught))
        out[v] = per_step
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--syncs", action="store_true", help="count host syncs (CUDA)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    logging.getLogger("nantrap").setLevel(logging.ERROR)
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(
        f"# nantrap guard overhead ({device}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, load avg {load} at start)\n"
    )
    print(
        f"{args.rounds} rounds x {args.steps} steps per variant, interleaved, "
        f"{args.warmup} warm-up steps; medians; paired = median over rounds of variant / "
        "plain in the same round.\n"
    )
    print("| workload | variant | ms/step (median) | min-max | ratio | paired ratio [min-max] |")
    print("|---|---|---|---|---|---|")
    loc_rows, sync_rows = [], []
    for name, (factory, data, loss_fn) in workloads(device).items():
        times = bench_workload(
            name, factory, data, loss_fn, device, args.rounds, args.steps, args.warmup
        )
        base = statistics.median(times["plain"])
        for v in VARIANTS:
            med = statistics.median(times[v])
            paired = [a / b for a, b in zip(times[v], times["plain"], strict=True)]
            print(
                f"| {name} | {v} | {med:.2f} | {min(times[v]):.2f}-{max(times[v]):.2f} | "
                f"{med / base:.3f}x | {statistics.median(paired):.3f} "
                f"[{min(paired):.2f}-{max(paired):.2f}] |"
            )
        loc_rows.append((name, *localization_cost(factory, data, loss_fn, device)))
        if args.syncs and device.type == "cuda":
            syncs = count_syncs(factory, data, loss_fn, device)
            sync_rows.append((name, syncs))
    print(
        "\n| workload | clean guarded step ms | localization (closure replay) "
        "| loop-form traced step | diagnosis |"
    )
    print("|---|---|---|---|---|")
    for name, base, closure_ratio, traced, found in loc_rows:
        print(
            f"| {name} | {base:.2f} | +{closure_ratio:.2f} step-times | {traced:.2f} "
            f"step-times | {found.code} {found.neutral_op or found.op or ''} |"
        )
    if sync_rows:
        print("\n| workload | host syncs per step: plain | guard | guard - plain (median) |")
        print("|---|---|---|---|")
        for name, syncs in sync_rows:
            hist = {v: {k: s.count(k) for k in sorted(set(s))} for v, s in syncs.items()}
            extra = statistics.median(
                g - p for g, p in zip(syncs["guard"], syncs["plain"], strict=True)
            )
            print(f"| {name} | {hist['plain']} | {hist['guard']} | {extra:g} |")
    end = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"\nload avg at end {end} (a shared machine: other processes ran meanwhile)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
