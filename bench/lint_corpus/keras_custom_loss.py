from keras import backend as K
from keras.layers import Dense, Input
from keras.models import Model


def weighted_categorical_crossentropy(weights):
    def loss(y_true, y_pred):
        y_pred /= K.sum(y_pred, axis=-1, keepdims=True)
        return -K.sum(y_true * K.log(y_pred) * weights, -1)  # BUG

    return loss


inp = Input(shape=(20,))
out = Dense(3, activation="softmax")(Dense(64, activation="relu")(inp))
model = Model(inp, out)
model.compile(optimizer="adam", loss=weighted_categorical_crossentropy([1.0, 2.0, 1.0]))
