"""The causal transformer stack: causality, segment isolation, dropout, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.nn.transformer import Transformer, TransformerConfig

CFG = TransformerConfig(num_layers=2, num_heads=2, embed_dim=16, dropout_rate=0.1)


@pytest.fixture(scope="module")
def model_and_params():
    model = Transformer(CFG)
    x = jax.random.normal(jax.random.key(0), (2, 7, 16))
    return model, model.init(jax.random.key(1), x)


def test_future_tokens_do_not_change_earlier_outputs(model_and_params):
    model, params = model_and_params
    x = jax.random.normal(jax.random.key(2), (2, 7, 16))
    x2 = x.at[:, 4:].set(jax.random.normal(jax.random.key(3), (2, 3, 16)))
    y, y2 = model.apply(params, x), model.apply(params, x2)
    np.testing.assert_allclose(y[:, :4], y2[:, :4], atol=1e-5)
    assert float(jnp.max(jnp.abs(y[:, 4:] - y2[:, 4:]))) > 1e-3


def test_packed_segments_match_separate_rows(model_and_params):
    model, params = model_and_params
    a = jax.random.normal(jax.random.key(4), (1, 3, 16))
    b = jax.random.normal(jax.random.key(5), (1, 4, 16))
    packed = jnp.concatenate([a, b], axis=1)
    seg = jnp.array([[1, 1, 1, 2, 2, 2, 2]])
    y = model.apply(params, packed, seg)
    np.testing.assert_allclose(y[:, :3], model.apply(params, a), atol=1e-5)
    np.testing.assert_allclose(y[:, 3:], model.apply(params, b), atol=1e-5)


def test_dropout_only_in_training_mode(model_and_params):
    model, params = model_and_params
    x = jax.random.normal(jax.random.key(6), (2, 7, 16))
    train = lambda k: model.apply(params, x, deterministic=False, rngs={"dropout": k})
    assert float(jnp.max(jnp.abs(train(jax.random.key(7)) - train(jax.random.key(8))))) > 1e-3
    np.testing.assert_allclose(model.apply(params, x), model.apply(params, x), atol=0)


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match="num_heads"):
        TransformerConfig(embed_dim=10, num_heads=3)
    with pytest.raises(ValueError, match="dropout_rate"):
        TransformerConfig(dropout_rate=1.5)
    with pytest.raises(ValueError, match="embed_dim"):
        Transformer(TransformerConfig(embed_dim=8, num_heads=2)).init(
            jax.random.key(0), jnp.zeros((1, 3, 16)))
