"""Acting policy: its context resets at episode starts and its RTG counts down by rewards."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.nn.transformer import TransformerConfig
from gdm_jax.odt.model import DecisionTransformer, ODTModelConfig
from gdm_jax.odt.policy import initial_context, make_policy_fn

O, A, N, K = 3, 2, 3, 4
TARGET = 50.0
MODEL = DecisionTransformer(ODTModelConfig(
    obs_dim=O, action_dim=A, context_len=K, max_ep_len=32,
    transformer=TransformerConfig(num_layers=1, num_heads=2, embed_dim=16, dropout_rate=0.0)))


@pytest.fixture(scope="module")
def setup():
    variables = MODEL.init(jax.random.key(0), jnp.zeros((1, K)), jnp.zeros((1, K, O)),
                           jnp.zeros((1, K, A)), jnp.zeros((1, K), jnp.int32),
                           jnp.ones((1, K), bool))
    params = {"params": variables["params"], "obs_mean": jnp.zeros(O), "obs_std": jnp.ones(O)}
    mean_fn = jax.jit(make_policy_fn(MODEL, rtg_scale=0.01, target_return=TARGET,
                                     stochastic=False))
    sample_fn = jax.jit(make_policy_fn(MODEL, rtg_scale=0.01, target_return=TARGET,
                                       stochastic=True))
    return params, mean_fn, sample_fn


def _obs(t):
    return jax.random.normal(jax.random.key(100 + t), (N, O))


def _play(params, fn, steps, first_at=(0,), rewards=None):
    ctx = initial_context(N, K, O, A)
    actions = []
    for t in range(steps):
        first = jnp.full((N,), t in first_at)
        r = jnp.zeros(N) if rewards is None else rewards[t]
        a, ctx = fn(params, ctx, _obs(t), r, first, jax.random.key(t))
        actions.append(a)
    return actions, ctx


def test_rtg_counts_down_and_timesteps_advance(setup):
    params, mean_fn, _ = setup
    rewards = [jnp.array([1.0, 2.0, 3.0]) * t for t in range(6)]
    _, ctx = _play(params, mean_fn, 6, rewards=rewards)
    # rtg_t = target - sum of rewards received before step t (rewards[1..t]).
    expected = [TARGET - sum(float(rewards[s][0]) for s in range(1, t + 1)) for t in range(2, 6)]
    np.testing.assert_allclose(ctx.rtg_NxK[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(ctx.timestep_NxK[0], [2, 3, 4, 5])
    assert bool(jnp.all(ctx.mask_NxK))


def test_context_resets_at_episode_start(setup):
    params, mean_fn, _ = setup
    # An episode that restarts at step 5 must act exactly like a fresh one from that point.
    long_actions, long_ctx = _play(params, mean_fn, 8, first_at=(0, 5))
    ctx = initial_context(N, K, O, A)
    fresh = []
    for t in range(5, 8):
        a, ctx = mean_fn(params, ctx, _obs(t), jnp.zeros(N), jnp.full((N,), t == 5),
                         jax.random.key(t))
        fresh.append(a)
    for a_long, a_fresh in zip(long_actions[5:], fresh):
        np.testing.assert_allclose(a_long, a_fresh, atol=1e-6)
    np.testing.assert_array_equal(long_ctx.mask_NxK[0], [False, True, True, True])
    np.testing.assert_array_equal(long_ctx.timestep_NxK[0, 1:], [0, 1, 2])
    assert float(long_ctx.rtg_NxK[0, 1]) == TARGET


def test_per_env_reset_leaves_other_envs_alone(setup):
    params, mean_fn, _ = setup
    ctx = initial_context(N, K, O, A)
    for t in range(3):
        _, ctx = mean_fn(params, ctx, _obs(t), jnp.ones(N), jnp.full((N,), t == 0),
                         jax.random.key(t))
    first = jnp.array([False, True, False])
    _, after = mean_fn(params, ctx, _obs(3), jnp.ones(N), first, jax.random.key(3))
    np.testing.assert_array_equal(after.mask_NxK[1], [False, False, False, True])
    np.testing.assert_array_equal(after.mask_NxK[0], [True, True, True, True])
    np.testing.assert_allclose(after.obs_NxKxO[0, :3], ctx.obs_NxKxO[0, 1:])


def test_exploration_samples_and_evaluation_is_deterministic(setup):
    params, mean_fn, sample_fn = setup
    a1, _ = _play(params, mean_fn, 2)
    a2, _ = _play(params, mean_fn, 2)
    s1, _ = _play(params, sample_fn, 2)
    np.testing.assert_allclose(a1[-1], a2[-1])
    assert float(jnp.max(jnp.abs(s1[-1] - a1[-1]))) > 1e-3
    assert bool(jnp.all(jnp.abs(s1[-1]) < 1))
