"""Tanh-squashed diagonal Gaussian: the bounded stochastic policy of ODT and friends.

``a = tanh(u)``, ``u ~ N(mean, exp(log_std)^2)``; log-densities include the
change-of-variables term ``-sum log(1 - tanh(u)^2)`` and are summed over the last
(action) axis.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Actions at exactly +-1 have -inf density; clip to keep atanh finite (atanh(1-1e-6) ~ 7.25).
DEFAULT_EPS = 1e-6
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def _gaussian_log_prob(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    z = (u - mean) * jnp.exp(-log_std)
    return -0.5 * z * z - log_std - 0.5 * _LOG_2PI


def _log_tanh_jacobian(u: jax.Array) -> jax.Array:
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|.
    return 2.0 * (_LOG_2 - u - jax.nn.softplus(-2.0 * u))


def bounded_log_std(raw: jax.Array, log_std_min: float, log_std_max: float) -> jax.Array:
    """Map an unconstrained head output smoothly into ``[log_std_min, log_std_max]``."""
    return log_std_min + 0.5 * (log_std_max - log_std_min) * (jnp.tanh(raw) + 1.0)


def tanh_gaussian_log_prob_pre_tanh(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Log-density of ``tanh(u)`` given the pre-squash sample ``u`` (exact, no clipping)."""
    return jnp.sum(_gaussian_log_prob(u, mean, log_std) - _log_tanh_jacobian(u), axis=-1)


def tanh_gaussian_log_prob(action: jax.Array, mean: jax.Array, log_std: jax.Array,
                           eps: float = DEFAULT_EPS) -> jax.Array:
    """Log-density of given actions in (-1, 1); actions are clipped to ``±(1 - eps)``."""
    a = jnp.clip(action, -1.0 + eps, 1.0 - eps)
    return tanh_gaussian_log_prob_pre_tanh(jnp.arctanh(a), mean, log_std)


def tanh_gaussian_sample(key: jax.Array, mean: jax.Array,
                         log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reparameterised sample and its log-density (computed from ``u``, so exact near ±1)."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(u), tanh_gaussian_log_prob_pre_tanh(u, mean, log_std)


def tanh_gaussian_mode(mean: jax.Array) -> jax.Array:
    """Deterministic action used for evaluation: the squashed mean."""
    return jnp.tanh(mean)


def tanh_gaussian_entropy(key: jax.Array, mean: jax.Array, log_std: jax.Array,
                          num_samples: int = 1) -> jax.Array:
    """Monte-Carlo entropy estimate ``-E[log p(a)]`` (no closed form after the squash)."""
    keys = jax.random.split(key, num_samples)
    log_p = jax.vmap(lambda k: tanh_gaussian_sample(k, mean, log_std)[1])(keys)
    return -jnp.mean(log_p, axis=0)
