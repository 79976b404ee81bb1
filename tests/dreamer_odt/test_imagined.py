"""Imagined trajectories become ODT windows with the right return-to-go, masks and timesteps."""
import jax.numpy as jnp
import numpy as np

from gdm_jax.dreamer_odt.imagined import imagined_return_to_go, imagined_windows


def test_rtg_by_hand_with_termination_and_bootstrap():
    rewards = jnp.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])  # [H=4, N=2]
    continues = jnp.array([[0.9, 0.9], [0.9, 0.9], [0.2, 0.9], [0.9, 0.9]])  # env 0 ends after step 2
    rtg, alive = imagined_return_to_go(rewards, continues, jnp.array([10.0, 10.0]))
    np.testing.assert_allclose(np.asarray(alive[:, 0]), [1, 1, 1, 0])
    np.testing.assert_allclose(np.asarray(rtg[:, 0]), [6, 5, 3, 0])  # no bootstrap after the end
    np.testing.assert_allclose(np.asarray(rtg[:, 1]), [20, 19, 17, 14])  # sum of rest + value 10


def test_windows_match_odt_batch_layout():
    H, N, O, A, K = 5, 3, 2, 1, 4
    obs = jnp.arange((H + 1) * N * O, dtype=jnp.float32).reshape(H + 1, N, O)
    actions = jnp.ones((H, N, A)) * 0.5
    rewards = jnp.ones((H, N))
    continues = jnp.ones((H, N)).at[1, 2].set(0.0)  # env 2 ends after its second step
    batch = imagined_windows(obs, actions, rewards, continues, jnp.full((N,), 100.0),
                             jnp.array([0, 7, 998]), K, max_timestep=1000)
    assert batch["obs"].shape == (N, K, O) and batch["action"].shape == (N, K, A)
    np.testing.assert_allclose(np.asarray(batch["obs"][1, 2]), np.asarray(obs[2, 1]))
    np.testing.assert_allclose(np.asarray(batch["rtg"][0]), [105, 104, 103, 102])
    np.testing.assert_allclose(np.asarray(batch["mask"][2]), [1, 1, 0, 0])
    np.testing.assert_allclose(np.asarray(batch["rtg"][2]), [2, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(batch["timestep"]), [[0, 1, 2, 3], [7, 8, 9, 10], [998, 999, 0, 0]])
    assert np.all(np.asarray(batch["obs"][2, 2:]) == 0), "steps after a predicted end are zero-padded"
