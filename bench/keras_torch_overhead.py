"""Keras 3 on the torch backend: step time with nantrap's NanTrap (default settings) against
plain ``fit`` steps and ``torch.autograd.detect_anomaly`` (what a torch user reaches for).

Protocol: the small CNN of ``keras_overhead.py`` (32x32x3, batch 64, SGD, dropout 0.1) on a
fixed pool of 8 synthetic batches; three copies of the model stepped in one process through
Keras' own train function and callback hooks (what ``fit`` does per step, logs read as
Python floats like Keras' callback list does), in alternating blocks of ``--block`` steps
for ``--rounds`` rounds; per-round ratios cancel the drift of a shared machine. Printed:
median ms/step and CPU ms/step per variant, and the median per-round ratio to plain.

    python bench/keras_torch_overhead.py [--rounds 12] [--block 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from nantrap.keras import NanTrap  # noqa: E402

BATCH, POOL = 64, 8


def _cnn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: steady on a shared machine, where 2 threads on one free "
        "core wait on each other)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0, 1} & os.sched_getaffinity(0) or os.sched_getaffinity(0))
    rng = np.random.default_rng(0)
    pool = [
        (
            torch.from_numpy(rng.normal(size=(BATCH, 32, 32, 3)).astype("float32")),
            torch.from_numpy(rng.integers(0, 10, size=(BATCH,)).astype("int64")),
        )
        for _ in range(POOL)
    ]

    def stepper(model, trap=None, anomaly=False):
        model.make_train_function()
        if trap is not None:
            trap.set_model(model)
            trap.on_train_begin()
        fn = model.train_function

        def step(i):
            ctx = torch.autograd.detect_anomaly(check_nan=True) if anomaly else _nothing()
            with ctx:
                logs = fn([pool[i % POOL]])
            logs = {k: float(v) for k, v in logs.items()}
            if trap is not None:
                trap.on_train_batch_end(i, logs)

        return step

    trap = NanTrap()
    variants = {
        "plain": stepper(_cnn()),
        "nantrap": stepper(_cnn(), trap),
        "detect_anomaly": stepper(_cnn(), anomaly=True),
    }
    names = list(variants)
    for i in range(5):
        for step in variants.values():
            step(i)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    count = 5
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.block):
                variants[name](count)
                count += 1
            wall[name].append((time.perf_counter() - t) * 1e3 / args.block)
            cpu[name].append((time.process_time() - c) * 1e3 / args.block)
    trap.on_train_end()
    med = statistics.median
    print(
        f"Keras {keras.__version__} on torch {torch.__version__} ({args.threads} thread(s), "
        f"load {os.getloadavg()[0]:.1f}): small CNN 32x32x3, batch {BATCH}, SGD; "
        f"{args.rounds} rounds x {args.block} steps per variant, alternating\n"
    )
    print("| variant | median ms/step | paired ratio to plain | CPU ms/step | CPU ratio |")
    print("|---|---|---|---|---|")
    for name in names:
        ratios = [w / p for w, p in zip(wall[name], wall["plain"], strict=True)]
        cpu_ratios = [w / p for w, p in zip(cpu[name], cpu["plain"], strict=True)]
        print(
            f"| {name} | {med(wall[name]):.2f} | **{med(ratios):.3f}x** "
            f"[{min(ratios):.2f}-{max(ratios):.2f}] | {med(cpu[name]):.2f} | "
            f"{med(cpu_ratios):.3f}x |"
        )
    print(f"\nNanTrap diagnoses during the run (expected none): {len(trap.diagnoses)}")
    return 0


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    sys.exit(main())
