"""A plain tf.compat.v1 graph script (no nantrap in it): the seed's world, with a learning
rate that makes the weights blow up."""

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1
tf1.disable_eager_execution()
tf1.set_random_seed(0)
x = tf1.placeholder(tf.float32, [None, 4])
y = tf1.placeholder(tf.float32, [None, 1])
w = tf1.get_variable("w", [4, 1], initializer=tf1.ones_initializer())
loss = tf.reduce_mean(tf.square(tf.matmul(x, w) - y))
train_step = tf1.train.GradientDescentOptimizer(4.0).minimize(loss)
rng = np.random.default_rng(0)
with tf1.Session() as sess:
    sess.run(tf1.global_variables_initializer())
    for _ in range(20):
        xs = rng.normal(size=(16, 4)).astype("float32") * 3
        sess.run(train_step, feed_dict={x: xs, y: xs.sum(1, keepdims=True)})
    print("final loss", sess.run(loss, feed_dict={x: xs, y: xs.sum(1, keepdims=True)}))
