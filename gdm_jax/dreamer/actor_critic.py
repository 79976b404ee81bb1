"""Actor-critic learned in imagination: bounded-normal actor, two-hot critic, λ-returns,
slow target critic, and percentile return normalisation (DreamerV3)."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from gdm_jax.dreamer import heads
from gdm_jax.dreamer.rssm import RSSMState
from gdm_jax.dreamer.world_model import Imagined, WorldModel, imagine_rollout

ACTOR_GRADS = ("dynamics", "reinforce")


@dataclasses.dataclass(frozen=True)
class ActorCriticConfig:
    """Hyperparameters of the behaviour learning in imagination."""
    action_dim: int
    hidden: int = 512
    layers: int = 2
    num_bins: int = 255
    horizon: int = 15
    gamma: float = 0.99
    lam: float = 0.95
    entropy_coef: float = 3e-4
    min_std: float = 0.1
    max_std: float = 1.0
    slow_critic_decay: float = 0.98
    return_norm_decay: float = 0.99
    return_norm_low: float = 5.0
    return_norm_high: float = 95.0
    actor_grad: str = "dynamics"
    num_starts: int = 0  # imagine from this many replayed posteriors per step (0 = all B*T)


class Actor(nn.Module):
    """Normal policy with tanh-bounded mean and std in [min_std, max_std]; samples clipped to [-1, 1]."""
    cfg: ActorCriticConfig

    @nn.compact
    def __call__(self, feat: jax.Array) -> tuple[jax.Array, jax.Array]:
        c = self.cfg
        out = heads.MLP((c.hidden,) * c.layers, 2 * c.action_dim)(feat)
        mean_raw, std_raw = jnp.split(out, 2, axis=-1)
        std = (c.max_std - c.min_std) * jax.nn.sigmoid(std_raw + 2.0) + c.min_std
        return jnp.tanh(mean_raw), std


def sample_action(mean: jax.Array, std: jax.Array, key: jax.Array) -> jax.Array:
    """Reparameterised sample clipped to the action box with a straight-through gradient."""
    raw = mean + std * jax.random.normal(key, mean.shape)
    return raw + jax.lax.stop_gradient(jnp.clip(raw, -1.0, 1.0) - raw)


def normal_log_prob(mean: jax.Array, std: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.sum(-0.5 * jnp.square((x - mean) / std) - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi), -1)


def normal_entropy(std: jax.Array) -> jax.Array:
    return jnp.sum(0.5 + 0.5 * jnp.log(2 * jnp.pi) + jnp.log(std), -1)


def lambda_returns(rewards_HxN: jax.Array, continues_HxN: jax.Array, values_Hp1xN: jax.Array,
                   gamma: float, lam: float) -> jax.Array:
    """R_t = r_t + γ c_t ((1-λ) v_{t+1} + λ R_{t+1}), bootstrapped with R_H = v_H; returns [H, N]."""
    disc = gamma * continues_HxN

    def step(next_ret, inputs):
        r, d, v_next = inputs
        ret = r + d * ((1.0 - lam) * v_next + lam * next_ret)
        return ret, ret

    _, rets = jax.lax.scan(step, values_Hp1xN[-1], (rewards_HxN, disc, values_Hp1xN[1:]), reverse=True)
    return rets


@struct.dataclass
class ReturnNorm:
    """EMA of the 5th and 95th return percentiles."""
    low: jax.Array
    high: jax.Array

    @classmethod
    def create(cls) -> "ReturnNorm":
        return cls(low=jnp.zeros((), jnp.float32), high=jnp.zeros((), jnp.float32))


def update_return_norm(norm: ReturnNorm, returns: jax.Array, cfg: ActorCriticConfig
                       ) -> tuple[ReturnNorm, jax.Array]:
    """New EMA percentiles and the scale max(1, P95 - P5) used to divide returns."""
    lo = jnp.percentile(returns, cfg.return_norm_low)
    hi = jnp.percentile(returns, cfg.return_norm_high)
    d = cfg.return_norm_decay
    norm = ReturnNorm(low=d * norm.low + (1 - d) * lo, high=d * norm.high + (1 - d) * hi)
    return norm, jnp.maximum(1.0, norm.high - norm.low)


class ActorCritic:
    """Stateless bundle of the actor and critic modules."""

    def __init__(self, cfg: ActorCriticConfig):
        if cfg.actor_grad not in ACTOR_GRADS:
            raise ValueError(f"actor_grad={cfg.actor_grad!r}; choose from {ACTOR_GRADS}")
        self.cfg = cfg
        self.actor = Actor(cfg)
        self.critic = heads.TwoHotHead(heads.HeadConfig(cfg.hidden, cfg.layers, cfg.num_bins))
        self.bins = heads.symlog_bins(cfg.num_bins)

    def init(self, key: jax.Array, feat_dim: int) -> dict:
        """{actor, critic, slow_critic} parameters; the slow critic starts as a copy."""
        k_actor, k_critic = jax.random.split(key)
        feat = jnp.zeros((1, feat_dim))
        critic = self.critic.init(k_critic, feat)["params"]
        return {"actor": self.actor.init(k_actor, feat)["params"], "critic": critic,
                "slow_critic": jax.tree.map(jnp.copy, critic)}

    def policy(self, actor_params: dict):
        """``(feat, key) -> action`` sampling from the actor."""
        def act(feat, key):
            mean, std = self.actor.apply({"params": actor_params}, feat)
            return sample_action(mean, std, key)
        return act

    def mode(self, actor_params: dict, feat: jax.Array) -> jax.Array:
        """Deterministic action (the mean) for evaluation."""
        return self.actor.apply({"params": actor_params}, feat)[0]

    def value(self, critic_params: dict, feat: jax.Array) -> jax.Array:
        return heads.twohot_decode(self.critic.apply({"params": critic_params}, feat), self.bins)


def imagine_with_values(wm: WorldModel, wm_params: dict, ac: ActorCritic, ac_params: dict,
                        start: RSSMState, horizon: int, key: jax.Array) -> tuple[Imagined, jax.Array]:
    """Imagined trajectory from ``start`` [N] with the actor, and critic values [H+1, N]."""
    traj = imagine_rollout(wm, wm_params, start, ac.policy(ac_params["actor"]), horizon, key)
    return traj, ac.value(ac_params["critic"], traj.feats)


def actor_loss(ac: ActorCritic, actor_params: dict, wm: WorldModel, wm_params: dict,
               slow_critic_params: dict, start: RSSMState, norm: ReturnNorm, key: jax.Array
               ) -> tuple[jax.Array, tuple[Imagined, jax.Array, ReturnNorm, dict]]:
    """Imagine with the actor and score it; aux = (trajectory, λ-returns, return norm, metrics)."""
    cfg = ac.cfg
    sg = jax.lax.stop_gradient
    if cfg.actor_grad == "reinforce":
        start = sg(start)
        policy = lambda f, k: sg(ac.policy(actor_params)(sg(f), k))
    else:
        policy = ac.policy(actor_params)
    traj = imagine_rollout(wm, wm_params, start, policy, cfg.horizon, key)
    values = ac.value(slow_critic_params, traj.feats)
    rets = lambda_returns(traj.rewards, traj.continues, values, cfg.gamma, cfg.lam)
    # States after a predicted termination should not count: weight by survival so far.
    weight = sg(jnp.cumprod(jnp.concatenate(
        [jnp.ones_like(traj.continues[:1]), traj.continues[:-1]], 0), 0))
    norm, scale = update_return_norm(norm, sg(rets), cfg)
    mean, std = ac.actor.apply({"params": actor_params}, sg(traj.feats[:-1]))
    entropy = normal_entropy(std)
    if cfg.actor_grad == "reinforce":
        adv = sg((rets - values[:-1]) / scale)
        objective = adv * normal_log_prob(mean, std, traj.actions)
    else:
        objective = rets / scale
    loss = -jnp.mean(weight * (objective + cfg.entropy_coef * entropy))
    metrics = {"actor/loss": loss, "actor/entropy": entropy.mean(), "actor/return_scale": scale,
               "actor/imag_return": rets.mean(), "actor/imag_reward": traj.rewards.mean(),
               "actor/imag_continue": traj.continues.mean(), "actor/action_std": std.mean()}
    return loss, (sg(traj), sg(rets), norm, metrics)


def critic_loss(ac: ActorCritic, critic_params: dict, feats_Hp1xNxF: jax.Array,
                returns_HxN: jax.Array, weight_HxN: jax.Array) -> jax.Array:
    """Two-hot cross-entropy of the critic on imagined states against λ-returns."""
    logits = ac.critic.apply({"params": critic_params}, feats_Hp1xNxF[:-1])
    return jnp.mean(weight_HxN * heads.twohot_loss(logits, returns_HxN, ac.bins))


@struct.dataclass
class ActorCriticState:
    """Actor-critic parameters, optimiser states and the return normaliser."""
    params: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    norm: ReturnNorm


def actor_critic_update(ac: ActorCritic, actor_opt: optax.GradientTransformation,
                        critic_opt: optax.GradientTransformation, state: ActorCriticState,
                        wm: WorldModel, wm_params: dict, start: RSSMState, key: jax.Array
                        ) -> tuple[ActorCriticState, Imagined, dict]:
    """One actor step and one critic step from replayed start states [N]; world model frozen."""
    params = state.params
    wm_params = jax.lax.stop_gradient(wm_params)
    (_, (traj, rets, norm, metrics)), actor_grads = jax.value_and_grad(
        lambda p: actor_loss(ac, p, wm, wm_params, params["slow_critic"], start, state.norm, key),
        has_aux=True)(params["actor"])
    weight = jnp.cumprod(jnp.concatenate([jnp.ones_like(traj.continues[:1]), traj.continues[:-1]], 0), 0)
    c_loss, critic_grads = jax.value_and_grad(
        lambda p: critic_loss(ac, p, traj.feats, rets, weight))(params["critic"])
    a_updates, a_opt = actor_opt.update(actor_grads, state.actor_opt, params["actor"])
    c_updates, c_opt = critic_opt.update(critic_grads, state.critic_opt, params["critic"])
    critic = optax.apply_updates(params["critic"], c_updates)
    d = ac.cfg.slow_critic_decay
    slow = jax.tree.map(lambda s, c: d * s + (1 - d) * c, params["slow_critic"], critic)
    new_params = {"actor": optax.apply_updates(params["actor"], a_updates), "critic": critic,
                  "slow_critic": slow}
    metrics = {**metrics, "critic/loss": c_loss, "critic/value": ac.value(critic, traj.feats).mean(),
               "actor/grad_norm": optax.tree.norm(actor_grads)}
    return ActorCriticState(new_params, a_opt, c_opt, norm), traj, metrics
