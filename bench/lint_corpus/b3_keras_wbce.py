import tensorflow as tf


def weighted_bce(pos_weight):
    def loss(y_true, y_pred):
        y_pred = tf.clip_by_value(y_pred, 1e-7, 1 - 1e-7)
        bce = -(pos_weight * y_true * tf.math.log(y_pred) + (1 - y_true) * tf.math.log(1 - y_pred))  # BUG
        return tf.reduce_mean(bce)
    return loss


def pearson(x, y):
    xm = x - tf.reduce_mean(x)
    ym = y - tf.reduce_mean(y)
    r = tf.reduce_sum(xm * ym) / tf.sqrt(tf.reduce_sum(tf.square(xm)) * tf.reduce_sum(tf.square(ym)))  # BUG
    return r
