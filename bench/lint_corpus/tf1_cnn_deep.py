import tensorflow as tf


def weight_variable(shape):
    initial = tf.truncated_normal(shape, stddev=0.1)
    return tf.Variable(initial)


def conv2d(x, W):
    return tf.nn.conv2d(x, W, strides=[1, 1, 1, 1], padding="SAME")


x = tf.placeholder(tf.float32, shape=[None, 784])
y_ = tf.placeholder(tf.float32, shape=[None, 10])
x_image = tf.reshape(x, [-1, 28, 28, 1])
W_conv1 = weight_variable([5, 5, 1, 32])
h_conv1 = tf.nn.relu(conv2d(x_image, W_conv1))
h_flat = tf.reshape(h_conv1, [-1, 28 * 28 * 32])
W_fc = weight_variable([28 * 28 * 32, 10])
keep_prob = tf.placeholder(tf.float32)
h_drop = tf.nn.dropout(h_flat, keep_prob)
y_conv = tf.nn.softmax(tf.matmul(h_drop, W_fc))
cross_entropy = -tf.reduce_sum(y_ * tf.log(y_conv))  # BUG
train_step = tf.train.AdamOptimizer(1e-4).minimize(cross_entropy)
correct_prediction = tf.equal(tf.argmax(y_conv, 1), tf.argmax(y_, 1))
accuracy = tf.reduce_mean(tf.cast(correct_prediction, tf.float32))
