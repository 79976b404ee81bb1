"""On-device trajectory replay: FIFO commits, hindsight RTG, seeding, and sampling invariants."""
import functools

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.data.replay import (add_transitions, hindsight_relabel, init_replay,
                                 replay_from_trajectories, sample_sequences, sample_windows,
                                 top_k_by_return)
from gdm_jax.data.trajectory import make_trajectory

MAX_LEN = 6


def _transitions(ends, num_steps, t0=0, seed=0):
    """[T, 2] transitions; obs = (env, global step); ``ends[n]`` maps step -> 'term' | 'trunc'."""
    rng = np.random.default_rng(seed)
    num_envs = len(ends)
    t_T = np.arange(t0, t0 + num_steps)
    obs = np.stack(np.broadcast_arrays(np.arange(num_envs)[None, :], t_T[:, None]), -1)
    out = {"obs": obs.astype(np.float32),
           "action": rng.normal(size=(num_steps, num_envs, 1)).astype(np.float32),
           "reward": rng.normal(size=(num_steps, num_envs)).astype(np.float32),
           "terminated": np.zeros((num_steps, num_envs), np.float32),
           "truncated": np.zeros((num_steps, num_envs), np.float32),
           "first": np.zeros((num_steps, num_envs), bool)}
    for n, env_ends in enumerate(ends):
        for t, kind in env_ends.items():
            if t0 <= t < t0 + num_steps:
                out["terminated" if kind == "term" else "truncated"][t - t0, n] = 1.0
            if t0 <= t + 1 < t0 + num_steps:
                out["first"][t + 1 - t0, n] = True
    if t0 == 0:
        out["first"][0] = True
    return out


ENDS = [{2: "term", 6: "trunc", 10: "term"}, {2: "trunc"}]  # env 1 then runs past max_len


@pytest.fixture(scope="module")
def filled():
    add = jax.jit(add_transitions)
    first_half = _transitions(ENDS, 10, t0=0, seed=0)
    second_half = _transitions(ENDS, 3, t0=10, seed=1)
    replay = init_replay(capacity=4, max_len=MAX_LEN, num_envs=2, obs_size=2, action_size=1)
    after_first = add(replay, first_half)
    after_second = add(after_first, second_half)
    return first_half, second_half, after_first, after_second


def _slot_of(replay, serial):
    return int(np.flatnonzero(np.asarray(replay.serial) == serial)[0])


def test_commits_fill_fifo_slots_in_order(filled):
    first_half, _, replay, _ = filled
    # t=2: env0 (len 3) and env1 (len 3) end together -> distinct slots 0, 1;
    # t=6: env0 (len 4) -> slot 2; t=8: env1's running episode fills max_len -> slot 3.
    np.testing.assert_array_equal(replay.serial, [0, 1, 2, 3])
    np.testing.assert_array_equal(replay.length, [3, 3, 4, 6])
    np.testing.assert_array_equal(replay.start_timestep, [0, 0, 0, 0])
    assert int(replay.count) == 4 and int(replay.write_index) == 0 and int(replay.num_added) == 4
    expected = [(0, 0, 3), (1, 0, 3), (0, 3, 7), (1, 3, 9)]  # (env, first step, end step)
    for slot, (env, lo, hi) in enumerate(expected):
        n = hi - lo
        np.testing.assert_array_equal(replay.obs[slot, :n, 1], np.arange(lo, hi))
        np.testing.assert_array_equal(replay.obs[slot, :n, 0], env)
        np.testing.assert_array_equal(replay.obs[slot, n:], 0.0)
        rewards = first_half["reward"][lo:hi, env]
        np.testing.assert_allclose(replay.rtg[slot, :n], np.cumsum(rewards[::-1])[::-1], rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(replay.episode_return[slot], rewards.sum(), rtol=1e-5)
    np.testing.assert_array_equal(replay.terminated[0, :3], [0, 0, 1])
    np.testing.assert_array_equal(replay.terminated[1, :3], [0, 0, 0])  # truncation is not terminal
    restored = flax.serialization.from_bytes(replay, flax.serialization.to_bytes(replay))
    jax.tree.map(np.testing.assert_array_equal, restored, replay)


def test_fifo_overwrites_oldest_and_keeps_episode_offsets(filled):
    _, second_half, before, replay = filled
    # t=10: env0's episode (steps 7..10) ends -> overwrites slot 0, the oldest (serial 0).
    assert int(replay.num_added) == 5 and int(replay.count) == 4 and int(replay.write_index) == 1
    np.testing.assert_array_equal(replay.serial, [4, 1, 2, 3])
    np.testing.assert_array_equal(replay.obs[0, :4, 1], [7, 8, 9, 10])
    np.testing.assert_array_equal(replay.length, [4, 3, 4, 6])
    np.testing.assert_array_equal(replay.obs[1:], before.obs[1:])
    # env1's episode continues past the max_len split: its next piece starts at step 6.
    assert int(replay.acc_start[1]) == 6 and int(replay.acc_length[1]) == 4
    assert int(replay.acc_length[0]) == 2


def test_hindsight_relabel_uses_achieved_rewards_only():
    reward = jnp.array([[1.0, 1.0, 1.0, 9.0], [2.0, -1.0, 0.0, 0.0]])
    rtg = hindsight_relabel(reward, jnp.array([3, 2]))
    np.testing.assert_allclose(rtg, [[3.0, 2.0, 1.0, 0.0], [1.0, -1.0, 0.0, 0.0]])


def test_bad_replay_arguments_raise():
    with pytest.raises(ValueError, match="capacity=2 must be >= num_envs=3"):
        init_replay(2, 5, 3, 1, 1)
    with pytest.raises(ValueError, match="max_len"):
        init_replay(4, 0, 1, 1, 1)
    replay = init_replay(4, 5, 2, 1, 1)
    with pytest.raises(ValueError, match="seq_len=6"):
        sample_sequences(replay, jax.random.PRNGKey(0), 2, 6)
    with pytest.raises(ValueError, match="num_envs=2"):
        add_transitions(replay, _transitions([{}, {}, {}], 2))
    wide = _transitions([{}, {}], 2)
    wide["obs"] = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="'obs' has shape \\(2, 2, 3\\)"):
        add_transitions(replay, wide)


