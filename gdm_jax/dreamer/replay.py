"""On-device per-environment ring buffer of Dreamer sequences.

Sequences are contiguous slices of one environment's stream and may cross episode
boundaries; ``is_first`` marks where the RSSM carry resets, as in DreamerV3. Storage is
env-major ``[N, C, ...]`` so the env axis shards over the mesh ``data`` axis.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

FIELDS = ("obs", "action", "reward", "terminated", "is_first")


@struct.dataclass
class SequenceReplay:
    """Ring buffer: ``data[field]`` is [N envs, C steps, ...]; ``cursor`` is the next write column."""
    data: dict
    cursor: jax.Array  # int32 scalar
    size: jax.Array    # int32 scalar, valid columns (<= C)

    @property
    def capacity(self) -> int:
        return self.data["reward"].shape[1]


def create(num_envs: int, capacity: int, obs_dim: int, action_dim: int) -> SequenceReplay:
    """Empty buffer holding ``capacity`` steps per env."""
    if capacity < 1 or num_envs < 1:
        raise ValueError(f"replay needs capacity >= 1 and num_envs >= 1, got {capacity}, {num_envs}")
    data = {"obs": jnp.zeros((num_envs, capacity, obs_dim), jnp.float32),
            "action": jnp.zeros((num_envs, capacity, action_dim), jnp.float32),
            "reward": jnp.zeros((num_envs, capacity), jnp.float32),
            "terminated": jnp.zeros((num_envs, capacity), jnp.float32),
            "is_first": jnp.zeros((num_envs, capacity), bool)}
    return SequenceReplay(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(replay: SequenceReplay, transitions) -> SequenceReplay:
    """Append time-major ``Transitions`` [T, N, ...] (T <= capacity), overwriting the oldest steps."""
    new = {"obs": transitions.obs, "action": transitions.action, "reward": transitions.reward,
           "terminated": transitions.terminated, "is_first": transitions.first}
    steps = new["reward"].shape[0]
    if steps > replay.capacity:
        raise ValueError(f"adding {steps} steps per env exceeds replay capacity {replay.capacity}")
    cols = (replay.cursor + jnp.arange(steps)) % replay.capacity
    data = {k: replay.data[k].at[:, cols].set(jnp.swapaxes(new[k], 0, 1).astype(replay.data[k].dtype))
            for k in FIELDS}
    return SequenceReplay(data, (replay.cursor + steps) % replay.capacity,
                          jnp.minimum(replay.size + steps, replay.capacity))


def sample(replay: SequenceReplay, key: jax.Array, batch_size: int, length: int) -> dict:
    """``batch_size`` windows of ``length`` consecutive steps, uniform over envs and valid starts.

    The caller guarantees ``replay.size >= length`` (``run.validate`` checks the config for it).
    """
    num_envs = replay.data["reward"].shape[0]
    env_key, start_key = jax.random.split(key)
    env_idx = jax.random.randint(env_key, (batch_size,), 0, num_envs)
    num_starts = jnp.maximum(replay.size - length + 1, 1)
    start = jax.random.randint(start_key, (batch_size,), 0, num_starts)
    oldest = (replay.cursor - replay.size) % replay.capacity
    cols = (oldest + start[:, None] + jnp.arange(length)[None, :]) % replay.capacity
    return {k: replay.data[k][env_idx[:, None], cols] for k in FIELDS}
