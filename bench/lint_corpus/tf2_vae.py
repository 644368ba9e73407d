import tensorflow as tf


class VAE(tf.keras.Model):
    def __init__(self):
        super().__init__()
        self.enc = tf.keras.layers.Dense(64)
        self.dec = tf.keras.layers.Dense(784, activation="sigmoid")

    def call(self, x):
        h = self.enc(x)
        mu, logvar = tf.split(h, 2, axis=1)
        z = mu + tf.exp(0.5 * logvar) * tf.random.normal(tf.shape(mu))
        return self.dec(z), mu, logvar


def vae_loss(model, x):
    x_hat, mu, logvar = model(x)
    rec = -tf.reduce_sum(x * tf.math.log(x_hat) + (1 - x) * tf.math.log(1 - x_hat), axis=1)  # BUG
    kl = -0.5 * tf.reduce_sum(1 + logvar - tf.square(mu) - tf.exp(logvar), axis=1)
    return tf.reduce_mean(rec + kl)
