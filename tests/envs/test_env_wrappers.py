"""make_env: name/backend validation, partial observability, action repeat."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.envs.brax_envs import BACKENDS, ENV_NAMES, make_env

MASK = (3, 0, 2)


def test_unknown_env_or_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"'cartpole'.*hopper.*reacher"):
        make_env("cartpole")
    with pytest.raises(ValueError, match=r"'cuda'.*spring.*mjx"):
        make_env("hopper", backend="cuda")
    assert {"hopper", "halfcheetah", "walker2d", "ant", "inverted_pendulum",
            "inverted_double_pendulum", "reacher"} <= set(ENV_NAMES)
    assert BACKENDS == ("spring", "positional", "generalized", "mjx")


@pytest.mark.parametrize("mask, message", [
    ((0, 4), r"\[4\] out of range for observation size 4"),
    ((1, 1), "duplicate"),
    ((), "empty"),
    ((-1,), r"\[-1\] out of range"),
    (("a",), "sequence of ints"),
])
def test_bad_obs_mask_raises(mask, message):
    with pytest.raises(ValueError, match=message):
        make_env("inverted_pendulum", obs_mask=mask)


def test_sizes_are_exposed():
    env = make_env("hopper", obs_mask=(0, 5))
    assert (env.obs_size, env.action_size) == (2, 3)
    full = make_env("inverted_pendulum")
    assert (full.obs_size, full.action_size) == (4, 1)


def test_obs_mask_action_repeat_and_termination():
    full = make_env("inverted_pendulum", episode_length=50)
    masked = make_env("inverted_pendulum", episode_length=50, obs_mask=MASK, action_repeat=2)
    full_step, masked_step = jax.jit(full.step), jax.jit(masked.step)
    key, action = jax.random.PRNGKey(3), jnp.array([0.4])
    s_full, s_masked = jax.jit(full.reset)(key), jax.jit(masked.reset)(key)
    s1 = full_step(s_full, action)
    s2 = full_step(s1, action)
    m1 = masked_step(s_masked, action)
    idx = np.array(MASK)
    np.testing.assert_array_equal(s_masked.obs, np.asarray(s_full.obs)[idx])
    assert m1.obs.shape == (3,) and m1.info["final_obs"].shape == (3,)
    # One repeated action = two plain steps: same state, summed reward, one agent step counted.
    np.testing.assert_allclose(m1.obs, np.asarray(s2.obs)[idx], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m1.reward, s1.reward + s2.reward, rtol=1e-6)
    assert int(m1.info["steps"]) == 1 and int(s2.info["steps"]) == 2

    # Pushing the cart one way topples the pole: a termination (not a truncation) with its
    # length recorded, after which the step counter restarts.
    state, records = s_full, []
    for _ in range(40):
        state = full_step(state, jnp.ones((1,)))
        records.append(jax.device_get((state.done, state.info["terminated"],
                                       state.info["truncated"], state.info["ended_length"],
                                       state.info["steps"])))
        if len(records) > 1 and records[-2][0] > 0:
            break
    done, terminated, truncated, ended_length, steps = (np.array(x) for x in zip(*records))
    end = int(np.argmax(done > 0))
    assert done[end] == 1 and terminated[end] == 1 and truncated[end] == 0
    assert 1 < end + 1 < 40 and ended_length[end] == end + 1
    assert steps[end] == 0 and steps[end + 1] == 1
    np.testing.assert_array_equal(ended_length[:end], 0)
