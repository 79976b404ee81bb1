"""ODT train state and the jitted offline / online chunks and evaluation (data-parallel over ``data``)."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from gdm_jax.core import mesh as mesh_lib
from gdm_jax.data import replay as replay_lib
from gdm_jax.envs import rollout as rollout_lib
from gdm_jax.odt.learner import Learner, ODTHParams, auto_mesh, policy_params, update_step
from gdm_jax.odt.model import DecisionTransformer
from gdm_jax.odt.policy import PolicyContext, initial_context, make_policy_fn


@struct.dataclass
class ODTState:
    """Whole train state: learner, rng, acting envs and their policy context, online replay."""
    learner: Learner
    rng: jax.Array  # raw uint32 key data, so orbax can checkpoint it
    rollout: rollout_lib.RolloutState
    context: PolicyContext
    replay: Any
    env_steps: jax.Array  # int32


def _scan_updates(model: DecisionTransformer, hp: ODTHParams, mesh: Mesh, learner: Learner,
                  replay: Any, key: jax.Array, num_updates: int) -> tuple[Learner, dict]:
    dat = mesh_lib.data_sharding(mesh)

    def body(learner, step_key):
        sample_key, update_key = jax.random.split(step_key)
        batch = replay_lib.sample_windows(replay, sample_key, hp.batch_size, hp.context_len)
        batch = jax.lax.with_sharding_constraint(batch, dat)
        return update_step(model, hp, learner, batch, update_key)

    learner, metrics = jax.lax.scan(body, learner, jax.random.split(key, num_updates))
    return learner, jax.tree.map(jnp.mean, metrics)


def make_offline_chunk(model: DecisionTransformer, hp: ODTHParams, mesh: Mesh,
                       num_updates: int) -> Callable[[ODTState, Any], tuple[ODTState, dict]]:
    """Jitted ``(state, offline_replay) -> (state, metrics)``: ``num_updates`` steps on the dataset."""
    mesh_lib.check_divisible("odt.batch_size", hp.batch_size, mesh)
    mesh = auto_mesh(mesh)

    def chunk(state: ODTState, offline_replay: Any) -> tuple[ODTState, dict]:
        rng, key = jax.random.split(jax.random.wrap_key_data(state.rng))
        learner, metrics = _scan_updates(model, hp, mesh, state.learner, offline_replay, key,
                                         num_updates)
        metrics = {f"offline/{k}": v for k, v in metrics.items()}
        return state.replace(learner=learner, rng=jax.random.key_data(rng)), metrics

    rep = mesh_lib.replicated(mesh)
    return jax.jit(chunk, in_shardings=(rep, rep), out_shardings=(rep, rep), donate_argnums=0)


def episode_metrics(transitions: rollout_lib.Transitions,
                    score_fn: Callable[[jax.Array], jax.Array]) -> dict:
    """Mean return / normalised score of episodes that ended in the rollout (NaN if none did)."""
    mask = transitions.episode_mask
    count = jnp.sum(mask)
    mean_return = jnp.where(count > 0, jnp.sum(transitions.episode_return * mask)
                            / jnp.maximum(count, 1.0), jnp.nan)
    mean_length = jnp.where(count > 0, jnp.sum(transitions.episode_length * mask)
                            / jnp.maximum(count, 1.0), jnp.nan)
    return {"episode_return": mean_return, "normalized_score": score_fn(mean_return),
            "episode_length": mean_length, "episodes": count}


def make_online_chunk(model: DecisionTransformer, hp: ODTHParams, mesh: Mesh, env: Any, *,
                      num_steps: int, num_updates: int, explore_return: float,
                      score_fn: Callable[[jax.Array], jax.Array]
                      ) -> Callable[[ODTState], tuple[ODTState, dict]]:
    """Jitted ``state -> (state, metrics)``: explore ``num_steps`` steps, add to replay, update.

    ``env``, ``num_steps``, ``num_updates`` and ``explore_return`` are baked in (static).
    """
    mesh_lib.check_divisible("odt.batch_size", hp.batch_size, mesh)
    mesh = auto_mesh(mesh)
    explore_fn = make_policy_fn(model, rtg_scale=hp.rtg_scale, target_return=explore_return,
                                stochastic=True)

    def chunk(state: ODTState) -> tuple[ODTState, dict]:
        rng, rollout_key, update_key = jax.random.split(jax.random.wrap_key_data(state.rng), 3)
        rollout_state, context, transitions = rollout_lib.rollout(
            env, explore_fn, policy_params(state.learner), state.context, state.rollout,
            rollout_key, num_steps)
        replay = replay_lib.add_transitions(state.replay, transitions)
        learner, metrics = _scan_updates(model, hp, mesh, state.learner, replay, update_key,
                                         num_updates)
        metrics = {f"online/{k}": v for k, v in metrics.items()}
        metrics.update({f"explore/{k}": v
                        for k, v in episode_metrics(transitions, score_fn).items()})
        env_steps = state.env_steps + num_steps * transitions.reward.shape[1]
        return ODTState(learner=learner, rng=jax.random.key_data(rng), rollout=rollout_state,
                        context=context, replay=replay, env_steps=env_steps), metrics

    rep = mesh_lib.replicated(mesh)
    return jax.jit(chunk, in_shardings=(rep,), out_shardings=(rep, rep), donate_argnums=0)


def make_evaluate(model: DecisionTransformer, hp: ODTHParams, mesh: Mesh, env: Any, *,
                  num_envs: int, eval_return: float,
                  score_fn: Callable[[jax.Array], jax.Array]) -> Callable[[Learner, jax.Array], dict]:
    """Jitted ``(learner, key) -> metrics``: mean-action episodes from fresh resets.

    Runs ``env.episode_length`` steps so every env finishes its first episode, and scores
    that first episode only.
    """
    mesh = auto_mesh(mesh)
    eval_fn = make_policy_fn(model, rtg_scale=hp.rtg_scale, target_return=eval_return,
                             stochastic=False)
    cfg = model.config

    def evaluate(learner: Learner, key: jax.Array) -> dict:
        reset_key, rollout_key = jax.random.split(key)
        start = rollout_lib.reset(env, reset_key, num_envs)
        context = initial_context(num_envs, hp.context_len, cfg.obs_dim, cfg.action_dim)
        _, _, tr = rollout_lib.rollout(env, eval_fn, policy_params(learner), context, start,
                                       rollout_key, env.episode_length)
        returns_N, lengths_N = rollout_lib.first_episode_stats(tr)
        return {"episode_return": jnp.mean(returns_N), "return_std": jnp.std(returns_N),
                "normalized_score": score_fn(jnp.mean(returns_N)),
                "episode_length": jnp.mean(lengths_N.astype(jnp.float32))}

    rep = mesh_lib.replicated(mesh)
    return jax.jit(evaluate, in_shardings=(rep, rep), out_shardings=rep)
