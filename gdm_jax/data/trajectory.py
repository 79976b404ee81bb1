"""Trajectories, return-to-go, and the ``.npz`` trajectory file format shared by datasets and replay.

File format (one ``.npz``, read with ``allow_pickle=False``), padded along episodes:
- ``obs`` float32 ``[M, L, O]``, ``action`` float32 ``[M, L, A]``, ``reward`` float32 ``[M, L]``,
  ``terminated`` float32 ``[M, L]`` (1.0 on the step whose action ended the episode by
  termination; 0 on time-limit truncation), ``length`` int32 ``[M]``;
- steps ``t >= length[m]`` are zero padding; ``L`` is the longest episode;
- optional metadata: any other key holds a 0-d unicode string (env, backend, dataset, ...).
Return-to-go and timesteps are derived on load, never stored.

Step convention: ``reward[t]`` and ``terminated[t]`` are what taking ``action[t]`` in
``obs[t]`` produced; ``rtg[t] = sum(reward[t:length])``.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

ARRAY_KEYS = ("obs", "action", "reward", "terminated", "length")


@flax.struct.dataclass
class Trajectory:
    """One episode (unpadded, host or device arrays): per-step ``[L, ...]`` fields and its length."""
    obs: jax.Array  # [L, O]
    action: jax.Array  # [L, A]
    reward: jax.Array  # [L]
    rtg: jax.Array  # [L] achieved return-to-go
    timestep: jax.Array  # [L] int32 index within the episode
    terminated: jax.Array  # [L] 1.0 on a terminal step
    length: int = flax.struct.field(pytree_node=False, default=0)

    @property
    def episode_return(self) -> float:
        """Sum of the episode's rewards."""
        return float(np.asarray(self.reward, np.float64)[: self.length].sum())


def return_to_go(rewards_T: jax.Array, mask_T: jax.Array | None = None,
                 discount: float = 1.0) -> jax.Array:
    """Reverse (discounted) cumulative sum of ``rewards_T * mask_T``; jittable, vmap to batch.

    ``discount`` is a static Python float; masked steps contribute no reward.
    """
    rewards_T = jnp.asarray(rewards_T, jnp.float32)
    if mask_T is not None:
        rewards_T = jnp.where(jnp.asarray(mask_T) > 0, rewards_T, 0.0)
    if discount == 1.0:
        return jnp.flip(jnp.cumsum(jnp.flip(rewards_T, 0), axis=0), 0)

    def back(acc, r):
        acc = r + discount * acc
        return acc, acc

    _, rtg_T = jax.lax.scan(back, jnp.zeros((), jnp.float32), rewards_T, reverse=True)
    return rtg_T


def make_trajectory(obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
                    terminated: np.ndarray | None = None) -> Trajectory:
    """A host (numpy) trajectory with its achieved return-to-go and timesteps."""
    obs = np.asarray(obs, np.float32)
    action = np.asarray(action, np.float32)
    reward = np.asarray(reward, np.float32)
    length = reward.shape[0]
    if reward.ndim != 1 or length < 1:
        raise ValueError(f"reward must be a non-empty [L] array, got shape {reward.shape}")
    if obs.ndim != 2 or obs.shape[0] != length:
        raise ValueError(f"obs must be [L={length}, O], got shape {obs.shape}")
    if action.ndim != 2 or action.shape[0] != length:
        raise ValueError(f"action must be [L={length}, A], got shape {action.shape}")
    terminated = (np.zeros(length, np.float32) if terminated is None
                  else np.asarray(terminated, np.float32))
    if terminated.shape != (length,):
        raise ValueError(f"terminated must be [L={length}], got shape {terminated.shape}")
    rtg = np.cumsum(reward[::-1].astype(np.float64))[::-1].astype(np.float32)
    return Trajectory(obs=obs, action=action, reward=reward, rtg=rtg,
                      timestep=np.arange(length, dtype=np.int32), terminated=terminated,
                      length=int(length))


