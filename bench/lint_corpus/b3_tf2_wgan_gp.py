import tensorflow as tf


def gradient_penalty(critic, real, fake):
    alpha = tf.random.uniform([tf.shape(real)[0], 1, 1, 1], 0.0, 1.0)
    interp = alpha * real + (1 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(interp)
        pred = critic(interp)
    grads = tape.gradient(pred, interp)
    norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))  # BUG
    return tf.reduce_mean((norm - 1.0) ** 2)
