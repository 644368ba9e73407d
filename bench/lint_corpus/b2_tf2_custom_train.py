import tensorflow as tf

model = tf.keras.Sequential([
    tf.keras.layers.Dense(128, activation="relu"),
    tf.keras.layers.Dense(10, activation="softmax"),
])
optimizer = tf.keras.optimizers.Adam()


@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        probs = model(x, training=True)
        loss = tf.reduce_mean(-tf.reduce_sum(y * tf.math.log(probs), axis=1))  # BUG
    grads = tape.gradient(loss, model.trainable_variables)
    grads = [g / tf.norm(g) for g in grads]
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


def entropy(p):
    return -tf.reduce_sum(p * tf.math.log(p), axis=-1)  # BUG
