"""Fixed-capacity on-device replay of whole trajectories (ODT style), jittable and checkpointable.

Storage holds ``capacity`` trajectories of up to ``max_len`` steps, written FIFO (the oldest
trajectory is overwritten first). Each env has an in-progress episode accumulator; an episode
is committed when it terminates or truncates, with its return-to-go relabelled from the
rewards it achieved (hindsight relabelling). An episode longer than ``max_len`` is committed
in ``max_len`` pieces; ``start_timestep`` keeps their timesteps counting from the episode start.

Static arguments when jitting: ``batch_size``, ``context_len``, ``seq_len``.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.data.trajectory import Trajectory, pad_trajectories, return_to_go


@flax.struct.dataclass
class TrajectoryReplay:
    """Trajectory storage ``[C, L, ...]``, FIFO pointers, and per-env accumulators ``[N, L, ...]``."""
    obs: jax.Array  # [C, L, O]
    action: jax.Array  # [C, L, A]
    reward: jax.Array  # [C, L]
    rtg: jax.Array  # [C, L] achieved (hindsight) return-to-go
    terminated: jax.Array  # [C, L]
    length: jax.Array  # [C] int32, 0 for an empty slot
    start_timestep: jax.Array  # [C] int32, episode step of the slot's first step
    episode_return: jax.Array  # [C] float32
    serial: jax.Array  # [C] int32, insertion number of the slot's trajectory (-1 empty)
    write_index: jax.Array  # () int32, next slot to write
    count: jax.Array  # () int32, filled slots (<= C)
    num_added: jax.Array  # () int32, trajectories committed so far
    acc_obs: jax.Array  # [N, L, O]
    acc_action: jax.Array  # [N, L, A]
    acc_reward: jax.Array  # [N, L]
    acc_terminated: jax.Array  # [N, L]
    acc_length: jax.Array  # [N] int32, steps written for the env's current episode piece
    acc_start: jax.Array  # [N] int32, episode step of the piece's first step

    @property
    def capacity(self) -> int:
        return self.length.shape[0]

    @property
    def max_len(self) -> int:
        return self.reward.shape[1]

    @property
    def num_envs(self) -> int:
        return self.acc_length.shape[0]


def init_replay(capacity: int, max_len: int, num_envs: int, obs_size: int,
                action_size: int) -> TrajectoryReplay:
    """An empty replay; ``capacity >= num_envs`` so envs ending together get distinct slots."""
    for name, value in (("capacity", capacity), ("max_len", max_len), ("num_envs", num_envs),
                        ("obs_size", obs_size), ("action_size", action_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if capacity < num_envs:
        raise ValueError(f"capacity={capacity} must be >= num_envs={num_envs}: every env may "
                         f"finish an episode on the same step")
    f32, i32 = jnp.float32, jnp.int32
    return TrajectoryReplay(
        obs=jnp.zeros((capacity, max_len, obs_size), f32),
        action=jnp.zeros((capacity, max_len, action_size), f32),
        reward=jnp.zeros((capacity, max_len), f32), rtg=jnp.zeros((capacity, max_len), f32),
        terminated=jnp.zeros((capacity, max_len), f32), length=jnp.zeros((capacity,), i32),
        start_timestep=jnp.zeros((capacity,), i32), episode_return=jnp.zeros((capacity,), f32),
        serial=jnp.full((capacity,), -1, i32), write_index=jnp.zeros((), i32),
        count=jnp.zeros((), i32), num_added=jnp.zeros((), i32),
        acc_obs=jnp.zeros((num_envs, max_len, obs_size), f32),
        acc_action=jnp.zeros((num_envs, max_len, action_size), f32),
        acc_reward=jnp.zeros((num_envs, max_len), f32),
        acc_terminated=jnp.zeros((num_envs, max_len), f32),
        acc_length=jnp.zeros((num_envs,), i32), acc_start=jnp.zeros((num_envs,), i32))


def hindsight_relabel(reward_NxL: jax.Array, length_N: jax.Array) -> jax.Array:
    """ODT's hindsight return relabelling: the RTG of each step is the return actually achieved after it."""
    mask_NxL = jnp.arange(reward_NxL.shape[1])[None, :] < length_N[:, None]
    return jax.vmap(return_to_go)(reward_NxL, mask_NxL)


