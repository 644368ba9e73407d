import jax.numpy as jnp
from jax import grad


def log_normal(x, mu, sigma):
    return -0.5 * jnp.log(2 * jnp.pi * sigma ** 2) - (x - mu) ** 2 / (2 * sigma ** 2)


def nll(params, x):
    mu, log_sigma = params
    sigma = jnp.exp(log_sigma)
    return -jnp.mean(log_normal(x, mu, sigma))


def pairwise(x):
    d = x[:, None, :] - x[None, :, :]
    return jnp.sqrt(jnp.sum(d ** 2, axis=-1))  # BUG


g = grad(nll)
