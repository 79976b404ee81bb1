"""Single-env Brax wrappers: partial observability, episode limits, auto-reset with episode stats.

All wrappers act on ONE unbatched env; the rollout vmaps them over envs. ``info`` keys
written here (float32 unless noted):
- ``steps`` (int32): env steps taken in the current episode (after auto-reset: the new one).
- ``episode_return``: running return of the current episode.
- ``terminated`` / ``truncated``: how the episode that this step ended, ended (0 otherwise).
- ``final_obs``: the observation reached by this step, before any reset (the true final
  obs when the episode ended).
- ``ended_return`` / ``ended_length`` (int32): return and length of the episode that
  ended on this step (0 when none did).
- ``reset_key``: the per-env PRNG key used for the next auto-reset.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State, Wrapper


def _tree_where(pred: jax.Array, on_true, on_false):
    """Elementwise select between two pytrees of identical structure (unbatched pred)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


class GdmWrapper(Wrapper):
    """Base wrapper exposing ``obs_size``/``action_size`` without running the physics."""

    @functools.cached_property
    def obs_size(self) -> int:
        shape = jax.eval_shape(self.reset, jax.random.PRNGKey(0)).obs.shape
        return int(shape[-1])

    @property
    def observation_size(self) -> int:
        return self.obs_size

    @property
    def action_size(self) -> int:
        return int(self.env.action_size)


class ObservationMaskWrapper(GdmWrapper):
    """Partial observability: keep only the observation dims listed in ``obs_mask``."""

    def __init__(self, env: Env, obs_mask: Sequence[int], full_obs_size: int):
        super().__init__(env)
        self.obs_mask = validate_obs_mask(obs_mask, full_obs_size)
        self._indices = jnp.asarray(self.obs_mask, dtype=jnp.int32)

    def reset(self, rng: jax.Array) -> State:
        state = self.env.reset(rng)
        return state.replace(obs=state.obs[self._indices])

    def step(self, state: State, action: jax.Array) -> State:
        next_state = self.env.step(state, action)
        return next_state.replace(obs=next_state.obs[self._indices])

    @property
    def obs_size(self) -> int:
        return len(self.obs_mask)


def validate_obs_mask(obs_mask: Sequence[int], full_obs_size: int) -> tuple[int, ...]:
    """Checks an observation mask (distinct in-range ints, non-empty) and returns it as a tuple."""
    try:
        indices = tuple(int(i) for i in obs_mask)
    except (TypeError, ValueError) as err:
        raise ValueError(f"obs_mask must be a sequence of ints, got {obs_mask!r}") from err
    if any(isinstance(i, bool) for i in obs_mask):
        raise ValueError(f"obs_mask must hold int indices, not bools: {obs_mask!r}")
    if not indices:
        raise ValueError("obs_mask is empty: keep at least one observation dim")
    bad = [i for i in indices if not 0 <= i < full_obs_size]
    if bad:
        raise ValueError(
            f"obs_mask indices {bad} out of range for observation size {full_obs_size} "
            f"(valid: 0..{full_obs_size - 1})")
    if len(set(indices)) != len(indices):
        raise ValueError(f"obs_mask has duplicate indices: {obs_mask!r}")
    return indices


