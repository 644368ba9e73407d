"""Keras ``fit`` step time with nantrap's NanTrap (default settings) against plain ``fit``,
``tf.debugging.enable_check_numerics`` and ``keras.callbacks.TerminateOnNaN``.

Protocol (as in research/overhead-anchors.md, W3): a small CNN (32x32x3, batch 64, SGD,
dropout 0.1) on a fixed pool of 8 synthetic batches; one fresh process per variant and pass
(TensorFlow keeps global state), passes alternate the variant order; each process runs
``fit(steps_per_epoch=40, epochs=1+5)`` and drops the first (tracing) epoch; ms/step is the
epoch's wall time / steps, timed by an epoch-level callback (no per-step work). Workers are
pinned to CPUs 0-1. Printed: median ms/step over all kept epochs, min-max, ratio to plain,
per-pass medians, CPU time per step (process time of all TF threads: less sensitive
to other processes than wall time), and how many cores other processes used meanwhile
(this machine is shared; treat ratios within ~0.05 of 1.00 as no measurable overhead).

    python bench/keras_overhead.py [--passes 4] [--xla]
    python bench/keras_overhead.py --paired   # one process, alternating blocks (drift-proof)
    python bench/keras_overhead.py --paired --steps-per-execution 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "plain": "plain model.fit",
    "nantrap": "callbacks=[nantrap.keras.NanTrap()] (defaults: policy=rollback)",
    "check_numerics": "tf.debugging.enable_check_numerics() before build",
    "terminate_on_nan": "callbacks=[keras.callbacks.TerminateOnNaN()]",
}
XLA_VARIANTS = {
    "plain_xla": "plain model.fit, jit_compile=True",
    "nantrap_xla": "NanTrap(), jit_compile=True",
}
STEPS, EPOCHS = 40, 6


def worker(variant: str) -> dict:
    """Run one variant in this process; return per-epoch ms/step (first epoch dropped)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0, 1} & os.sched_getaffinity(0) or os.sched_getaffinity(0))
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, str(ROOT / "src"))
    if variant == "check_numerics":
        tf.debugging.enable_check_numerics()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8 * 64, 32, 32, 3)).astype("float32")
    ys = rng.integers(0, 10, size=(8 * 64,)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(64).repeat()
    model = _cnn(keras)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=variant.endswith("_xla"),
    )
    callbacks: list = []
    if variant.startswith("nantrap"):
        from nantrap.keras import NanTrap

        callbacks.append(NanTrap())
    elif variant == "terminate_on_nan":
        callbacks.append(keras.callbacks.TerminateOnNaN())

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ms: list[float] = []
            self.cpu: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.ms.append((time.perf_counter() - self._t) * 1e3 / STEPS)
            self.cpu.append((time.process_time() - self._c) * 1e3 / STEPS)

    timer = EpochTimer()
    model.fit(data, steps_per_epoch=STEPS, epochs=EPOCHS, verbose=0, callbacks=[*callbacks, timer])
    return {"variant": variant, "ms": timer.ms[1:], "cpu": timer.cpu[1:]}


