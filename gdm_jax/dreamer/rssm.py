"""Recurrent state-space model (RSSM): GRU deterministic state plus categorical stochastic latents.

Carry convention: the posterior state at step t has seen obs[t] and the action taken
before it (prev_action[t]); the prior for step t+1 is ``img_step(post_t, action_t)``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct


@dataclasses.dataclass(frozen=True)
class RSSMConfig:
    """Sizes of the RSSM; stoch x classes categorical latents."""
    action_dim: int
    deter: int = 512
    stoch: int = 32
    classes: int = 32
    hidden: int = 512
    unimix: float = 0.01


@struct.dataclass
class RSSMState:
    """One RSSM state per batch row; leading dims may include time when stacked."""
    deter: jax.Array   # [..., D]
    stoch: jax.Array   # [..., S, C] straight-through one-hot sample
    logits: jax.Array  # [..., S, C] log-probabilities after the uniform mix


def initial(cfg: RSSMConfig, batch: int) -> RSSMState:
    """All-zero carry used at episode starts."""
    return RSSMState(
        deter=jnp.zeros((batch, cfg.deter), jnp.float32),
        stoch=jnp.zeros((batch, cfg.stoch, cfg.classes), jnp.float32),
        logits=jnp.zeros((batch, cfg.stoch, cfg.classes), jnp.float32))


def features(state: RSSMState) -> jax.Array:
    """Model features fed to every head: deterministic state and flattened latent sample."""
    stoch = state.stoch.reshape(*state.stoch.shape[:-2], -1)
    return jnp.concatenate([state.deter, stoch], axis=-1)


def mixed_logits(raw_logits: jax.Array, unimix: float) -> jax.Array:
    """Log-probabilities of (1 - unimix) * softmax + unimix * uniform; keeps KL and gradients bounded."""
    probs = jax.nn.softmax(raw_logits, axis=-1)
    probs = (1.0 - unimix) * probs + unimix / raw_logits.shape[-1]
    return jnp.log(probs)


def sample_straight_through(logits: jax.Array, key: jax.Array) -> jax.Array:
    """One-hot categorical sample whose gradient is that of the probabilities."""
    idx = jax.random.categorical(key, logits, axis=-1)
    one_hot = jax.nn.one_hot(idx, logits.shape[-1], dtype=logits.dtype)
    probs = jnp.exp(logits)
    return one_hot + probs - jax.lax.stop_gradient(probs)


class LayerNormGRU(nn.Module):
    """GRU cell with LayerNorm on the gates and an update-gate bias of -1 (DreamerV3)."""
    size: int

    @nn.compact
    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        parts = nn.Dense(3 * self.size, use_bias=False)(jnp.concatenate([x, h], -1))
        parts = nn.LayerNorm()(parts)
        reset, cand, update = jnp.split(parts, 3, axis=-1)
        reset = jax.nn.sigmoid(reset)
        cand = jnp.tanh(reset * cand)
        update = jax.nn.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * h


def _dense_norm_silu(width: int, name: str) -> nn.Module:
    return nn.Sequential([nn.Dense(width, use_bias=False), nn.LayerNorm(), nn.silu], name=name)


class RSSM(nn.Module):
    """Transition (prior) and representation (posterior) model; call via its methods."""
    cfg: RSSMConfig

    def setup(self):
        c = self.cfg
        self.img_in = _dense_norm_silu(c.hidden, "img_in")
        self.gru = LayerNormGRU(c.deter, name="gru")
        self.img_out = _dense_norm_silu(c.hidden, "img_out")
        self.prior_logits = nn.Dense(c.stoch * c.classes, name="prior_logits")
        self.obs_out = _dense_norm_silu(c.hidden, "obs_out")
        self.post_logits = nn.Dense(c.stoch * c.classes, name="post_logits")

    def _dist(self, raw: jax.Array) -> jax.Array:
        raw = raw.reshape(*raw.shape[:-1], self.cfg.stoch, self.cfg.classes)
        return mixed_logits(raw, self.cfg.unimix)

    def img_step(self, state: RSSMState, action: jax.Array, key: jax.Array) -> RSSMState:
        """Prior state one step ahead given the action taken in ``state``."""
        stoch = state.stoch.reshape(*state.stoch.shape[:-2], -1)
        x = self.img_in(jnp.concatenate([stoch, action], -1))
        deter = self.gru(state.deter, x)
        logits = self._dist(self.prior_logits(self.img_out(deter)))
        return RSSMState(deter, sample_straight_through(logits, key), logits)

    def obs_step(self, state: RSSMState, prev_action: jax.Array, emb: jax.Array,
                 is_first: jax.Array, key: jax.Array) -> tuple[RSSMState, RSSMState]:
        """(posterior, prior) for one observation; resets the carry where ``is_first``."""
        keep = (1.0 - is_first.astype(jnp.float32))
        state = jax.tree.map(lambda x: x * keep.reshape(-1, *([1] * (x.ndim - 1))), state)
        prev_action = prev_action * keep[:, None]
        prior_key, post_key = jax.random.split(key)
        prior = self.img_step(state, prev_action, prior_key)
        x = self.obs_out(jnp.concatenate([prior.deter, emb], -1))
        logits = self._dist(self.post_logits(x))
        post = RSSMState(prior.deter, sample_straight_through(logits, post_key), logits)
        return post, prior


def init_params(model: RSSM, key: jax.Array, embed_dim: int) -> dict:
    """Initialise RSSM parameters (touches both the prior and posterior paths)."""
    cfg = model.cfg
    state = initial(cfg, 1)
    return model.init(key, state, jnp.zeros((1, cfg.action_dim)), jnp.zeros((1, embed_dim)),
                      jnp.ones((1,), bool), key, method=RSSM.obs_step)["params"]


def observe(model: RSSM, params: dict, carry: RSSMState, emb_TxBxE: jax.Array,
            prev_action_TxBxA: jax.Array, is_first_TxB: jax.Array, key: jax.Array
            ) -> tuple[RSSMState, RSSMState]:
    """Filter a sequence: stacked posteriors and priors [T, B, ...]; posts[-1] is the next carry."""
    keys = jax.random.split(key, emb_TxBxE.shape[0])

    def step(state, inputs):
        emb, prev_action, is_first, k = inputs
        post, prior = model.apply({"params": params}, state, prev_action, emb, is_first, k,
                                  method=RSSM.obs_step)
        return post, (post, prior)

    _, (posts, priors) = jax.lax.scan(step, carry, (emb_TxBxE, prev_action_TxBxA, is_first_TxB, keys))
    return posts, priors


def img_step(model: RSSM, params: dict, state: RSSMState, action: jax.Array,
             key: jax.Array) -> RSSMState:
    """One prior step (functional form of ``RSSM.img_step``)."""
    return model.apply({"params": params}, state, action, key, method=RSSM.img_step)


Policy = Callable[[RSSMState, jax.Array], jax.Array]


def imagine(model: RSSM, params: dict, carry: RSSMState, policy: Policy, horizon: int,
            key: jax.Array) -> tuple[RSSMState, jax.Array]:
    """Roll the prior forward ``horizon`` steps with ``policy(state, key) -> action``.

    Returns states [H+1, B, ...] (index 0 is ``carry``) and actions [H, B, A], where
    actions[t] is taken in states[t]. ``horizon`` is static.
    """
    keys = jax.random.split(key, horizon)

    def step(state, k):
        act_key, dyn_key = jax.random.split(k)
        action = policy(state, act_key)
        nxt = img_step(model, params, state, action, dyn_key)
        return nxt, (nxt, action)

    _, (states, actions) = jax.lax.scan(step, carry, keys)
    states = jax.tree.map(lambda c, s: jnp.concatenate([c[None], s], 0), carry, states)
    return states, actions
