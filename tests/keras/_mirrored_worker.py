"""Runs NanTrap under ``tf.distribute.MirroredStrategy`` on two logical CPUs, in its own
process (the logical devices must be configured before TensorFlow initializes them), and
writes what happened as JSON: ``python -m tests.keras._mirrored_worker OUT.json``."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import tensorflow as tf

BATCH = 8  # global: 4 rows per replica


def hand_ce(y, p):
    return -tf.reduce_mean(tf.reduce_sum(y * tf.math.log(p), axis=-1))


def build(keras, optimizer=None):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1), loss=hand_ce)
    return model


def data(batches=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batches * BATCH, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(batches * BATCH) % 3]
    x[5 * BATCH + 4 : 6 * BATCH] *= 1000.0  # batch 5, the second replica's rows only
    return x, y


def reference(keras, strategy, initial, x, y, steps):
    """The same strategy, no guard, batch by batch: the losses and the weights after each.
    (Under the strategy Keras sums the replicas' losses of this function loss: they are
    twice the one-device values, and so are the gradients; the guard keeps Keras' numbers.)
    """
    with strategy.scope():
        model = build(keras)
    model.set_weights(initial)
    losses, weights = [], []
    for i in steps:
        rows = slice(i * BATCH, (i + 1) * BATCH)
        losses.append(float(model.train_on_batch(x[rows], y[rows])))
        weights.append(model.get_weights())
    return losses, weights


def replicas_agree(model) -> bool:
    """Every mirrored weight holds the same bits on both replicas."""
    for v in model.weights:
        parts = [np.asarray(p.numpy()) for p in v.value.values]
        if len(parts) != 2 or any(p.tobytes() != parts[0].tobytes() for p in parts):
            return False
    return True


def scenario(keras, strategy, nantrap, *, policy, spe, ref_steps, updates, **options):
    """A guarded fit; the reference runs ``ref_steps`` and the weights are compared after
    ``updates`` of them."""
    x, y = data()
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build(keras)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=hand_ce, steps_per_execution=spe)
    initial = model.get_weights()
    trap = nantrap.keras.NanTrap(policy=policy, log_every=1, early_warnings=0, **options)
    hist = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[trap])
    ref_losses, ref_weights = reference(keras, strategy, initial, x, y, ref_steps)
    logged = {e["step"]: e["loss"] for e in trap.events if e["type"] == "step"}
    return {
        "diagnoses": [
            {
                "code": d.code,
                "step": d.step,
                "action": d.action,
                "module": d.module,
                "op": d.op,
                "producer": d.evidence.get("producer", {}).get("module"),
            }
            for d in trap.diagnoses
        ],
        "iterations": int(model.optimizer.iterations.numpy()),
        "weights_diff": max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(model.get_weights(), ref_weights[updates - 1], strict=True)
        ),
        "replicas_agree": replicas_agree(model),
        "logged_steps": sorted(logged),
        "loss_diff": max(
            abs(float(logged[s]) - r) for s, r in zip(sorted(logged), ref_losses, strict=True)
        ),
        "end": trap.events[-1],
        "epoch_loss": float(hist.history["loss"][0]),
    }


def custom_loop(keras, strategy, nantrap):
    """``nantrap.tf.guard_step`` over a ``strategy.run`` step of a custom loop."""
    x, y = data()
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build(keras)
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
    guard = nantrap.tf.guard_step(model, optimizer, policy="skip")

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = hand_ce(yb, model(xb, training=True)) / strategy.num_replicas_in_sync
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @guard
    @tf.function
    def train_step(xb, yb):
        return strategy.reduce("SUM", strategy.run(replica_step, args=(xb, yb)), axis=None)

    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    for xb, yb in strategy.experimental_distribute_dataset(batches):
        train_step(xb, yb)
    guard.close()
    return {
        "diagnoses": [(d.code, d.step, d.action, d.op) for d in guard.diagnoses],
        "iterations": int(optimizer.iterations.numpy()),
        "finite": all(bool(np.isfinite(w).all()) for w in model.get_weights()),
        "replicas_agree": replicas_agree(model),
    }


def bad_input(keras, strategy, nantrap):
    """A NaN in the second replica's rows of batch 5: named in the joined global batch."""
    x, y = data()
    x[5 * BATCH + 4 : 6 * BATCH] /= 1000.0  # no log(0) fault this time: one NaN instead
    x[5 * BATCH + 5, 2] = np.nan
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build(keras)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=hand_ce, steps_per_execution=2)
    trap = nantrap.keras.NanTrap(policy="skip")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[trap])
    return [
        (d.code, str(d.category), d.step, d.module, d.evidence["stats"]["nan"])
        for d in trap.diagnoses
    ]


def main(out: str) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    import nantrap.keras
    import nantrap.tf
    from nantrap.errors import ConfigError

    logging.getLogger("nantrap").setLevel(logging.ERROR)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"replicas": strategy.num_replicas_in_sync}
    result["skip"] = scenario(
        keras, strategy, nantrap, policy="skip", spe=1, ref_steps=[0, 1, 2, 3, 4, 6, 7], updates=7
    )
    result["stop"] = scenario(
        keras,
        strategy,
        nantrap,
        policy="stop",
        spe=4,
        ref_steps=[0, 1, 2, 3, 4],
        updates=4,
        snapshot_every=1,
    )
    result["custom_loop"] = custom_loop(keras, strategy, nantrap)
    result["bad_input"] = bad_input(keras, strategy, nantrap)
    x, y = data()
    with strategy.scope():
        model = build(keras, keras.optimizers.AdamW(1e-3))
    try:
        model.fit(x, y, batch_size=BATCH, verbose=0, callbacks=[nantrap.keras.NanTrap("skip")])
        result["adamw"] = None
    except ConfigError as err:
        result["adamw"] = str(err)
    result["adamw_untouched"] = not {"apply", "_distributed_tf_update_step"} & set(
        vars(model.optimizer)
    ) and "train_step" not in vars(model)
    central = tf.distribute.experimental.CentralStorageStrategy(["/cpu:0", "/cpu:1"])
    with central.scope():
        model = build(keras)
    try:
        model.fit(x, y, batch_size=BATCH, verbose=0, callbacks=[nantrap.keras.NanTrap("skip")])
        result["central_storage"] = None
    except ConfigError as err:
        result["central_storage"] = str(err)
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