def paired(
    rounds: int = 20, block: int = 15, jit_compile: bool = False, steps_per_execution: int = 1
) -> dict:
    """In one process: plain and guarded copies of the CNN stepped in alternating blocks
    through Keras' own compiled train function and callback hooks (what ``fit`` does per
    execution of ``steps_per_execution`` steps); per-round ratios cancel the drift of a
    shared machine. Times are per step."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0, 1} & os.sched_getaffinity(0) or os.sched_getaffinity(0))
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, str(ROOT / "src"))
    from nantrap.keras import NanTrap

    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8 * 64, 32, 32, 3)).astype("float32")
    ys = rng.integers(0, 10, size=(8 * 64,)).astype("int32")

    def build():
        keras.utils.set_random_seed(0)
        model = _cnn(keras)
        model.compile(
            optimizer=keras.optimizers.SGD(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
        data = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(64).repeat()
        return model, iter(data)

    plain, plain_it = build()
    plain.make_train_function()
    guarded, guarded_it = build()
    trap = NanTrap()
    trap.set_model(guarded)
    trap.on_train_begin()

    def step_plain(i):
        logs = plain.train_function(plain_it)
        return {k: float(v) for k, v in logs.items()}

    def step_guarded(i):
        logs = guarded.train_function(guarded_it)
        logs = {k: float(v) for k, v in logs.items()}
        trap.on_train_batch_end(i, logs)

    for i in range(5):
        step_plain(i)
        step_guarded(i)
    out: dict[str, list[float]] = {
        k: []
        for k in ("ms_plain", "ms_guarded", "ratios", "cpu_plain", "cpu_guarded", "cpu_ratios")
    }
    count = 5
    for r in range(rounds):
        wall, cpu = {}, {}
        for name, fn in (("plain", step_plain), ("guarded", step_guarded))[:: 1 if r % 2 else -1]:
            t, c = time.perf_counter(), time.process_time()
            for _ in range(block):
                fn(count)
                count += 1
            wall[name] = (time.perf_counter() - t) * 1e3 / (block * steps_per_execution)
            cpu[name] = (time.process_time() - c) * 1e3 / (block * steps_per_execution)
        out["ms_plain"].append(wall["plain"])
        out["ms_guarded"].append(wall["guarded"])
        out["ratios"].append(wall["guarded"] / wall["plain"])
        out["cpu_plain"].append(cpu["plain"])
        out["cpu_guarded"].append(cpu["guarded"])
        out["cpu_ratios"].append(cpu["guarded"] / cpu["plain"])
    trap.on_train_end()
    return out


def _cnn(keras):
    return keras.Sequential(
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


def _busy() -> float:
    """Busy CPU seconds of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def run_worker(variant: str) -> tuple[dict, float]:
    """One fresh process; returns its result and the cores other processes used meanwhile."""
    busy0, t0 = _busy(), time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", variant],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"worker {variant} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    own = result.get("cpu_s", 0.0)
    others = max(0.0, (_busy() - busy0 - own) / wall)
    return result, others


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--xla", action="store_true", help="also time jit_compile=True")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="only the in-process paired comparison of plain and NanTrap",
    )
    parser.add_argument(
        "--steps-per-execution", type=int, default=1, help="with --paired: compile(...=N)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paired:
        spe = args.steps_per_execution
        res = paired(jit_compile=args.xla, steps_per_execution=spe)
        med = statistics.median
        print(
            "paired in-process (plain vs NanTrap(), alternating blocks of 15 executions, "
            f"20 rounds, steps_per_execution={spe}" + (", jit_compile=True)" if args.xla else ")")
        )
        print(
            f"  plain   ms/step median {med(res['ms_plain']):.2f} "
            f"[{min(res['ms_plain']):.2f}-{max(res['ms_plain']):.2f}]"
        )
        print(
            f"  nantrap ms/step median {med(res['ms_guarded']):.2f} "
            f"[{min(res['ms_guarded']):.2f}-{max(res['ms_guarded']):.2f}]"
        )
        print(
            f"  paired per-round ratio: median **{med(res['ratios']):.3f}x** "
            f"[{min(res['ratios']):.2f}-{max(res['ratios']):.2f}]"
        )
        print(
            f"  CPU ms/step: plain {med(res['cpu_plain']):.2f}, nantrap "
            f"{med(res['cpu_guarded']):.2f}; paired CPU ratio median "
            f"**{med(res['cpu_ratios']):.3f}x** "
            f"[{min(res['cpu_ratios']):.2f}-{max(res['cpu_ratios']):.2f}]"
        )
        return 0
    if args.worker:
        start = time.process_time()
        result = worker(args.worker)
        result["cpu_s"] = time.process_time() - start
        print(json.dumps(result))
        return 0
    variants = dict(VARIANTS, **(XLA_VARIANTS if args.xla else {}))
    names = list(variants)
    runs: dict[str, list[list[float]]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    contention: list[str] = []
    start = time.perf_counter()
    for p in range(args.passes):
        order = names if p % 2 == 0 else names[::-1]
        for name in order:
            result, others = run_worker(name)
            runs[name].append(result["ms"])
            cpu[name].extend(result["cpu"])
            contention.append(f"{name} pass {p + 1} {others:.2f}")

    def pooled(name: str) -> float:
        return statistics.median(ms for r in runs[name] for ms in r)

    base = pooled("plain")
    base_xla = pooled("plain_xla") if "plain_xla" in runs else None
    print(
        f"Keras fit overhead: small CNN 32x32x3, batch 64, SGD; {args.passes} passes x "
        f"{EPOCHS - 1} timed epochs x {STEPS} steps; one process per variant and pass\n"
    )
    cpu_base = statistics.median(cpu["plain"])
    cpu_base_xla = statistics.median(cpu["plain_xla"]) if "plain_xla" in cpu else None
    print("| variant | what | median ms/step | min-max | ratio | CPU ms/step | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        all_ms = [ms for r in runs[name] for ms in r]
        med = statistics.median(all_ms)
        xla = name.endswith("_xla") and base_xla is not None
        ref = base_xla if xla else base
        cpu_med = statistics.median(cpu[name])
        cpu_ref = cpu_base_xla if xla else cpu_base
        print(
            f"| {name} | {variants[name]} | {med:.2f} | {min(all_ms):.2f}-{max(all_ms):.2f} | "
            f"**{med / ref:.2f}x** | {cpu_med:.2f} | {cpu_med / cpu_ref:.2f}x |"
        )
    print("\nper-pass medians (ms/step):")
    for name in names:
        print(f"  {name}: " + " / ".join(f"{statistics.median(r):.2f}" for r in runs[name]))
    print("\ncores used by other processes while each worker ran: " + ", ".join(contention))
    print(f"total {time.perf_counter() - start:.0f} s; ratios of *_xla rows are to plain_xla")
    return 0


if __name__ == "__main__":
    sys.exit(main())