def _commit(replay: TrajectoryReplay, commit_N: jax.Array) -> TrajectoryReplay:
    """Copies the accumulators of committing envs, in env order, into consecutive FIFO slots."""
    capacity = replay.capacity
    num_new = jnp.sum(commit_N.astype(jnp.int32))
    env_K = jnp.nonzero(commit_N, size=commit_N.shape[0], fill_value=0)[0]
    step_L = jnp.arange(replay.max_len)

    # One row per committing env (not a masked scatter of all N) keeps a commit O(L), not O(N L).
    def commit_one(k, r: TrajectoryReplay) -> TrajectoryReplay:
        env, slot = env_K[k], (replay.write_index + k) % capacity
        length = r.acc_length[env]
        valid_L = step_L < length

        def row(x):
            return jnp.where(valid_L.reshape(valid_L.shape + (1,) * (x.ndim - 2)), x[env], 0.0)

        reward_L = row(r.acc_reward)
        return r.replace(
            obs=r.obs.at[slot].set(row(r.acc_obs)), action=r.action.at[slot].set(row(r.acc_action)),
            reward=r.reward.at[slot].set(reward_L),
            rtg=r.rtg.at[slot].set(hindsight_relabel(reward_L[None], length[None])[0]),
            terminated=r.terminated.at[slot].set(row(r.acc_terminated)),
            length=r.length.at[slot].set(length),
            start_timestep=r.start_timestep.at[slot].set(r.acc_start[env]),
            episode_return=r.episode_return.at[slot].set(reward_L.sum()),
            serial=r.serial.at[slot].set(replay.num_added + k))

    replay = jax.lax.fori_loop(0, num_new, commit_one, replay)
    return replay.replace(write_index=(replay.write_index + num_new) % capacity,
                          count=jnp.minimum(replay.count + num_new, capacity),
                          num_added=replay.num_added + num_new)


def _field(transitions: Any, name: str) -> jax.Array:
    if isinstance(transitions, dict):
        return transitions[name]
    return getattr(transitions, name)


def add_transitions(replay: TrajectoryReplay, transitions: Any) -> TrajectoryReplay:
    """Writes ``[T, N]`` transitions step by step (``lax.scan``), committing episodes as they end.

    ``transitions`` is a rollout ``Transitions`` (or a dict) with ``obs``, ``action``,
    ``reward``, ``terminated``, ``truncated`` and ``first``; ``first`` restarts an env's
    accumulator, dropping any unfinished piece.
    """
    num_steps, num_envs = _field(transitions, "reward").shape
    if num_envs != replay.num_envs:
        raise ValueError(f"transitions have {num_envs} envs but the replay was built for "
                         f"num_envs={replay.num_envs}")
    xs = {k: _field(transitions, k)
          for k in ("obs", "action", "reward", "terminated", "truncated", "first")}
    for key, stored in (("obs", replay.obs), ("action", replay.action)):
        if xs[key].shape != (num_steps, num_envs) + stored.shape[2:]:
            raise ValueError(f"transitions {key!r} has shape {xs[key].shape}, expected "
                             f"{(num_steps, num_envs) + stored.shape[2:]}")
    env_N = jnp.arange(num_envs)

    def write_step(replay: TrajectoryReplay, x) -> tuple[TrajectoryReplay, None]:
        first_N = x["first"].astype(bool)
        length_N = jnp.where(first_N, 0, replay.acc_length)
        start_N = jnp.where(first_N, 0, replay.acc_start)
        replay = replay.replace(
            acc_obs=replay.acc_obs.at[env_N, length_N].set(x["obs"].astype(jnp.float32)),
            acc_action=replay.acc_action.at[env_N, length_N].set(x["action"].astype(jnp.float32)),
            acc_reward=replay.acc_reward.at[env_N, length_N].set(x["reward"].astype(jnp.float32)),
            acc_terminated=replay.acc_terminated.at[env_N, length_N].set(
                x["terminated"].astype(jnp.float32)),
            acc_length=length_N + 1, acc_start=start_N)
        ended_N = (x["terminated"] > 0) | (x["truncated"] > 0)
        commit_N = ended_N | (replay.acc_length >= replay.max_len)
        replay = _commit(replay, commit_N)
        # A piece split off a still-running episode hands its step offset to the next piece.
        next_start_N = jnp.where(ended_N, 0, replay.acc_start + replay.acc_length)
        replay = replay.replace(
            acc_start=jnp.where(commit_N, next_start_N, replay.acc_start),
            acc_length=jnp.where(commit_N, 0, replay.acc_length))
        return replay, None

    replay, _ = jax.lax.scan(write_step, replay, xs, length=num_steps)
    return replay


