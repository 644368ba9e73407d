import numpy as np


def coefficient_of_variation(x):
    return np.std(x) / np.mean(x)


def correlation(a, b):
    a_c = a - a.mean()
    b_c = b - b.mean()
    return (a_c * b_c).sum() / np.sqrt((a_c ** 2).sum() * (b_c ** 2).sum())  # BUG


def kl(p, q):
    return np.sum(p * np.log(p / q))


def normalize_rows(m):
    return m / m.sum(axis=1, keepdims=True)


def geometric_mean(x):
    return np.exp(np.mean(np.log(x)))
