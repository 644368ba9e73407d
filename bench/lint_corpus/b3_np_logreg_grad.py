import numpy as np


class LogisticRegression:
    def __init__(self, lr=0.1):
        self.lr = lr

    def _sigmoid(self, z):
        return 1.0 / (1.0 + np.exp(-z))

    def fit(self, X, y, epochs=100):
        self.w = np.zeros(X.shape[1])
        for _ in range(epochs):
            p = self._sigmoid(X @ self.w)
            loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))  # BUG
            self.w -= self.lr * X.T @ (p - y) / len(y)
        return self
