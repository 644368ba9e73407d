"""TensorFlow models for the analyzer: the seed's TF1 graph (and its fixes), Keras CNNs."""

from __future__ import annotations

import keras
import tensorflow as tf


def seed_graph(variant: str = "log") -> tf.compat.v1.GraphDef:
    """The TF1 tutorial network the seed post discusses, with its training op.

    ``log``: ``-reduce_sum(y_ * tf.log(y))`` on a softmax (the NaN trap);
    ``clip``: the post's "fix" ``tf.log(tf.clip_by_value(y, 1e-8, 1.0))`` (a fake loss);
    ``logits``: ``softmax_cross_entropy_with_logits`` (the real fix).
    """
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 784], name="x")
        y_ = tf.compat.v1.placeholder(tf.float32, [None, 10], name="y_")
        W = tf.Variable(tf.random.truncated_normal([784, 10], stddev=0.1, seed=0), name="W")
        b = tf.Variable(tf.zeros([10]), name="b")
        logits = tf.matmul(x, W) + b
        y = tf.nn.softmax(logits)
        if variant == "log":
            ce = tf.reduce_mean(-tf.reduce_sum(y_ * tf.math.log(y), axis=[1]))
        elif variant == "clip":
            ce = tf.reduce_mean(
                -tf.reduce_sum(y_ * tf.math.log(tf.clip_by_value(y, 1e-8, 1.0)), axis=[1])
            )
        else:
            ce = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=logits))
        tf.compat.v1.train.GradientDescentOptimizer(0.5).minimize(ce)
    return g.as_graph_def()


def keras_cnn(log_probs: str = "none") -> keras.Model:
    """A small Keras CNN; ``log_probs="log"`` appends log(softmax) (bad), ``"stable"``
    log_softmax (fixed)."""
    inputs = keras.Input((12, 12, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.MaxPooling2D(name="pool1")(h)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    logits = keras.layers.Dense(5, name="head")(h)
    if log_probs == "log":
        out = keras.layers.Lambda(lambda z: keras.ops.log(keras.ops.softmax(z)), name="logp")(
            logits
        )
    elif log_probs == "stable":
        out = keras.layers.Lambda(lambda z: keras.ops.log_softmax(z), name="logp")(logits)
    else:
        out = keras.layers.Softmax(name="probs")(logits)
    return keras.Model(inputs, out, name="cnn")


def keras_recurrent(kind: str = "lstm", head: str = "logits", units: int = 8) -> keras.Model:
    """A Keras sequence classifier over (10, 6) features; ``head="log"`` takes the log of the
    last hidden state (seeded: h is in [-1, 1]); ``"stacked"`` stacks LSTM -> GRU ->
    SimpleRNN."""
    layers = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}
    inputs = keras.Input((10, 6), name="seq")
    if head == "stacked":
        h = keras.layers.LSTM(units, return_sequences=True, name="lstm")(inputs)
        h = keras.layers.GRU(units, return_sequences=True, name="gru")(h)
        h = keras.layers.SimpleRNN(units, name="rnn")(h)
    else:
        h = layers[kind](units, name=kind)(inputs)
    if head == "log":
        h = keras.layers.Lambda(lambda z: keras.ops.log(z), name="log_h")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h), name=f"{kind}_{head}")


def keras_separable() -> keras.Model:
    """DepthwiseConv2D (depth multiplier 2) and SeparableConv2D."""
    inputs = keras.Input((10, 10, 4), name="image")
    h = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(inputs)
    h = keras.layers.ReLU(name="act")(h)
    h = keras.layers.SeparableConv2D(6, 3, name="sep")(h)
    return keras.Model(inputs, h, name="separable")
