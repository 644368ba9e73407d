import tensorflow as tf

X = tf.placeholder(tf.float32, shape=[None, 784])
Z = tf.placeholder(tf.float32, shape=[None, 100])
D_W1 = tf.Variable(tf.random_normal([784, 128]))
D_W2 = tf.Variable(tf.random_normal([128, 1]))
G_W1 = tf.Variable(tf.random_normal([100, 784]))


def generator(z):
    return tf.nn.sigmoid(tf.matmul(z, G_W1))


def discriminator(x):
    D_h1 = tf.nn.relu(tf.matmul(x, D_W1))
    D_logit = tf.matmul(D_h1, D_W2)
    D_prob = tf.nn.sigmoid(D_logit)
    return D_prob, D_logit


G_sample = generator(Z)
D_real, D_logit_real = discriminator(X)
D_fake, D_logit_fake = discriminator(G_sample)
D_loss = -tf.reduce_mean(tf.log(D_real) + tf.log(1.0 - D_fake))  # BUG
G_loss = -tf.reduce_mean(tf.log(D_fake))  # BUG
