import jax
import jax.numpy as jnp


def predict(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return jax.nn.softmax(x @ w + b)


def loss(params, x, y):
    p = predict(params, x)
    return -jnp.mean(jnp.sum(y * jnp.log(p), axis=-1))  # BUG


def rbf(x, y, gamma):
    return jnp.exp(-gamma * jnp.sqrt(jnp.sum((x - y) ** 2)))  # BUG
