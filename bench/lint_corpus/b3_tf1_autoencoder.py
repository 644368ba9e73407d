import tensorflow as tf

n_input, n_hidden = 784, 256
X = tf.placeholder("float", [None, n_input])
weights = {
    "encoder": tf.Variable(tf.random_normal([n_input, n_hidden])),
    "decoder": tf.Variable(tf.random_normal([n_hidden, n_input])),
}


def encoder(x):
    return tf.nn.sigmoid(tf.matmul(x, weights["encoder"]))


def decoder(x):
    return tf.nn.sigmoid(tf.matmul(x, weights["decoder"]))


encoder_op = encoder(X)
decoder_op = decoder(encoder_op)
y_pred = decoder_op
y_true = X
cost = tf.reduce_mean(-y_true * tf.log(y_pred) - (1 - y_true) * tf.log(1 - y_pred))  # BUG
optimizer = tf.train.RMSPropOptimizer(0.01).minimize(cost)
