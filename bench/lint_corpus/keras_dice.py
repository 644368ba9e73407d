import tensorflow as tf
from tensorflow.keras import backend as K


def dice_coef(y_true, y_pred):
    y_true_f = K.flatten(y_true)
    y_pred_f = K.flatten(y_pred)
    intersection = K.sum(y_true_f * y_pred_f)
    return (2.0 * intersection + 1.0) / (K.sum(y_true_f) + K.sum(y_pred_f) + 1.0)


def iou(y_true, y_pred):
    inter = tf.reduce_sum(tf.cast(y_true > 0.5, tf.float32) * tf.cast(y_pred > 0.5, tf.float32))
    union = tf.reduce_sum(tf.cast((y_true + y_pred) > 0.5, tf.float32))
    return inter / union  # BUG