class EpisodeWrapper(GdmWrapper):
    """Counts steps, repeats actions, tracks the return, and truncates at ``episode_length``."""

    def __init__(self, env: Env, episode_length: int, action_repeat: int = 1):
        super().__init__(env)
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self.episode_length = int(episode_length)
        self.action_repeat = int(action_repeat)

    def reset(self, rng: jax.Array) -> State:
        state = self.env.reset(rng)
        info = dict(state.info)
        info.update(steps=jnp.zeros((), jnp.int32),
                    episode_return=jnp.zeros((), jnp.float32),
                    terminated=jnp.zeros((), jnp.float32),
                    truncated=jnp.zeros((), jnp.float32))
        return state.replace(done=jnp.zeros((), jnp.float32),
                             reward=jnp.zeros((), jnp.float32), info=info)

    def _repeat_step(self, state: State, action: jax.Array) -> State:
        """Steps ``action_repeat`` times, freezing the state once the base env terminates."""
        if self.action_repeat == 1:
            next_state = self.env.step(state, action)
            return next_state.replace(reward=jnp.asarray(next_state.reward, jnp.float32),
                                      done=jnp.asarray(next_state.done, jnp.float32))

        def one(carry, _):
            st, total, dead = carry
            nxt = self.env.step(st, action)
            nxt = nxt.replace(reward=jnp.asarray(nxt.reward, jnp.float32),
                              done=jnp.asarray(nxt.done, jnp.float32))
            total = total + jnp.where(dead, 0.0, nxt.reward)
            # Past termination the physics must not move on, or final_obs would be wrong.
            st = _tree_where(dead, st, nxt)
            dead = dead | (nxt.done > 0)
            return (st, total, dead), None

        init = (state, jnp.zeros((), jnp.float32), jnp.zeros((), bool))
        (last, total, dead), _ = jax.lax.scan(one, init, None, length=self.action_repeat)
        return last.replace(reward=total, done=dead.astype(jnp.float32))

    def step(self, state: State, action: jax.Array) -> State:
        next_state = self._repeat_step(state.replace(done=jnp.zeros_like(state.done)), action)
        steps = state.info["steps"] + 1
        terminated = (next_state.done > 0).astype(jnp.float32)
        truncated = ((steps >= self.episode_length) & (terminated == 0)).astype(jnp.float32)
        info = dict(next_state.info)
        info.update(steps=steps, episode_return=state.info["episode_return"] + next_state.reward,
                    terminated=terminated, truncated=truncated)
        return next_state.replace(done=jnp.maximum(terminated, truncated), info=info)


class AutoResetWrapper(GdmWrapper):
    """Resets to a fresh random start when an episode ends, keeping the ended episode's stats.

    Each reset draws a new key (per env, carried in ``info['reset_key']``), so successive
    episodes start from different states. The returned state's ``obs`` is the first obs of
    the new episode, ``done`` says an episode ended on this step, and ``info`` keeps
    ``final_obs``, ``terminated``, ``truncated``, ``ended_return`` and ``ended_length``.
    """

    def reset(self, rng: jax.Array) -> State:
        reset_key, env_key = jax.random.split(rng)
        state = self.env.reset(env_key)
        return state.replace(info=self._with_stats(
            state.info, reset_key, state.obs, jnp.zeros((), jnp.float32),
            jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)))

    @staticmethod
    def _with_stats(info, reset_key, final_obs, ended_return, ended_length, terminated,
                    truncated):
        info = dict(info)
        info.update(reset_key=reset_key, final_obs=final_obs, ended_return=ended_return,
                    ended_length=ended_length, terminated=terminated, truncated=truncated)
        return info

    def step(self, state: State, action: jax.Array) -> State:
        inner_info = {k: v for k, v in state.info.items()
                      if k not in ("reset_key", "final_obs", "ended_return", "ended_length")}
        next_state = self.env.step(state.replace(info=inner_info), action)
        next_key, env_key = jax.random.split(state.info["reset_key"])
        # Computed every step: under vmap a cond would run both branches anyway.
        fresh = self.env.reset(env_key)
        done = next_state.done > 0
        merged = _tree_where(done, fresh.replace(reward=next_state.reward, done=next_state.done),
                             next_state)
        info = self._with_stats(
            merged.info, next_key, next_state.obs,
            jnp.where(done, next_state.info["episode_return"], 0.0).astype(jnp.float32),
            jnp.where(done, next_state.info["steps"], 0).astype(jnp.int32),
            next_state.info["terminated"], next_state.info["truncated"])
        return merged.replace(info=info)
