"""On-device rollout of N vectorised Brax envs for T steps in one ``lax.scan``, plus a host-loop baseline.

A policy carries its own context and is told where episodes start:
``policy_fn(policy_params, policy_carry, obs_NxO, prev_reward_N, first_N, key)
-> (action_NxA, policy_carry)``; ``first_N`` is True on the first step after a reset, so a
context-carrying policy (a decision transformer) clears its context there.

``env`` and ``policy_fn`` are static (close over them or mark them static when jitting);
``num_steps`` is a static int. Keys: step ``t`` gives ``jax.random.split(key, num_steps)[t]``
to the policy, so the scan and the host loop see identical randomness. Env resets draw
their own per-env keys carried inside the env state.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

PolicyFn = Callable[[Any, Any, jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, Any]]


@flax.struct.dataclass
class RolloutState:
    """What a training chunk carries between rollouts (and checkpoints): envs + policy inputs."""
    env_state: Any  # batched brax State, leading dim N
    prev_reward: jax.Array  # [N] float32, 0 on the first step of an episode
    first: jax.Array  # [N] bool, True on the first step of an episode


@flax.struct.dataclass
class Transitions:
    """Arrays ``[T, N, ...]`` (or ``[N, ...]`` for one step); episode stats valid where ``episode_mask``."""
    obs: jax.Array  # [T, N, O] observation the action was taken in
    action: jax.Array  # [T, N, A]
    reward: jax.Array  # [T, N]
    next_obs: jax.Array  # [T, N, O] true next obs (the final obs at episode end, not the reset obs)
    terminated: jax.Array  # [T, N] float32, 1 where the episode ended by termination
    truncated: jax.Array  # [T, N] float32, 1 where it ended by the time limit
    first: jax.Array  # [T, N] bool, obs is the first of its episode
    episode_return: jax.Array  # [T, N] return of the episode that ended at this step (else 0)
    episode_length: jax.Array  # [T, N] int32 length of that episode (else 0)
    episode_mask: jax.Array  # [T, N] float32, 1 where an episode ended at this step


def reset(env, key: jax.Array, num_envs: int) -> RolloutState:
    """Batched initial state of ``num_envs`` envs, with ``first=True`` everywhere (static: env, num_envs)."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    env_state = jax.vmap(env.reset)(jax.random.split(key, num_envs))
    return RolloutState(env_state=env_state,
                        prev_reward=jnp.zeros((num_envs,), jnp.float32),
                        first=jnp.ones((num_envs,), bool))


def rollout_step(env, policy_fn: PolicyFn, policy_params: Any, policy_carry: Any,
                 state: RolloutState, key: jax.Array) -> tuple[RolloutState, Any, Transitions]:
    """One env step for every env: act, step, auto-reset, record the transition."""
    obs_NxO = state.env_state.obs
    action_NxA, policy_carry = policy_fn(policy_params, policy_carry, obs_NxO,
                                         state.prev_reward, state.first, key)
    next_env_state = jax.vmap(env.step)(state.env_state, action_NxA)
    info = next_env_state.info
    ended_N = next_env_state.done > 0
    reward_N = next_env_state.reward.astype(jnp.float32)
    transitions = Transitions(
        obs=obs_NxO, action=action_NxA, reward=reward_N, next_obs=info["final_obs"],
        terminated=info["terminated"].astype(jnp.float32),
        truncated=info["truncated"].astype(jnp.float32), first=state.first,
        episode_return=info["ended_return"], episode_length=info["ended_length"],
        episode_mask=ended_N.astype(jnp.float32))
    next_state = RolloutState(env_state=next_env_state,
                              prev_reward=jnp.where(ended_N, 0.0, reward_N),
                              first=ended_N)
    return next_state, policy_carry, transitions


def rollout(env, policy_fn: PolicyFn, policy_params: Any, policy_carry: Any,
            env_state: RolloutState, key: jax.Array,
            num_steps: int) -> tuple[RolloutState, Any, Transitions]:
    """``num_steps`` steps of all envs in one ``lax.scan``; jit it with env, policy_fn, num_steps static.

    ``env_state`` is the ``RolloutState`` from ``reset`` or the previous call.
    """
    step = functools.partial(rollout_step, env, policy_fn, policy_params)

    def body(carry, step_key):
        policy_carry, state = carry
        state, policy_carry, transitions = step(policy_carry, state, step_key)
        return (policy_carry, state), transitions

    (policy_carry, env_state), transitions = jax.lax.scan(
        body, (policy_carry, env_state), jax.random.split(key, num_steps))
    return env_state, policy_carry, transitions


def make_jitted_step(env, policy_fn: PolicyFn) -> Callable:
    """The jitted single step the host loop calls: ``(params, carry, state, key) -> (state, carry, transitions)``."""
    return jax.jit(functools.partial(rollout_step, env, policy_fn))


def host_loop_rollout(env, policy_fn: PolicyFn, policy_params: Any, policy_carry: Any,
                      env_state: RolloutState, key: jax.Array, num_steps: int,
                      jitted_step: Callable | None = None) -> tuple[RolloutState, Any, Transitions]:
    """Baseline: a Python loop calling a jitted single step; same keys and results as ``rollout``."""
    if jitted_step is None:
        jitted_step = make_jitted_step(env, policy_fn)
    step_keys = jax.random.split(key, num_steps)
    per_step = []
    for t in range(num_steps):
        env_state, policy_carry, transitions = jitted_step(policy_params, policy_carry,
                                                           env_state, step_keys[t])
        per_step.append(transitions)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *per_step)
    return env_state, policy_carry, stacked


def first_episode_stats(transitions: Transitions) -> tuple[jax.Array, jax.Array]:
    """Return and length [N] of each env's first finished episode in ``transitions`` [T, N]."""
    first_end_TxN = (transitions.episode_mask > 0) & (jnp.cumsum(transitions.episode_mask, axis=0) == 1)
    returns_N = jnp.sum(jnp.where(first_end_TxN, transitions.episode_return, 0.0), axis=0)
    lengths_N = jnp.sum(jnp.where(first_end_TxN, transitions.episode_length, 0), axis=0)
    return returns_N, lengths_N
