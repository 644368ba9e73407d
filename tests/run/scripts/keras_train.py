"""A plain Keras script (no nantrap in it): one batch of its data holds a NaN."""

import keras
import numpy as np

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
x[20, 1] = np.nan  # in the 3rd batch of 8
keras.utils.set_random_seed(0)
model = keras.Sequential(
    [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
)
model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
weights = np.concatenate([w.ravel() for w in model.get_weights()])
print("finite weights", bool(np.isfinite(weights).all()))
print("keras backend", keras.backend.backend())
