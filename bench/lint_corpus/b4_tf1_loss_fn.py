import tensorflow as tf
from tensorflow.examples.tutorials.mnist import input_data

mnist = input_data.read_data_sets("MNIST_data/", one_hot=True)


def weight_variable(shape):
    return tf.Variable(tf.truncated_normal(shape, stddev=0.1))


def loss_fn(y_pred, y_true):
    return tf.reduce_mean(-tf.reduce_sum(y_true * tf.log(y_pred), reduction_indices=[1]))  # BUG


def build(x):
    W1 = weight_variable([784, 256])
    b1 = tf.Variable(tf.zeros([256]))
    h = tf.nn.relu(tf.matmul(x, W1) + b1)
    W2 = weight_variable([256, 10])
    b2 = tf.Variable(tf.zeros([10]))
    return tf.nn.softmax(tf.matmul(h, W2) + b2)


x = tf.placeholder(tf.float32, [None, 784])
y_ = tf.placeholder(tf.float32, [None, 10])
y_conv = build(x)
cost = loss_fn(y_true=y_, y_pred=y_conv)
train_step = tf.train.AdamOptimizer(1e-4).minimize(cost)
correct = tf.equal(tf.argmax(y_conv, 1), tf.argmax(y_, 1))
accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))

with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for i in range(20000):
        batch = mnist.train.next_batch(50)
        sess.run(train_step, feed_dict={x: batch[0], y_: batch[1]})
