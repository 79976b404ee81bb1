"""Brax environments by name, wrapped with episode limits, auto-reset and partial observability."""
from __future__ import annotations

from typing import Sequence

import jax
from brax import envs as brax_envs

from gdm_jax.envs.wrappers import AutoResetWrapper, EpisodeWrapper, ObservationMaskWrapper

# swimmer is left out: Brax 0.14 ships it broken for every backend.
ENV_NAMES = ("hopper", "halfcheetah", "walker2d", "ant", "inverted_pendulum",
             "inverted_double_pendulum", "reacher", "pusher", "humanoid")
BACKENDS = ("spring", "positional", "generalized", "mjx")
DEFAULT_BACKEND = "spring"  # fastest on CPU (~2x positional); mjx is slower still


def make_env(name: str, backend: str = DEFAULT_BACKEND, episode_length: int = 1000,
             obs_mask: Sequence[int] | None = None, action_repeat: int = 1) -> AutoResetWrapper:
    """A single (unbatched) Brax env with truncation at ``episode_length`` and auto-reset.

    ``episode_length`` counts agent steps, each repeating its action ``action_repeat`` times.
    ``obs_mask`` keeps only the listed observation dims (partial observability). The result
    exposes ``obs_size``, ``action_size``, ``name``, ``episode_length`` and ``obs_mask``; batch
    it with ``gdm_jax.envs.rollout.reset``/``rollout``, which vmap over envs.
    """
    if name not in ENV_NAMES:
        raise ValueError(f"unknown env name {name!r}; valid choices: {', '.join(ENV_NAMES)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} for env {name!r}; valid choices: "
                         f"{', '.join(BACKENDS)}")
    if isinstance(episode_length, bool) or not isinstance(episode_length, int):
        raise ValueError(f"episode_length must be an int, got {episode_length!r}")
    if isinstance(action_repeat, bool) or not isinstance(action_repeat, int):
        raise ValueError(f"action_repeat must be an int, got {action_repeat!r}")
    env = brax_envs.get_environment(name, backend=backend)
    if obs_mask is not None:
        full_obs_size = int(jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs.shape[-1])
        env = ObservationMaskWrapper(env, obs_mask, full_obs_size)
    env = AutoResetWrapper(EpisodeWrapper(env, episode_length, action_repeat))
    env.name = name
    env.episode_length = episode_length
    env.action_repeat = action_repeat
    env.obs_mask = None if obs_mask is None else tuple(int(i) for i in obs_mask)
    return env
