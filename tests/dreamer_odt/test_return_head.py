"""The return-to-go head: undiscounted, time-aware regression of hindsight return-to-go."""
import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.dreamer import heads
from gdm_jax.dreamer_odt.return_head import ReturnHead


def test_return_head_learns_time_dependent_return_to_go_and_ignores_masked_steps():
    T, F = 100, 8
    head = ReturnHead(32, 2, heads.symlog_bins(63), max_ep_len=T, learning_rate=3e-3)
    state = head.init(jax.random.key(0), F)
    k_feat, k_t = jax.random.split(jax.random.key(1))
    feat = jax.random.normal(k_feat, (16, 12, F))
    t = jax.random.randint(k_t, (16, 12), 0, T)
    # Reward 1.5 per step until the episode's end at T (what hindsight relabelling gives),
    # scaled by a feature the head must read: return-to-go depends on state and time.
    rtg = (1.5 + 0.5 * jnp.tanh(feat[..., 0])) * (T - t)
    mask = jnp.ones_like(rtg).at[:, -2:].set(0.0)
    poisoned = rtg.at[:, -2:].set(1e4)  # masked steps must not pull the fit

    update = jax.jit(head.update)
    for _ in range(400):
        state, metrics = update(state, feat, t, poisoned, mask)
    pred = head.predict(state.params, feat, t)
    err = np.abs(np.asarray(pred - rtg))[:, :-2]
    assert float(metrics["return_head/abs_err"]) < 0.1 * float(metrics["return_head/target_mean"])
    assert err.mean() < 0.1 * float(rtg[:, :-2].mean()), err.mean()
    # No gradient reaches the features (the world model is trained by its own loss).
    g = jax.grad(lambda f: head.predict(state.params, f, t).sum())(feat)
    assert float(jnp.abs(g).max()) == 0.0