def top_k_by_return(trajs: Sequence[Trajectory], k: int) -> list[Trajectory]:
    """The ``k`` trajectories with the highest returns, best first (ties keep input order)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    order = sorted(range(len(trajs)), key=lambda i: -trajs[i].episode_return)
    return [trajs[i] for i in order[:k]]


def replay_from_trajectories(trajs: Sequence[Trajectory], capacity: int, max_len: int,
                             num_envs: int) -> TrajectoryReplay:
    """A replay seeded with offline trajectories as if added in order (only the last ``capacity`` kept)."""
    if len(trajs) == 0:
        raise ValueError("no trajectories to seed the replay with; use init_replay for an empty one")
    obs_size = int(np.asarray(trajs[0].obs).shape[-1])
    action_size = int(np.asarray(trajs[0].action).shape[-1])
    replay = init_replay(capacity, max_len, num_envs, obs_size, action_size)
    kept = list(trajs)[-capacity:]
    padded = pad_trajectories(kept, max_len)
    num = len(kept)
    length_M = jnp.asarray(padded["length"])
    reward_MxL = jnp.asarray(padded["reward"])

    serial_M = np.arange(len(trajs) - num, len(trajs), dtype=np.int32)
    slot_M = jnp.asarray(serial_M % capacity)  # the slots in-order adding would have used

    def fill(dest, rows):
        return dest.at[slot_M].set(jnp.asarray(rows, dest.dtype))

    return replay.replace(
        obs=fill(replay.obs, padded["obs"]), action=fill(replay.action, padded["action"]),
        reward=fill(replay.reward, reward_MxL),
        rtg=fill(replay.rtg, hindsight_relabel(reward_MxL, length_M)),
        terminated=fill(replay.terminated, padded["terminated"]),
        length=fill(replay.length, length_M),
        episode_return=fill(replay.episode_return, reward_MxL.sum(axis=1)),
        serial=fill(replay.serial, serial_M),
        write_index=jnp.asarray(len(trajs) % capacity, jnp.int32),
        count=jnp.asarray(num, jnp.int32), num_added=jnp.asarray(len(trajs), jnp.int32))


def _gather_windows(replay: TrajectoryReplay, slot_B: jax.Array, start_B: jax.Array,
                    window: int, valid_BxK: jax.Array) -> dict:
    """Rows ``start .. start+window-1`` of each chosen slot, zeroed where not valid."""
    step_BxK = start_B[:, None] + jnp.arange(window, dtype=jnp.int32)[None, :]
    step_c = jnp.minimum(step_BxK, replay.max_len - 1)
    slot_BxK = slot_B[:, None]

    def take(x):
        rows = x[slot_BxK, step_c]
        return jnp.where(valid_BxK.reshape(valid_BxK.shape + (1,) * (rows.ndim - 2)), rows, 0)

    timestep = replay.start_timestep[slot_B][:, None] + step_BxK
    return {"obs": take(replay.obs), "action": take(replay.action), "rtg": take(replay.rtg),
            "reward": take(replay.reward), "terminated": take(replay.terminated),
            "timestep": jnp.where(valid_BxK, timestep, 0).astype(jnp.int32),
            "mask": valid_BxK.astype(jnp.float32), "slot": slot_B.astype(jnp.int32)}


def sample_windows(replay: TrajectoryReplay, key: jax.Array, batch_size: int,
                   context_len: int) -> dict:
    """ODT batches: trajectories drawn proportional to length, uniform start, right-padded windows.

    Returns ``obs [B,K,O]``, ``action [B,K,A]``, ``rtg``/``reward``/``terminated [B,K]``,
    ``timestep [B,K]`` int32 (episode step), ``mask [B,K]`` (1 for real steps) and ``slot [B]``.
    An empty replay yields all-zero masks.
    """
    if batch_size < 1 or context_len < 1:
        raise ValueError(f"batch_size and context_len must be >= 1, got {batch_size}, {context_len}")
    slot_key, start_key = jax.random.split(key)
    weight_C = replay.length.astype(jnp.float32)
    slot_B = jax.random.categorical(slot_key, jnp.log(weight_C), shape=(batch_size,))
    length_B = replay.length[slot_B]
    start_B = jax.random.randint(start_key, (batch_size,), 0, jnp.maximum(length_B, 1))
    step_BxK = start_B[:, None] + jnp.arange(context_len)[None, :]
    return _gather_windows(replay, slot_B, start_B, context_len, step_BxK < length_B[:, None])


def sample_sequences(replay: TrajectoryReplay, key: jax.Array, batch_size: int,
                     seq_len: int) -> dict:
    """World-model batches of ``seq_len`` consecutive steps inside one trajectory, uniform over windows.

    Returns ``obs``, ``action``, ``reward``, ``terminated``, ``rtg``, ``timestep``, ``is_first``
    (the episode's first step) and ``mask`` (0 only if no stored trajectory has ``seq_len`` steps).
    """
    if seq_len < 1 or seq_len > replay.max_len:
        raise ValueError(f"seq_len={seq_len} must be in 1..max_len={replay.max_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    slot_key, start_key = jax.random.split(key)
    starts_C = jnp.maximum(replay.length - seq_len + 1, 0)
    slot_B = jax.random.categorical(slot_key, jnp.log(starts_C.astype(jnp.float32)),
                                    shape=(batch_size,))
    starts_B = starts_C[slot_B]
    start_B = jax.random.randint(start_key, (batch_size,), 0, jnp.maximum(starts_B, 1))
    valid_BxK = jnp.broadcast_to((starts_B > 0)[:, None], (batch_size, seq_len))
    out = _gather_windows(replay, slot_B, start_B, seq_len, valid_BxK)
    out["is_first"] = (out["timestep"] == 0) & valid_BxK
    return out
