import tensorflow as tf


def build(x, n_classes):
    w = tf.get_variable("w", [x.get_shape()[1], n_classes])
    logits = tf.matmul(x, w)
    prediction = tf.nn.softmax(logits)
    return prediction


inputs = tf.placeholder(tf.float32, [None, 100])
labels = tf.placeholder(tf.float32, [None, 5])
pred = build(inputs, 5)
# "fixed" the NaN loss
loss = tf.reduce_mean(-tf.reduce_sum(labels * tf.log(tf.clip_by_value(pred, 1e-10, 1.0)), axis=1))  # BUG
opt = tf.train.AdamOptimizer(0.001).minimize(loss)
