"""On-device rollout: parity with the host loop, auto-reset, episode stats, policy context resets."""
import functools

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.data.replay import add_transitions, init_replay
from gdm_jax.envs import rollout as rl
from gdm_jax.envs.brax_envs import make_env

NUM_ENVS, NUM_STEPS, EPISODE_LENGTH = 3, 12, 5


def context_policy(params, carry, obs_NxO, prev_reward_N, first_N, key):
    """A tiny context-carrying policy: an obs trace and a step counter, both cleared at `first`."""
    trace_NxO, count_N = carry
    trace_NxO = jnp.where(first_N[:, None], 0.0, 0.5 * trace_NxO) + obs_NxO
    count_N = jnp.where(first_N, 0, count_N) + 1
    noise = 0.1 * jax.random.normal(key, (obs_NxO.shape[0], params.shape[1]))
    action = jnp.tanh(trace_NxO @ params + prev_reward_N[:, None] * 0.01 + noise)
    return action, (trace_NxO, count_N)


@pytest.fixture(scope="module")
def runs():
    env = make_env("inverted_pendulum", episode_length=EPISODE_LENGTH)
    params = jnp.full((env.obs_size, env.action_size), 0.3)
    carry = (jnp.zeros((NUM_ENVS, env.obs_size)), jnp.zeros((NUM_ENVS,), jnp.int32))
    state = jax.jit(rl.reset, static_argnums=(0, 2))(env, jax.random.PRNGKey(0), NUM_ENVS)
    key = jax.random.PRNGKey(1)
    scan_fn = jax.jit(functools.partial(rl.rollout, env, context_policy), static_argnums=(4,))
    on_device = scan_fn(params, carry, state, key, NUM_STEPS)
    host = rl.host_loop_rollout(env, context_policy, params, carry, state, key, NUM_STEPS)
    return state, jax.device_get(on_device), jax.device_get(host)


def test_reset_starts_every_env_fresh(runs):
    state, _, _ = runs
    assert state.first.tolist() == [True] * NUM_ENVS
    np.testing.assert_array_equal(state.prev_reward, 0.0)
    assert len({tuple(np.round(o, 6)) for o in np.asarray(state.env_state.obs)}) == NUM_ENVS
    # One pytree of arrays: it serialises (and so checkpoints) with the train state.
    restored = flax.serialization.from_bytes(state, flax.serialization.to_bytes(state))
    jax.tree.map(np.testing.assert_array_equal, restored, state)


def test_on_device_rollout_matches_host_loop(runs):
    _, (state_a, carry_a, tr_a), (state_b, carry_b, tr_b) = runs
    assert tr_a.obs.shape == (NUM_STEPS, NUM_ENVS, 4) and tr_a.action.shape == (NUM_STEPS, NUM_ENVS, 1)
    for field in ("terminated", "truncated", "first", "episode_length", "episode_mask"):
        np.testing.assert_array_equal(getattr(tr_a, field), getattr(tr_b, field), err_msg=field)
    # Same keys, same maths; XLA may fuse the scan body differently, so allow float rounding.
    for field in ("obs", "action", "reward", "next_obs", "episode_return"):
        np.testing.assert_allclose(getattr(tr_a, field), getattr(tr_b, field), rtol=1e-5,
                                   atol=1e-5, err_msg=field)
    np.testing.assert_array_equal(carry_a[1], carry_b[1])
    np.testing.assert_allclose(state_a.env_state.obs, state_b.env_state.obs, rtol=1e-5, atol=1e-5)


def test_auto_reset_and_episode_stats(runs):
    _, (final, carry, tr), _ = runs
    ended = tr.episode_mask > 0
    np.testing.assert_array_equal(ended, (tr.terminated + tr.truncated) > 0)
    np.testing.assert_array_equal(tr.first[1:], ended[:-1])  # a new episode follows every end
    assert np.all(tr.first[0])
    for n in range(NUM_ENVS):
        start = 0
        for t in range(NUM_STEPS):
            if not ended[t, n]:
                # Mid-episode, next_obs is the next step's obs.
                if t + 1 < NUM_STEPS:
                    np.testing.assert_array_equal(tr.next_obs[t, n], tr.obs[t + 1, n])
                continue
            length = t - start + 1
            assert tr.episode_length[t, n] == length
            np.testing.assert_allclose(tr.episode_return[t, n], tr.reward[start:t + 1, n].sum(),
                                       rtol=1e-5)
            assert tr.truncated[t, n] == float(length == EPISODE_LENGTH and not tr.terminated[t, n])
            assert length <= EPISODE_LENGTH
            if t + 1 < NUM_STEPS:
                # The final obs is kept; the next obs is a fresh, different reset.
                assert not np.allclose(tr.next_obs[t, n], tr.obs[t + 1, n])
            start = t + 1
    assert ended.sum() >= NUM_ENVS * (NUM_STEPS // EPISODE_LENGTH)
    np.testing.assert_array_equal(tr.episode_return[~ended], 0.0)
    # Fresh reset keys: episodes of one env start from different states.
    starts = tr.obs[:, 0][tr.first[:, 0]]
    assert len(starts) >= 2 and not np.allclose(starts[0], starts[1])
    # The policy saw `first` and cleared its context: its counter is the episode step count.
    np.testing.assert_array_equal(carry[1], final.env_state.info["steps"])
    np.testing.assert_array_equal(final.first, ended[-1])
    np.testing.assert_array_equal(final.prev_reward, np.where(ended[-1], 0.0, tr.reward[-1]))


def test_rollout_transitions_feed_the_replay(runs):
    _, (_, _, tr), _ = runs
    replay = init_replay(capacity=8, max_len=EPISODE_LENGTH, num_envs=NUM_ENVS, obs_size=4,
                         action_size=1)
    replay = jax.device_get(jax.jit(add_transitions)(replay, tr))
    ended_t, ended_n = np.nonzero(tr.episode_mask)
    assert int(replay.count) == len(ended_t)
    stored = {}
    for slot in range(int(replay.count)):
        stored[tuple(np.round(replay.obs[slot, 0], 6))] = slot
        assert replay.rtg[slot, 0] == pytest.approx(replay.episode_return[slot], rel=1e-5)
    for t, n in zip(ended_t, ended_n):
        length = int(tr.episode_length[t, n])
        slot = stored[tuple(np.round(tr.obs[t - length + 1, n], 6))]
        np.testing.assert_array_equal(replay.obs[slot, :length], tr.obs[t - length + 1:t + 1, n])
        assert replay.episode_return[slot] == pytest.approx(tr.episode_return[t, n], rel=1e-5)
