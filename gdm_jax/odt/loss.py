"""ODT objective: masked action NLL minus temperature x entropy, and the temperature's dual loss."""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from gdm_jax.nn.distributions import tanh_gaussian_entropy, tanh_gaussian_log_prob
from gdm_jax.odt.model import DecisionTransformer


def normalize_obs(obs: jax.Array, obs_mean: jax.Array, obs_std: jax.Array) -> jax.Array:
    """Standardise observations with dataset statistics (the network never sees raw scale)."""
    return (obs - obs_mean) / obs_std


def policy_outputs(model: DecisionTransformer, policy_params: Mapping[str, Any],
                   batch: Mapping[str, jax.Array], rtg_scale: float, *, deterministic: bool,
                   dropout_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Pre-tanh Gaussian (mean, log_std) [B, K, A] for a batch of windows."""
    rngs = None if deterministic else {"dropout": dropout_key}
    return model.apply(
        {"params": policy_params["params"]},
        batch["rtg"] * rtg_scale,
        normalize_obs(batch["obs"], policy_params["obs_mean"], policy_params["obs_std"]),
        batch["action"], batch["timestep"], batch["mask"],
        deterministic=deterministic, rngs=rngs)


def odt_loss(params: Any, log_temperature: jax.Array, model: DecisionTransformer,
             obs_stats: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], key: jax.Array,
             *, rtg_scale: float, target_entropy: float,
             deterministic: bool = False) -> tuple[jax.Array, dict]:
    """Loss for the policy parameters; ``aux`` carries the temperature loss and diagnostics.

    policy loss = -(mean log p(a_data) + stop_grad(λ) · H[π]); temperature loss =
    λ · stop_grad(H[π] - target_entropy), both averaged over unpadded steps.
    """
    dropout_key, entropy_key = jax.random.split(key)
    policy_params = {"params": params, **obs_stats}
    mean, log_std = policy_outputs(model, policy_params, batch, rtg_scale,
                                   deterministic=deterministic, dropout_key=dropout_key)
    mask = batch["mask"].astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    log_likelihood = jnp.sum(tanh_gaussian_log_prob(batch["action"], mean, log_std) * mask) / count
    entropy = jnp.sum(tanh_gaussian_entropy(entropy_key, mean, log_std) * mask) / count
    temperature = jnp.exp(log_temperature)
    loss = -(log_likelihood + jax.lax.stop_gradient(temperature) * entropy)
    mse = jnp.sum(jnp.mean((jnp.tanh(mean) - batch["action"]) ** 2, -1) * mask) / count
    aux = {"nll": -log_likelihood, "entropy": entropy, "temperature": temperature,
           "action_mse": mse}
    return loss, aux


def temperature_loss(log_temperature: jax.Array, entropy: jax.Array,
                     target_entropy: float) -> jax.Array:
    """Dual loss: its gradient raises λ when entropy is below target and lowers it above."""
    return jnp.exp(log_temperature) * jax.lax.stop_gradient(entropy - target_entropy)
