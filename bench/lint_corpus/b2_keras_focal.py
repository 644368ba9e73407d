import tensorflow as tf
from tensorflow.keras import backend as K


def binary_focal_loss(gamma=2.0, alpha=0.25):
    def focal_loss_fixed(y_true, y_pred):
        pt_1 = tf.where(tf.equal(y_true, 1), y_pred, tf.ones_like(y_pred))
        pt_0 = tf.where(tf.equal(y_true, 0), y_pred, tf.zeros_like(y_pred))
        return -K.sum(alpha * K.pow(1.0 - pt_1, gamma) * K.log(pt_1)) - K.sum(  # BUG
            (1 - alpha) * K.pow(pt_0, gamma) * K.log(1.0 - pt_0)
        )
    return focal_loss_fixed


def categorical_focal_loss(y_true, y_pred, gamma=2.0):
    y_pred = K.clip(y_pred, K.epsilon(), 1.0 - K.epsilon())
    cross_entropy = -y_true * K.log(y_pred)  # BUG
    return K.sum(K.pow(1 - y_pred, gamma) * cross_entropy, axis=-1)
