"""ODT objective and update: the loss falls on a fixed batch, the temperature tracks the entropy target."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.nn.transformer import TransformerConfig
from gdm_jax.odt.learner import ODTHParams, init_learner, update_step
from gdm_jax.odt.loss import odt_loss, temperature_loss
from gdm_jax.odt.model import DecisionTransformer, ODTModelConfig

O, A, B, K = 4, 2, 8, 5
MODEL = DecisionTransformer(ODTModelConfig(
    obs_dim=O, action_dim=A, context_len=K, max_ep_len=16,
    transformer=TransformerConfig(num_layers=1, num_heads=2, embed_dim=32, dropout_rate=0.0)))


def _batch():
    k1, k2 = jax.random.split(jax.random.key(0))
    obs = jax.random.normal(k1, (B, K, O))
    w = jax.random.normal(k2, (O, A))
    mask = jnp.ones((B, K), bool).at[0, :2].set(False)  # one left-padded window
    return {"obs": obs, "action": 0.8 * jnp.tanh(obs @ w), "rtg": jnp.ones((B, K)) * 100.0,
            "timestep": jnp.broadcast_to(jnp.arange(K), (B, K)).astype(jnp.int32),
            "mask": mask}


def _run(hp, steps):
    learner = init_learner(MODEL, hp, jax.random.key(1), jnp.zeros(O), jnp.ones(O))
    step = jax.jit(functools.partial(update_step, MODEL, hp))
    batch, history = _batch(), []
    for i in range(steps):
        learner, metrics = step(learner, batch, jax.random.key(100 + i))
        history.append(jax.device_get(metrics))
    return learner, history


@pytest.fixture(scope="module")
def trained():
    hp = ODTHParams(batch_size=B, context_len=K, target_entropy=-float(A), learning_rate=3e-3,
                    warmup_steps=1, temperature_lr=0.05, grad_clip=1.0)
    return _run(hp, 40)


def test_loss_decreases_on_a_fixed_batch(trained):
    _, history = trained
    nll = np.array([h["nll"] for h in history])
    assert np.all(np.isfinite(nll))
    assert nll[-5:].mean() < nll[:5].mean() - 1.0, nll
    assert history[-1]["action_mse"] < 0.5 * history[0]["action_mse"]


@pytest.mark.parametrize("target, sign", [(50.0, 1), (-50.0, -1)])
def test_temperature_moves_toward_the_entropy_target(target, sign):
    # Entropy of a tanh-Gaussian in 2-D lies far inside (-50, 50): the dual step must raise
    # lambda when the target is above the entropy and lower it when below, every step.
    hp = ODTHParams(batch_size=B, context_len=K, target_entropy=target, learning_rate=3e-3,
                    warmup_steps=1, temperature_lr=0.05, grad_clip=1.0)
    _, history = _run(hp, 5)
    temp = np.array([h["temperature"] for h in history] + [np.nan])
    assert np.all(np.sign(np.diff(temp[:-1])) == sign), temp


def test_dual_gradient_sign():
    g_above = jax.grad(temperature_loss)(jnp.log(0.1), jnp.asarray(0.0), -2.0)
    g_below = jax.grad(temperature_loss)(jnp.log(0.1), jnp.asarray(-5.0), -2.0)
    assert float(g_above) > 0 > float(g_below)


def test_padding_does_not_enter_the_loss():
    hp = ODTHParams()
    learner = init_learner(MODEL, hp, jax.random.key(1), jnp.zeros(O), jnp.ones(O))
    batch = _batch()
    garbage = dict(batch, action=batch["action"].at[0, :2].set(0.999),
                   obs=batch["obs"].at[0, :2].set(50.0))
    stats = {"obs_mean": learner.obs_mean, "obs_std": learner.obs_std}
    f = jax.jit(lambda b: odt_loss(learner.params, learner.log_temperature, MODEL, stats, b,
                                   jax.random.key(3), rtg_scale=1e-3, target_entropy=-2.0))
    (l1, a1), (l2, a2) = f(batch), f(garbage)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    np.testing.assert_allclose(a1["nll"], a2["nll"], rtol=1e-5)
