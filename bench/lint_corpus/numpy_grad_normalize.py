import numpy as np


def unit(v):
    return v / np.linalg.norm(v)  # BUG


def cosine(a, b):
    return np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))  # BUG


def geometric_std(x):
    return np.sqrt(np.mean(x**2) - np.mean(x) ** 2)  # BUG
