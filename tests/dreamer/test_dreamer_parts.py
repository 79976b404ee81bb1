"""Dreamer building blocks: transforms, two-hot, KL balancing, λ-returns, RSSM carry semantics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.dreamer import actor_critic as ac_lib
from gdm_jax.dreamer import heads, rssm
from gdm_jax.dreamer import world_model as wm_lib


def test_symlog_symexp_inverse():
    x = jnp.array([-1e4, -20.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 3.0, 1e4])
    np.testing.assert_allclose(heads.symexp(heads.symlog(x)), x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(heads.symlog(jnp.array(np.e - 1.0)), 1.0, rtol=1e-6)
    assert float(heads.symlog(jnp.array(-5.0))) == pytest.approx(-np.log(6.0), rel=1e-6)


def test_twohot_round_trip_and_shape():
    bins = heads.symlog_bins(255)
    y = jnp.array([-17.3, -2.0, -0.01, 0.0, 0.37, 5.0, 19.99, 20.0])
    w = heads.twohot_encode(y, bins)
    assert w.shape == (8, 255)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
    assert int((w > 0).sum(-1).max()) <= 2  # at most two neighbouring bins
    np.testing.assert_allclose(jnp.sum(w * bins, -1), y, atol=1e-4)
    # Decoding logits = log(two-hot) recovers the real-valued target through symexp.
    real = jnp.array([-300.0, -1.5, 0.0, 2.0, 1234.0])
    logits = jnp.log(heads.twohot_encode(heads.symlog(real), bins) + 1e-30)
    np.testing.assert_allclose(heads.twohot_decode(logits, bins), real, rtol=1e-4, atol=1e-4)
    # Out-of-range targets clip to the end bins.
    np.testing.assert_allclose(heads.twohot_encode(jnp.array([50.0]), bins)[0, -1], 1.0)


def test_twohot_loss_minimised_at_target():
    bins = heads.symlog_bins(31, -5.0, 5.0)
    target = jnp.array(3.0)
    good = jnp.log(heads.twohot_encode(heads.symlog(target), bins) + 1e-9)
    bad = jnp.log(heads.twohot_encode(heads.symlog(jnp.array(-3.0)), bins) + 1e-9)
    assert heads.twohot_loss(good, target, bins) < heads.twohot_loss(bad, target, bins)
    assert heads.twohot_loss(good, target, bins) < 0.7  # entropy of the two-hot itself


def test_symlog_bins_rejects_bad_size():
    with pytest.raises(ValueError, match="num_bins"):
        heads.symlog_bins(1)


def _kl_by_hand(p, q):
    return sum(p[s, c] * (np.log(p[s, c]) - np.log(q[s, c]))
               for s in range(p.shape[0]) for c in range(p.shape[1]))


def test_kl_balancing_with_free_bits_matches_hand_computation():
    rng = np.random.default_rng(0)
    post = rssm.mixed_logits(jnp.asarray(rng.normal(size=(3, 4, 5)) * 3.0), 0.01)
    prior = rssm.mixed_logits(jnp.asarray(rng.normal(size=(3, 4, 5)) * 0.1), 0.01)
    free = 1.0
    loss, parts = wm_lib.kl_balance_loss(post, prior, free, 0.5, 0.1)
    p, q = np.exp(np.asarray(post)), np.exp(np.asarray(prior))
    kl = np.array([_kl_by_hand(p[b], q[b]) for b in range(3)])
    np.testing.assert_allclose(parts["kl_dyn"], kl, rtol=1e-4)
    np.testing.assert_allclose(parts["kl_rep"], kl, rtol=1e-4)
    np.testing.assert_allclose(loss, 0.6 * np.maximum(kl, free), rtol=1e-4)
    # Below free bits the loss is the constant clip value and gives no gradient.
    same = post
    loss_same, _ = wm_lib.kl_balance_loss(post, same, free, 0.5, 0.1)
    np.testing.assert_allclose(loss_same, 0.6 * free, rtol=1e-5)
    g = jax.grad(lambda a: wm_lib.kl_balance_loss(a, same, free, 0.5, 0.1)[0].sum())(post)
    np.testing.assert_allclose(g, 0.0, atol=1e-7)


def test_kl_balancing_routes_gradients_by_scale():
    rng = np.random.default_rng(1)
    post = jnp.asarray(rng.normal(size=(2, 3, 4)) * 3.0)
    prior = jnp.asarray(rng.normal(size=(2, 3, 4)))
    f = lambda a, b, dyn, rep: wm_lib.kl_balance_loss(a, b, 0.0, dyn, rep)[0].sum()
    # The dynamics term only trains the prior; the representation term only the posterior.
    np.testing.assert_allclose(jax.grad(f, 0)(post, prior, 1.0, 0.0), 0.0, atol=1e-7)
    np.testing.assert_allclose(jax.grad(f, 1)(post, prior, 0.0, 1.0), 0.0, atol=1e-7)
    assert float(jnp.abs(jax.grad(f, 1)(post, prior, 1.0, 0.0)).sum()) > 0


def test_lambda_returns_match_python_loop():
    rng = np.random.default_rng(2)
    H, N, gamma, lam = 7, 3, 0.97, 0.9
    r = rng.normal(size=(H, N)).astype(np.float32)
    c = (rng.uniform(size=(H, N)) > 0.2).astype(np.float32)
    v = rng.normal(size=(H + 1, N)).astype(np.float32)
    got = ac_lib.lambda_returns(jnp.asarray(r), jnp.asarray(c), jnp.asarray(v), gamma, lam)
    want = np.zeros((H, N), np.float32)
    nxt = v[H]
    for t in reversed(range(H)):
        want[t] = r[t] + gamma * c[t] * ((1 - lam) * v[t + 1] + lam * nxt)
        nxt = want[t]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # λ=1 with no termination is the discounted Monte-Carlo return bootstrapped at the end.
    ones = jnp.ones((H, N))
    mc = ac_lib.lambda_returns(jnp.asarray(r), ones, jnp.asarray(v), gamma, 1.0)
    want0 = sum(gamma ** t * r[t] for t in range(H)) + gamma ** H * v[H]
    np.testing.assert_allclose(mc[0], want0, rtol=1e-5)


def test_return_norm_uses_percentile_range_and_floor():
    cfg = ac_lib.ActorCriticConfig(action_dim=1, return_norm_decay=0.0)
    rets = jnp.linspace(0.0, 100.0, 101)
    norm, scale = ac_lib.update_return_norm(ac_lib.ReturnNorm.create(), rets, cfg)
    np.testing.assert_allclose(scale, 90.0, rtol=1e-5)
    _, small = ac_lib.update_return_norm(ac_lib.ReturnNorm.create(), rets * 1e-3, cfg)
    assert float(small) == 1.0  # small returns are not scaled up


@pytest.fixture(scope="module")
def tiny_rssm():
    cfg = rssm.RSSMConfig(action_dim=2, deter=16, stoch=4, classes=5, hidden=16)
    model = rssm.RSSM(cfg)
    params = rssm.init_params(model, jax.random.key(0), embed_dim=6)
    return cfg, model, params


def test_rssm_observe_then_imagine_continues_from_posterior(tiny_rssm):
    cfg, model, params = tiny_rssm
    T, B = 5, 3
    k = jax.random.split(jax.random.key(1), 6)
    emb = jax.random.normal(k[0], (T + 1, B, 6))
    actions = jax.random.uniform(k[1], (T + 1, B, 2), minval=-1, maxval=1)
    is_first = jnp.zeros((T + 1, B), bool).at[0].set(True)
    posts, priors = rssm.observe(model, params, rssm.initial(cfg, B), emb[:T], actions[:T],
                                 is_first[:T], k[2])
    assert posts.deter.shape == (T, B, 16) and posts.stoch.shape == (T, B, 4, 5)
    np.testing.assert_allclose(posts.stoch.sum(-1), 1.0, atol=1e-5)  # one-hot samples
    last = jax.tree.map(lambda x: x[-1], posts)
    # One more observe step from the last posterior with action a ...
    _, prior_next = rssm.observe(model, params, last, emb[T:], actions[T:], is_first[T:], k[3])
    # ... uses the same prior as imagining one step with a from that posterior.
    states, acts = rssm.imagine(model, params, last, lambda s, key: actions[T], 1, k[4])
    np.testing.assert_allclose(states.deter[1], prior_next.deter[0], atol=1e-5)
    np.testing.assert_allclose(states.logits[1], prior_next.logits[0], atol=1e-5)
    np.testing.assert_allclose(acts[0], actions[T])
    assert states.deter.shape == (2, B, 16)


def test_rssm_is_first_resets_carry(tiny_rssm):
    cfg, model, params = tiny_rssm
    B = 2
    k = jax.random.split(jax.random.key(2), 4)
    emb = jax.random.normal(k[0], (3, B, 6))
    act = jax.random.normal(k[1], (3, B, 2))
    first = jnp.array([[True, True], [False, False], [True, False]])
    posts, priors = rssm.observe(model, params, rssm.initial(cfg, B), emb, act, first, k[2])
    # Restarting at step 2 from the zero carry gives exactly the same prior deter there.
    _, fresh = rssm.observe(model, params, rssm.initial(cfg, B), emb[2:], act[2:], first[2:], k[3])
    np.testing.assert_allclose(priors.deter[2, 0], fresh.deter[0, 0], atol=1e-6)
    assert not np.allclose(priors.deter[2, 1], fresh.deter[0, 1], atol=1e-4)


def test_actor_critic_rejects_unknown_actor_grad():
    with pytest.raises(ValueError, match="actor_grad"):
        ac_lib.ActorCritic(ac_lib.ActorCriticConfig(action_dim=1, actor_grad="magic"))