LENGTHS = [1, 3, 6, 2]


@pytest.fixture(scope="module")
def seeded():
    trajs = []
    for i, n in enumerate([4] + LENGTHS):  # the first is pushed out by FIFO order
        obs = np.stack([np.full(n, i), np.arange(n)], -1)
        trajs.append(make_trajectory(obs, np.full((n, 1), i), np.full(n, float(i)) + np.arange(n)))
    return trajs, replay_from_trajectories(trajs, capacity=4, max_len=MAX_LEN, num_envs=2)


def test_replay_from_trajectories_matches_in_order_adding(seeded):
    trajs, replay = seeded
    np.testing.assert_array_equal(replay.serial, [4, 1, 2, 3])  # slot 0 was reused by traj 4
    np.testing.assert_array_equal(replay.length, [2, 1, 3, 6])
    assert int(replay.write_index) == 1 and int(replay.count) == 4
    np.testing.assert_allclose(replay.rtg[3, :6], trajs[3].rtg)
    best = top_k_by_return(trajs, 2)
    assert [t.episode_return for t in best] == sorted([t.episode_return for t in trajs])[::-1][:2]
    with pytest.raises(ValueError, match="longer than max_len=2"):
        replay_from_trajectories(trajs, capacity=8, max_len=2, num_envs=1)


def test_sample_windows_stay_inside_one_trajectory_with_length_weighting(seeded):
    _, replay = seeded
    batch = jax.jit(functools.partial(sample_windows, batch_size=6000, context_len=4))(
        replay, jax.random.PRNGKey(0))
    obs, mask, timestep = (np.asarray(batch[k]) for k in ("obs", "mask", "timestep"))
    slot = np.asarray(batch["slot"])
    traj_id = np.asarray(replay.serial)[slot]
    length = np.asarray(replay.length)[slot]
    start = timestep[:, 0]
    real = mask > 0
    # Every real step is the right step of the sampled trajectory; padding is zeroed.
    np.testing.assert_array_equal(obs[..., 0][real], np.broadcast_to(traj_id[:, None], real.shape)[real])
    np.testing.assert_array_equal(obs[..., 1][real], timestep[real])
    np.testing.assert_array_equal(timestep[real], (start[:, None] + np.arange(4))[real])
    assert np.all(obs[~real] == 0) and np.all(timestep[~real] == 0)
    np.testing.assert_array_equal(mask, (start[:, None] + np.arange(4)) < length[:, None])
    assert np.all(real[:, 0]) and np.all(start < length)
    np.testing.assert_allclose(np.asarray(batch["rtg"])[real],
                               np.asarray(replay.rtg)[slot[:, None].repeat(4, 1)[real],
                                                      timestep[real]])
    freq = np.bincount(slot, minlength=4) / slot.size
    np.testing.assert_allclose(freq, np.array([2, 1, 3, 6]) / 12, atol=0.02)
    starts_longest = start[slot == 3]
    np.testing.assert_allclose(np.bincount(starts_longest, minlength=6) / starts_longest.size,
                               np.full(6, 1 / 6), atol=0.03)


def test_sample_sequences_only_full_windows_and_is_first(seeded):
    _, replay = seeded
    batch = jax.jit(functools.partial(sample_sequences, batch_size=4000, seq_len=3))(
        replay, jax.random.PRNGKey(1))
    slot = np.asarray(batch["slot"])
    timestep = np.asarray(batch["timestep"])
    assert set(np.unique(slot)) == {2, 3}  # only trajectories with >= 3 steps
    assert np.all(np.asarray(batch["mask"]) == 1)
    np.testing.assert_array_equal(np.asarray(batch["obs"])[..., 1], timestep)
    np.testing.assert_array_equal(batch["is_first"], timestep == 0)
    # Uniform over the 1 + 4 valid windows.
    np.testing.assert_allclose(np.mean(slot == 2), 1 / 5, atol=0.02)
    assert np.all(timestep[:, -1] < np.asarray(replay.length)[slot])
