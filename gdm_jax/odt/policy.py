"""Acting ODT policy: a jittable ``policy_fn`` whose carry holds the last K steps of each env."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from flax import struct

from gdm_jax.nn.distributions import tanh_gaussian_mode, tanh_gaussian_sample
from gdm_jax.odt.loss import policy_outputs
from gdm_jax.odt.model import DecisionTransformer

PolicyFn = Callable[..., tuple[jax.Array, "PolicyContext"]]


@struct.dataclass
class PolicyContext:
    """Right-aligned window of the current episode per env; ``mask`` marks filled slots."""
    obs_NxKxO: jax.Array
    action_NxKxA: jax.Array
    rtg_NxK: jax.Array        # unscaled remaining return the policy is asked for
    timestep_NxK: jax.Array   # int32 step index within the episode
    mask_NxK: jax.Array       # bool


def initial_context(num_envs: int, context_len: int, obs_dim: int,
                    action_dim: int) -> PolicyContext:
    """An empty context; the first step of each episode overwrites it anyway."""
    return PolicyContext(
        obs_NxKxO=jnp.zeros((num_envs, context_len, obs_dim), jnp.float32),
        action_NxKxA=jnp.zeros((num_envs, context_len, action_dim), jnp.float32),
        rtg_NxK=jnp.zeros((num_envs, context_len), jnp.float32),
        timestep_NxK=jnp.zeros((num_envs, context_len), jnp.int32),
        mask_NxK=jnp.zeros((num_envs, context_len), bool))


def _shift_in(window: jax.Array, new: jax.Array) -> jax.Array:
    return jnp.concatenate([window[:, 1:], new[:, None]], axis=1)


def observe(context: PolicyContext, obs_NxO: jax.Array, prev_reward_N: jax.Array,
            first_N: jax.Array, target_return: float) -> PolicyContext:
    """Append the new state with its RTG (target at ``first``, else previous RTG - reward)."""
    keep_N1 = ~first_N[:, None]
    ctx = jax.tree.map(lambda x: jnp.where(keep_N1.reshape(keep_N1.shape + (1,) * (x.ndim - 2)),
                                           x, jnp.zeros_like(x)), context)
    rtg_N = jnp.where(first_N, jnp.float32(target_return),
                      context.rtg_NxK[:, -1] - prev_reward_N.astype(jnp.float32))
    t_N = jnp.where(first_N, 0, context.timestep_NxK[:, -1] + 1).astype(jnp.int32)
    return PolicyContext(
        obs_NxKxO=_shift_in(ctx.obs_NxKxO, obs_NxO.astype(jnp.float32)),
        action_NxKxA=_shift_in(ctx.action_NxKxA, jnp.zeros_like(ctx.action_NxKxA[:, 0])),
        rtg_NxK=_shift_in(ctx.rtg_NxK, rtg_N),
        timestep_NxK=_shift_in(ctx.timestep_NxK, t_N),
        mask_NxK=_shift_in(ctx.mask_NxK, jnp.ones_like(first_N, bool)))


def make_policy_fn(model: DecisionTransformer, *, rtg_scale: float, target_return: float,
                   stochastic: bool) -> PolicyFn:
    """``policy_fn(policy_params, context, obs_NxO, prev_reward_N, first_N, key)`` for ``rollout``.

    ``stochastic`` samples the tanh-Gaussian (exploration); otherwise the squashed mean
    (evaluation). ``policy_params`` is ``{"params", "obs_mean", "obs_std"}``.
    """
    def policy_fn(policy_params: Mapping[str, Any], context: PolicyContext, obs_NxO: jax.Array,
                  prev_reward_N: jax.Array, first_N: jax.Array,
                  key: jax.Array) -> tuple[jax.Array, PolicyContext]:
        ctx = observe(context, obs_NxO, prev_reward_N, first_N, target_return)
        window = {"obs": ctx.obs_NxKxO, "action": ctx.action_NxKxA, "rtg": ctx.rtg_NxK,
                  "timestep": ctx.timestep_NxK, "mask": ctx.mask_NxK}
        mean, log_std = policy_outputs(model, policy_params, window, rtg_scale,
                                       deterministic=True)
        if stochastic:
            action_NxA, _ = tanh_gaussian_sample(key, mean[:, -1], log_std[:, -1])
        else:
            action_NxA = tanh_gaussian_mode(mean[:, -1])
        ctx = ctx.replace(action_NxKxA=ctx.action_NxKxA.at[:, -1].set(action_NxA))
        return action_NxA, ctx

    return policy_fn
