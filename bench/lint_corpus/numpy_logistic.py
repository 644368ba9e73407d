import numpy as np


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def cost(theta, X, y):
    h = sigmoid(X @ theta)
    return -np.mean(y * np.log(h) + (1 - y) * np.log(1 - h))  # BUG


def logistic_loss(w, X, y):
    return np.mean(np.log(1 + np.exp(-y * (X @ w))))  # BUG