def pad_trajectories(trajs: Sequence[Trajectory], max_len: int | None = None) -> dict:
    """Stacks trajectories into the padded file layout ``{obs [M,L,O], ..., length [M]}``."""
    if len(trajs) == 0:
        raise ValueError("no trajectories to pad")
    lengths = np.array([t.length for t in trajs], np.int32)
    max_len = int(lengths.max()) if max_len is None else int(max_len)
    too_long = [i for i, n in enumerate(lengths) if n > max_len]
    if too_long:
        raise ValueError(f"trajectories {too_long[:5]} are longer than max_len={max_len} "
                         f"(lengths {lengths[too_long[:5]].tolist()})")
    obs_size = np.asarray(trajs[0].obs).shape[-1]
    action_size = np.asarray(trajs[0].action).shape[-1]
    out = {"obs": np.zeros((len(trajs), max_len, obs_size), np.float32),
           "action": np.zeros((len(trajs), max_len, action_size), np.float32),
           "reward": np.zeros((len(trajs), max_len), np.float32),
           "terminated": np.zeros((len(trajs), max_len), np.float32),
           "length": lengths}
    for m, traj in enumerate(trajs):
        n = traj.length
        for key in ("obs", "action", "reward", "terminated"):
            value = np.asarray(getattr(traj, key), np.float32)[:n]
            if value.shape[1:] != out[key].shape[2:]:
                raise ValueError(f"trajectory {m} field {key!r} has step shape {value.shape[1:]}, "
                                 f"expected {out[key].shape[2:]}")
            out[key][m, :n] = value
    return out


def trajectories_from_padded(arrays: Mapping[str, np.ndarray]) -> list[Trajectory]:
    """Splits the padded layout back into a list of unpadded trajectories."""
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"trajectory arrays lack keys {missing}; need {list(ARRAY_KEYS)}")
    lengths = np.asarray(arrays["length"]).astype(np.int64)
    num, max_len = np.asarray(arrays["reward"]).shape
    if lengths.shape != (num,):
        raise ValueError(f"length must be [M={num}], got shape {lengths.shape}")
    bad = [i for i, n in enumerate(lengths) if not 1 <= n <= max_len]
    if bad:
        raise ValueError(f"episodes {bad[:5]} have lengths {lengths[bad[:5]].tolist()} "
                         f"outside 1..{max_len}")
    return [make_trajectory(np.asarray(arrays["obs"][m, :n]), np.asarray(arrays["action"][m, :n]),
                            np.asarray(arrays["reward"][m, :n]),
                            np.asarray(arrays["terminated"][m, :n]))
            for m, n in enumerate(lengths)]


def save_trajectories(path: str | os.PathLike, trajs: Sequence[Trajectory] | Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Writes trajectories (a list, or the padded dict layout) and string metadata to ``path``."""
    if isinstance(trajs, Mapping):
        arrays = pad_trajectories(trajectories_from_padded(trajs))
    else:
        arrays = pad_trajectories(trajs)
    metadata = dict(metadata or {})
    clash = [k for k in metadata if k in ARRAY_KEYS]
    if clash:
        raise ValueError(f"metadata keys {clash} collide with array keys {list(ARRAY_KEYS)}")
    strings = {k: np.asarray(str(v), dtype=np.str_) for k, v in metadata.items()}
    # Through a file object so numpy does not append a second ".npz" suffix.
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays, **strings)


def load_trajectories(path: str | os.PathLike) -> list[Trajectory]:
    """Reads a trajectory ``.npz`` (no pickles) into a list of unpadded trajectories."""
    with np.load(path, allow_pickle=False) as data:
        return trajectories_from_padded({k: data[k] for k in data.files if k in ARRAY_KEYS})


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored next to the arrays of a trajectory ``.npz``."""
    with np.load(path, allow_pickle=False) as data:
        return {k: str(data[k]) for k in data.files if k not in ARRAY_KEYS}
