"""ODT network: decisions see only the past, and padding never leaks into valid steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.nn.transformer import TransformerConfig
from gdm_jax.odt.model import DecisionTransformer, ODTModelConfig

CFG = ODTModelConfig(obs_dim=3, action_dim=2, context_len=6, max_ep_len=32,
                     transformer=TransformerConfig(num_layers=2, num_heads=2, embed_dim=16,
                                                   dropout_rate=0.0))
B, K = 2, 6


def _window(seed):
    k = jax.random.split(jax.random.key(seed), 3)
    return dict(rtg_BxK=jax.random.normal(k[0], (B, K)),
                obs_BxKxO=jax.random.normal(k[1], (B, K, 3)),
                action_BxKxA=jax.random.uniform(k[2], (B, K, 2), minval=-1, maxval=1),
                timestep_BxK=jnp.broadcast_to(jnp.arange(K) + 3, (B, K)),
                mask_BxK=jnp.ones((B, K), bool))


@pytest.fixture(scope="module")
def model_params():
    model = DecisionTransformer(CFG)
    return model, model.init(jax.random.key(0), **_window(0))


def test_action_at_t_ignores_its_own_action_and_the_future(model_params):
    model, params = model_params
    w = _window(1)
    t = 3
    changed = dict(w)
    changed["action_BxKxA"] = w["action_BxKxA"].at[:, t:].set(0.5)  # a_t and later
    changed["obs_BxKxO"] = w["obs_BxKxO"].at[:, t + 1:].set(9.0)  # s_{t+1} and later
    changed["rtg_BxK"] = w["rtg_BxK"].at[:, t + 1:].set(-3.0)
    mean, log_std = model.apply(params, **w)
    mean2, log_std2 = model.apply(params, **changed)
    np.testing.assert_allclose(mean[:, :t + 1], mean2[:, :t + 1], atol=1e-5)
    np.testing.assert_allclose(log_std[:, :t + 1], log_std2[:, :t + 1], atol=1e-5)
    assert float(jnp.max(jnp.abs(mean[:, t + 1:] - mean2[:, t + 1:]))) > 1e-4


def test_left_padding_matches_a_short_window(model_params):
    model, params = model_params
    w = _window(2)
    pad = 2
    padded = {k: v.at[:, :pad].set(7) if k != "mask_BxK" else v.at[:, :pad].set(False)
              for k, v in w.items()}
    short = {k: v[:, pad:] for k, v in w.items()}
    mean_p, _ = model.apply(params, **padded)
    mean_s, _ = model.apply(params, **short)
    np.testing.assert_allclose(mean_p[:, pad:], mean_s, atol=1e-5)


def test_log_std_within_bounds_and_errors_name_the_field(model_params):
    model, params = model_params
    _, log_std = model.apply(params, **_window(3))
    assert float(log_std.min()) >= CFG.log_std_min and float(log_std.max()) <= CFG.log_std_max
    long = {k: jnp.concatenate([v, v], axis=1) for k, v in _window(4).items()}
    with pytest.raises(ValueError, match="context_len"):
        model.apply(params, **long)
    with pytest.raises(ValueError, match="log_std_min"):
        ODTModelConfig(obs_dim=1, action_dim=1, log_std_min=1.0, log_std_max=0.0)
