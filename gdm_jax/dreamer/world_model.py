"""The Dreamer world model: encoder, RSSM, decoder, reward and continue heads, and its loss.

Batch convention (transition-aligned, as replay stores it): ``action[t]`` is taken at
``obs[t]``; ``reward[t]`` and ``terminated[t]`` are its outcome. The RSSM therefore
sees ``prev_action[t] = action[t-1]``, and the reward/continue heads read the state at
``t`` together with ``action[t]``, so every transition in a sequence is a target (no
reward is lost at episode boundaries where auto-reset replaced the terminal obs).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct

from gdm_jax.dreamer import heads, rssm
from gdm_jax.dreamer.rssm import RSSMState


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """Hyperparameters of the world model and its loss."""
    obs_dim: int
    action_dim: int
    deter: int = 512
    stoch: int = 32
    classes: int = 32
    hidden: int = 512
    layers: int = 2
    num_bins: int = 255
    unimix: float = 0.01
    free_nats: float = 1.0
    dyn_scale: float = 0.5
    rep_scale: float = 0.1

    @property
    def rssm(self) -> rssm.RSSMConfig:
        return rssm.RSSMConfig(action_dim=self.action_dim, deter=self.deter, stoch=self.stoch,
                               classes=self.classes, hidden=self.hidden, unimix=self.unimix)

    @property
    def head(self) -> heads.HeadConfig:
        return heads.HeadConfig(hidden=self.hidden, layers=self.layers, num_bins=self.num_bins)


class WorldModel:
    """Stateless bundle of the world-model modules; parameters live in a separate dict."""

    def __init__(self, cfg: WorldModelConfig):
        self.cfg = cfg
        self.encoder = heads.VectorEncoder(cfg.head)
        self.rssm = rssm.RSSM(cfg.rssm)
        self.decoder = heads.VectorDecoder(cfg.head, cfg.obs_dim)
        self.reward = heads.TwoHotHead(cfg.head)
        self.cont = heads.ContinueHead(cfg.head)
        self.bins = heads.symlog_bins(cfg.num_bins)

    @property
    def feat_dim(self) -> int:
        return self.cfg.deter + self.cfg.stoch * self.cfg.classes

    def init(self, key: jax.Array) -> dict:
        """Fresh parameters {encoder, rssm, decoder, reward, cont}."""
        k_enc, k_rssm, k_dec, k_rew, k_cont = jax.random.split(key, 5)
        emb = jnp.zeros((1, self.cfg.hidden))
        feat = jnp.zeros((1, self.feat_dim))
        feat_act = jnp.zeros((1, self.feat_dim + self.cfg.action_dim))
        return {
            "encoder": self.encoder.init(k_enc, jnp.zeros((1, self.cfg.obs_dim)))["params"],
            "rssm": rssm.init_params(self.rssm, k_rssm, emb.shape[-1]),
            "decoder": self.decoder.init(k_dec, feat)["params"],
            "reward": self.reward.init(k_rew, feat_act)["params"],
            "cont": self.cont.init(k_cont, feat_act)["params"],
        }

    def initial(self, batch: int) -> RSSMState:
        """Zero RSSM carry for ``batch`` rows."""
        return rssm.initial(self.cfg.rssm, batch)

    def embed(self, params: dict, obs: jax.Array) -> jax.Array:
        return self.encoder.apply({"params": params["encoder"]}, obs)

    def observe(self, params: dict, carry: RSSMState, obs_TxBxO: jax.Array,
                prev_action_TxBxA: jax.Array, is_first_TxB: jax.Array, key: jax.Array
                ) -> tuple[RSSMState, RSSMState]:
        """Encode and filter a time-major sequence: (posteriors, priors), each [T, B, ...]."""
        emb = self.embed(params, obs_TxBxO)
        return rssm.observe(self.rssm, params["rssm"], carry, emb, prev_action_TxBxA, is_first_TxB, key)

    def obs_step(self, params: dict, carry: RSSMState, prev_action: jax.Array, obs: jax.Array,
                 is_first: jax.Array, key: jax.Array) -> RSSMState:
        """Posterior for one observation per row (used when acting in the environment)."""
        post, _ = self.rssm.apply({"params": params["rssm"]}, carry, prev_action,
                                  self.embed(params, obs), is_first, key, method=rssm.RSSM.obs_step)
        return post

    def img_step(self, params: dict, state: RSSMState, action: jax.Array, key: jax.Array) -> RSSMState:
        return rssm.img_step(self.rssm, params["rssm"], state, action, key)

    def decode_obs(self, params: dict, feat: jax.Array) -> jax.Array:
        """Predicted observation in real units."""
        return heads.symexp(self.decoder.apply({"params": params["decoder"]}, feat))

    def reward_logits(self, params: dict, feat: jax.Array, action: jax.Array) -> jax.Array:
        return self.reward.apply({"params": params["reward"]}, jnp.concatenate([feat, action], -1))

    def cont_logit(self, params: dict, feat: jax.Array, action: jax.Array) -> jax.Array:
        return self.cont.apply({"params": params["cont"]}, jnp.concatenate([feat, action], -1))

    def predict_reward(self, params: dict, feat: jax.Array, action: jax.Array) -> jax.Array:
        return heads.twohot_decode(self.reward_logits(params, feat, action), self.bins)

    def predict_continue(self, params: dict, feat: jax.Array, action: jax.Array) -> jax.Array:
        """Probability that the episode goes on after taking ``action``."""
        return jax.nn.sigmoid(self.cont_logit(params, feat, action))


def categorical_kl(lhs_logits: jax.Array, rhs_logits: jax.Array) -> jax.Array:
    """KL(lhs || rhs) summed over the latent variables [..., S, C] -> [...]."""
    lhs_probs = jnp.exp(lhs_logits)
    return jnp.sum(lhs_probs * (lhs_logits - rhs_logits), axis=(-2, -1))


def kl_balance_loss(post_logits: jax.Array, prior_logits: jax.Array, free_nats: float,
                    dyn_scale: float, rep_scale: float) -> tuple[jax.Array, dict]:
    """DreamerV3 KL balancing: dynamics term trains the prior, representation term the posterior.

    Each term is clipped below at ``free_nats`` (per sample, before averaging) so a
    well-fit posterior is not pushed further toward an uninformative prior.
    """
    sg = jax.lax.stop_gradient
    dyn = categorical_kl(sg(post_logits), prior_logits)
    rep = categorical_kl(post_logits, sg(prior_logits))
    loss = dyn_scale * jnp.maximum(dyn, free_nats) + rep_scale * jnp.maximum(rep, free_nats)
    return loss, {"kl_dyn": dyn, "kl_rep": rep}


def time_major(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, 0, 1)


def previous_actions(action_BxTxA: jax.Array) -> jax.Array:
    """action[t-1] with zeros at t=0 (the RSSM input at step t)."""
    return jnp.concatenate([jnp.zeros_like(action_BxTxA[:, :1]), action_BxTxA[:, :-1]], axis=1)


def world_model_loss(wm: WorldModel, params: dict, batch: Mapping[str, jax.Array], key: jax.Array
                     ) -> tuple[jax.Array, tuple[dict, RSSMState]]:
    """Total loss over a [B, T] batch (optionally weighted by ``batch["mask"]``);
    aux = (scalar metrics, stop-gradient posteriors [B, T, ...])."""
    cfg = wm.cfg
    obs, action = batch["obs"], batch["action"]
    # Every sampled sequence starts from the zero carry, so its first step is a reset.
    is_first = batch["is_first"].at[:, 0].set(True)
    posts, priors = wm.observe(params, wm.initial(obs.shape[0]), time_major(obs),
                               time_major(previous_actions(action)), time_major(is_first), key)
    posts = jax.tree.map(time_major, posts)
    priors = jax.tree.map(time_major, priors)
    feat = rssm.features(posts)

    recon = jnp.sum(jnp.square(wm.decoder.apply({"params": params["decoder"]}, feat)
                               - heads.symlog(obs)), axis=-1)
    reward = heads.twohot_loss(wm.reward_logits(params, feat, action), batch["reward"], wm.bins)
    cont_target = 1.0 - batch["terminated"].astype(jnp.float32)
    cont = optax.sigmoid_binary_cross_entropy(wm.cont_logit(params, feat, action), cont_target)
    kl, kl_parts = kl_balance_loss(posts.logits, priors.logits, cfg.free_nats, cfg.dyn_scale, cfg.rep_scale)
    total = recon + reward + cont + kl
    # Optional [B, T] mask (e.g. gdm_jax.data.replay.sample_sequences marks empty windows with 0).
    mask = batch["mask"].astype(jnp.float32) if "mask" in batch else jnp.ones_like(total)
    mean = lambda x: jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    prior_ent = -jnp.sum(jnp.exp(priors.logits) * priors.logits, (-2, -1))
    metrics = {
        "wm/loss": mean(total), "wm/recon_loss": mean(recon), "wm/reward_loss": mean(reward),
        "wm/cont_loss": mean(cont), "wm/kl_dyn": mean(kl_parts["kl_dyn"]),
        "wm/kl_rep": mean(kl_parts["kl_rep"]), "wm/prior_entropy": mean(prior_ent),
    }
    return mean(total), (metrics, jax.lax.stop_gradient(posts))


@struct.dataclass
class Imagined:
    """An imagined trajectory: states[t] -> actions[t] -> (rewards[t], continues[t], states[t+1])."""
    states: RSSMState        # [H+1, N, ...]
    feats: jax.Array         # [H+1, N, F]
    actions: jax.Array       # [H, N, A]
    rewards: jax.Array       # [H, N]
    continues: jax.Array     # [H, N] probability of not terminating after actions[t]
    obs: jax.Array           # [H+1, N, O] decoded observations


def imagine_rollout(wm: WorldModel, params: dict, start: RSSMState,
                    policy: Callable[[jax.Array, jax.Array], jax.Array], horizon: int,
                    key: jax.Array) -> Imagined:
    """Imagine ``horizon`` steps from ``start`` [N, ...] with ``policy(feat, key) -> action``.

    Gradients flow through the dynamics into whatever ``policy`` closes over;
    ``horizon`` is static.
    """
    states, actions = rssm.imagine(wm.rssm, params["rssm"], start,
                                   lambda s, k: policy(rssm.features(s), k), horizon, key)
    feats = rssm.features(states)
    return Imagined(
        states=states, feats=feats, actions=actions,
        rewards=wm.predict_reward(params, feats[:-1], actions),
        continues=wm.predict_continue(params, feats[:-1], actions),
        obs=wm.decode_obs(params, feats))


def make_optimizer(lr: float, grad_clip: float, eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam with global-norm clipping (all Dreamer parts use this form)."""
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr, eps=eps))


def world_model_update(wm: WorldModel, optimizer: optax.GradientTransformation, params: dict,
                       opt_state: optax.OptState, batch: Mapping[str, jax.Array], key: jax.Array
                       ) -> tuple[dict, optax.OptState, dict, RSSMState]:
    """One gradient step on the world model; returns (params, opt_state, metrics, posteriors)."""
    grads, (metrics, posts) = jax.grad(
        lambda p: world_model_loss(wm, p, batch, key), has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    metrics = {**metrics, "wm/grad_norm": optax.tree.norm(grads)}
    return optax.apply_updates(params, updates), opt_state, metrics, posts
