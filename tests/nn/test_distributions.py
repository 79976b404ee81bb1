"""Tanh-Gaussian densities against an independent change-of-variables reference."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.nn import distributions as D


def _reference_log_prob(a, mean, std):
    """Per-dim density N(atanh a; m, s) / (1 - a^2), in float64 numpy."""
    u = np.arctanh(a)
    log_n = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)
    return np.sum(log_n - np.log1p(-a * a), axis=-1)


def test_log_prob_matches_change_of_variables_reference():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(5, 3))
    log_std = rng.uniform(-1.5, 0.5, size=(5, 3))
    a = rng.uniform(-0.98, 0.98, size=(5, 3))
    got = D.tanh_gaussian_log_prob(jnp.asarray(a, jnp.float32), jnp.asarray(mean, jnp.float32),
                                   jnp.asarray(log_std, jnp.float32))
    np.testing.assert_allclose(got, _reference_log_prob(a, mean, np.exp(log_std)), rtol=1e-4,
                               atol=1e-4)


def test_density_integrates_to_one_and_entropy_matches_quadrature():
    mean, log_std = jnp.array([[0.7]]), jnp.array([[-0.3]])
    # Integrate over u (a = tanh u) so the grid resolves the mass piling up near ±1.
    u = np.linspace(-12, 12, 200001)
    du = u[1] - u[0]
    a = np.tanh(u)
    log_p = np.asarray(D.tanh_gaussian_log_prob_pre_tanh(
        jnp.asarray(u[:, None]), jnp.broadcast_to(mean, (u.size, 1)),
        jnp.broadcast_to(log_std, (u.size, 1))), np.float64)
    da_du = 1 - a * a
    p_a = np.exp(log_p)
    assert abs(np.sum(p_a * da_du) * du - 1.0) < 1e-3
    entropy_quad = -np.sum(p_a * log_p * da_du) * du
    est = D.tanh_gaussian_entropy(jax.random.key(0), mean, log_std, num_samples=20000)
    assert abs(float(est[0]) - entropy_quad) < 0.03


def test_sample_log_prob_agrees_with_log_prob_of_sampled_action():
    mean = jnp.array([[0.2, -0.5, 1.0]] * 64)
    log_std = jnp.full((64, 3), -0.7)
    a, log_p = D.tanh_gaussian_sample(jax.random.key(1), mean, log_std)
    assert a.shape == (64, 3) and bool(jnp.all(jnp.abs(a) < 1))
    np.testing.assert_allclose(log_p, D.tanh_gaussian_log_prob(a, mean, log_std), rtol=1e-3,
                               atol=1e-3)


def test_numerically_safe_at_saturation():
    mean, log_std = jnp.array([[12.0, -12.0]]), jnp.array([[-4.0, -4.0]])
    a, log_p = D.tanh_gaussian_sample(jax.random.key(2), mean, log_std)
    assert bool(jnp.all(jnp.isfinite(log_p)))
    lp_edge = D.tanh_gaussian_log_prob(jnp.array([[1.0, -1.0]]), mean, log_std)
    grads = jax.grad(lambda m: D.tanh_gaussian_log_prob(jnp.array([[1.0, -1.0]]), m,
                                                        log_std).sum())(mean)
    assert bool(jnp.all(jnp.isfinite(lp_edge))) and bool(jnp.all(jnp.isfinite(grads)))


def test_bounded_log_std_stays_in_range():
    raw = jnp.array([-1e4, -1.0, 0.0, 1.0, 1e4])
    out = D.bounded_log_std(raw, -5.0, 2.0)
    assert float(out.min()) >= -5.0 and float(out.max()) <= 2.0
    assert bool(jnp.all(jnp.diff(out) >= 0))
