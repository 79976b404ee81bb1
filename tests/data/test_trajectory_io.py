"""Return-to-go and the .npz trajectory format."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.data.trajectory import (load_metadata, load_trajectories, make_trajectory,
                                     pad_trajectories, return_to_go, save_trajectories)


def _random_trajs(lengths, obs_size=3, action_size=2, seed=0):
    rng = np.random.default_rng(seed)
    trajs = []
    for i, n in enumerate(lengths):
        terminated = np.zeros(n, np.float32)
        terminated[-1] = float(i % 2 == 0)
        trajs.append(make_trajectory(rng.normal(size=(n, obs_size)), rng.normal(size=(n, action_size)),
                                     rng.normal(size=n), terminated))
    return trajs


def test_return_to_go_sums_masked_future_rewards():
    rewards = jnp.array([1.0, 2.0, 3.0, 4.0])
    mask = jnp.array([1, 1, 1, 0])
    np.testing.assert_allclose(return_to_go(rewards, mask), [6.0, 5.0, 3.0, 0.0])
    np.testing.assert_allclose(return_to_go(rewards), [10.0, 9.0, 7.0, 4.0])
    np.testing.assert_allclose(return_to_go(rewards, mask, discount=0.5),
                               [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0], rtol=1e-6)


def test_return_to_go_batches_under_jit_vmap():
    rewards_BxT = jnp.arange(12, dtype=jnp.float32).reshape(3, 4)
    mask_BxT = jnp.arange(4)[None, :] < jnp.array([4, 2, 0])[:, None]
    rtg = jax.jit(jax.vmap(return_to_go))(rewards_BxT, mask_BxT)
    expected = [[6.0, 6.0, 5.0, 3.0], [9.0, 5.0, 0.0, 0.0], [0.0] * 4]
    np.testing.assert_allclose(rtg, expected)
    assert float(rtg[0, 0]) == float(jnp.sum(rewards_BxT[0]))


def test_make_trajectory_derives_rtg_and_timesteps():
    traj = make_trajectory(np.zeros((3, 1)), np.zeros((3, 1)), [1.0, -2.0, 5.0])
    np.testing.assert_allclose(traj.rtg, [4.0, 3.0, 5.0])
    np.testing.assert_array_equal(traj.timestep, [0, 1, 2])
    assert traj.length == 3 and traj.episode_return == pytest.approx(4.0)
    with pytest.raises(ValueError, match="obs"):
        make_trajectory(np.zeros((2, 1)), np.zeros((3, 1)), [1.0, 2.0, 3.0])


def test_npz_round_trip_keeps_every_field(tmp_path):
    trajs = _random_trajs([5, 1, 3])
    path = tmp_path / "data.npz"
    save_trajectories(path, trajs, metadata={"env": "hopper", "backend": "spring"})
    with np.load(path, allow_pickle=False) as data:
        assert data["obs"].shape == (3, 5, 3) and data["length"].tolist() == [5, 1, 3]
        assert float(np.abs(data["obs"][1, 1:]).sum()) == 0.0  # padding is zero
    loaded = load_trajectories(path)
    assert [t.length for t in loaded] == [5, 1, 3]
    for a, b in zip(trajs, loaded):
        for field in ("obs", "action", "reward", "terminated", "rtg", "timestep"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert load_metadata(path) == {"env": "hopper", "backend": "spring"}


def test_padded_dict_input_round_trips(tmp_path):
    trajs = _random_trajs([2, 4], seed=1)
    padded = pad_trajectories(trajs)
    path = tmp_path / "padded.npz"
    save_trajectories(path, padded)
    loaded = load_trajectories(path)
    np.testing.assert_array_equal(loaded[1].obs, trajs[1].obs)
    np.testing.assert_allclose(loaded[0].rtg, trajs[0].rtg)


def test_bad_files_and_inputs_raise(tmp_path):
    trajs = _random_trajs([4, 2])
    with pytest.raises(ValueError, match="max_len=3"):
        pad_trajectories(trajs, max_len=3)
    padded = pad_trajectories(trajs)
    padded["length"] = np.array([4, 9], np.int32)
    path = tmp_path / "bad.npz"
    np.savez(path, **padded)
    with pytest.raises(ValueError, match="lengths \\[9\\]"):
        load_trajectories(path)
    with pytest.raises(ValueError, match="collide"):
        save_trajectories(tmp_path / "x.npz", trajs, metadata={"reward": "oops"})
