"""The bidirectional loop as pure functions: one fused step and the collect + K-steps chunk.

Fused step (one compile): world-model update on replayed real sequences (and the
return-to-go head on their posteriors) -> imagination from those posteriors with the
Dreamer actor -> actor-critic update -> ODT update on a mix of real replay windows and
imagined windows (decoded obs, predicted rewards and continues, return-to-go bootstrapped
at the horizon with the return-to-go head or the critic: ``LoopConfig.rtg_bootstrap``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from gdm_jax.core import mesh as mesh_lib
from gdm_jax.data import replay as replay_lib
from gdm_jax.dreamer import actor_critic as ac_lib
from gdm_jax.dreamer import rssm
from gdm_jax.dreamer import train as dreamer_train
from gdm_jax.dreamer import world_model as wm_lib
from gdm_jax.dreamer_odt.imagined import imagined_windows
from gdm_jax.dreamer_odt.return_head import ReturnHead, ReturnHeadState
from gdm_jax.envs import rollout as rollout_lib
from gdm_jax.odt import learner as odt_learner_lib
from gdm_jax.odt import policy as odt_policy
from gdm_jax.odt.model import DecisionTransformer

ODT_KEYS = ("obs", "action", "rtg", "timestep", "mask")
COLLECTORS = ("odt", "dreamer", "mix")
RTG_BOOTSTRAPS = ("critic", "return_head")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Static shapes and ratios of the loop."""
    num_envs: int
    env_steps: int          # per env, per chunk
    updates: int            # fused steps per chunk
    wm_batch_size: int
    wm_seq_len: int
    num_starts: int         # imagination starts per step (<= wm_batch_size * wm_seq_len)
    odt_batch_size: int
    imagined_fraction: float  # share of the ODT batch that comes from imagination
    collector: str          # "odt", "dreamer" or "mix"
    odt_envs: int           # envs acting with ODT when collector == "mix"
    explore_return: float   # ODT's exploration target return
    max_ep_len: int
    # What imagined return-to-go is bootstrapped with at the horizon: "return_head" (the
    # undiscounted return-to-go regressed on real hindsight labels, the scale of the ODT's
    # real windows) or "critic" (Dreamer's discounted value).
    rtg_bootstrap: str = "critic"
    return_head_lr: float = 3e-4

    @property
    def num_imagined(self) -> int:
        return int(round(self.imagined_fraction * self.odt_batch_size))


@struct.dataclass
class Carry:
    """Both policies' per-env memories; each sees the action actually executed."""
    odt: odt_policy.PolicyContext
    dreamer: dreamer_train.PolicyCarry


@struct.dataclass
class LoopState:
    """The whole train state the run loop checkpoints."""
    dreamer: dreamer_train.LearnerState
    odt: odt_learner_lib.Learner
    ret: ReturnHeadState
    replay: replay_lib.TrajectoryReplay
    rollout: rollout_lib.RolloutState
    carry: Carry
    rng: jax.Array          # raw key data (uint32) so that orbax stores it as an array
    env_steps: jax.Array
    episodes: jax.Array
    last_return: jax.Array


def odt_envs_mask(cfg: LoopConfig) -> jax.Array:
    """Which envs the ODT acts in (the rest: the Dreamer actor)."""
    n_odt = {"odt": cfg.num_envs, "dreamer": 0, "mix": cfg.odt_envs}[cfg.collector]
    return jnp.arange(cfg.num_envs) < n_odt


def make_collect_policy(agent: dreamer_train.Agent, model: DecisionTransformer,
                        hp: odt_learner_lib.ODTHParams, cfg: LoopConfig) -> Callable:
    """Rollout policy over ``{"odt": ..., "dreamer": ...}`` params choosing per env who acts."""
    odt_fn = odt_policy.make_policy_fn(model, rtg_scale=hp.rtg_scale,
                                       target_return=cfg.explore_return, stochastic=True)
    dreamer_fn = dreamer_train.make_policy_fn(agent, explore=True)
    use_odt_N = odt_envs_mask(cfg)

    def policy_fn(params, carry: Carry, obs, prev_reward, first, key):
        k_odt, k_dreamer = jax.random.split(key)
        a_odt, ctx = odt_fn(params["odt"], carry.odt, obs, prev_reward, first, k_odt)
        if cfg.collector == "odt":  # skip the world model's filtering when nobody uses it
            return a_odt, carry.replace(odt=ctx)
        a_dreamer, dcarry = dreamer_fn(params["dreamer"], carry.dreamer, obs, prev_reward, first,
                                       k_dreamer)
        action = jnp.where(use_odt_N[:, None], a_odt, a_dreamer)
        ctx = ctx.replace(action_NxKxA=ctx.action_NxKxA.at[:, -1].set(action))
        return action, Carry(odt=ctx, dreamer=dcarry.replace(prev_action=action))

    return policy_fn


def collect_params(state: LoopState) -> dict:
    return {"odt": odt_learner_lib.policy_params(state.odt),
            "dreamer": {"wm": state.dreamer.wm_params, "actor": state.dreamer.ac.params["actor"]}}


def make_return_head(agent: dreamer_train.Agent, cfg: LoopConfig) -> ReturnHead:
    """The return-to-go head, as wide and deep as the critic, on the world model's bins."""
    return ReturnHead(agent.ac.cfg.hidden, agent.ac.cfg.layers, agent.wm.bins, cfg.max_ep_len,
                      cfg.return_head_lr)


def fused_step(agent: dreamer_train.Agent, model: DecisionTransformer,
               hp: odt_learner_lib.ODTHParams, cfg: LoopConfig, replay: replay_lib.TrajectoryReplay,
               learners: tuple, key: jax.Array, batch_sharding=None) -> tuple[tuple, dict]:
    """World model (+ return head) -> imagination -> actor-critic -> ODT, on one replay snapshot.

    ``learners`` = (Dreamer learner, ODT learner, return-head state)."""
    dl, ol, rl = learners
    ret_head = make_return_head(agent, cfg)
    k_seq, k_wm, k_sub, k_ac, k_real, k_pick, k_odt = jax.random.split(key, 7)
    constrain = (lambda b: jax.lax.with_sharding_constraint(b, batch_sharding)) \
        if batch_sharding is not None else (lambda b: b)

    seq = constrain(replay_lib.sample_sequences(replay, k_seq, cfg.wm_batch_size, cfg.wm_seq_len))
    wm_params, wm_opt, wm_metrics, posts = wm_lib.world_model_update(
        agent.wm, agent.wm_opt, dl.wm_params, dl.wm_opt, seq, k_wm)
    rl, ret_metrics = ret_head.update(rl, rssm.features(posts), seq["timestep"], seq["rtg"],
                                      seq["mask"])
    flat = lambda x: x.reshape(-1, *x.shape[2:])
    starts = jax.tree.map(flat, posts)
    t0 = flat(seq["timestep"])
    total = t0.shape[0]
    if cfg.num_starts < total:  # imagination dominates the cost: a random subset of starts
        idx = jax.random.choice(k_sub, total, (cfg.num_starts,), replace=False)
        starts, t0 = jax.tree.map(lambda x: x[idx], starts), t0[idx]
    ac_state, traj, ac_metrics = ac_lib.actor_critic_update(
        agent.ac, agent.actor_opt, agent.critic_opt, dl.ac, agent.wm, wm_params, starts, k_ac)

    parts = []
    n_img = cfg.num_imagined
    if n_img < cfg.odt_batch_size:
        real = replay_lib.sample_windows(replay, k_real, cfg.odt_batch_size - n_img, hp.context_len)
        parts.append({k: real[k] for k in ODT_KEYS})
    if n_img:
        pick = jax.random.choice(k_pick, traj.actions.shape[1], (n_img,), replace=False)
        take = lambda x: x[:, pick]
        feat_H = traj.feats[-1][pick]
        if cfg.rtg_bootstrap == "return_head":
            horizon = traj.actions.shape[0]
            bootstrap = ret_head.predict(rl.params, feat_H, t0[pick] + horizon)
        else:
            bootstrap = agent.ac.value(ac_state.params["critic"], feat_H)
        imag = imagined_windows(take(traj.obs), take(traj.actions), take(traj.rewards),
                                take(traj.continues), bootstrap, t0[pick], hp.context_len,
                                cfg.max_ep_len)
        parts.append({k: imag[k] for k in ODT_KEYS})
    batch = constrain(jax.tree.map(lambda *xs: jnp.concatenate(xs, 0), *parts))
    ol, odt_metrics = odt_learner_lib.update_step(model, hp, ol, batch, k_odt)

    imag_rtg = jnp.sum(batch["rtg"][-n_img:, 0] * batch["mask"][-n_img:, 0]) / jnp.maximum(
        jnp.sum(batch["mask"][-n_img:, 0]), 1.0) if n_img else jnp.zeros(())
    metrics = {**wm_metrics, **ac_metrics, **ret_metrics,
               **{f"odt/{k}": v for k, v in odt_metrics.items()}, "odt/imagined_rtg0": imag_rtg}
    return (dreamer_train.LearnerState(wm_params, wm_opt, ac_state), ol, rl), metrics


def _gated_updates(agent, model, hp, cfg, replay, learners, key, batch_sharding):
    """``cfg.updates`` fused steps in a scan, skipped until replay holds a whole WM sequence."""
    def step(learners, k):
        return fused_step(agent, model, hp, cfg, replay, learners, k, batch_sharding)

    keys = jax.random.split(key, cfg.updates)
    shapes = jax.eval_shape(step, learners, keys[0])[1]
    ready = jnp.any(replay.length >= cfg.wm_seq_len)
    skip = lambda l: (l, jax.tree.map(lambda s: jnp.zeros((cfg.updates,) + s.shape, s.dtype), shapes))
    learners, metrics = jax.lax.cond(ready, lambda l: jax.lax.scan(step, l, keys), skip, learners)
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["train/ready"] = ready.astype(jnp.float32)
    return learners, metrics


def make_offline_chunk_fn(agent: dreamer_train.Agent, model: DecisionTransformer,
                          hp: odt_learner_lib.ODTHParams, cfg: LoopConfig, mesh: Mesh) -> Callable:
    """Jitted ``state -> (state, metrics)``: K fused steps on the (dataset-seeded) replay, no acting.

    The ODT trains on real windows only here: imagination starts feeding it once the
    world model and actor have been pretrained on the dataset (the online phase).
    """
    batch_sharding = mesh_lib.data_sharding(mesh)
    cfg = dataclasses.replace(cfg, imagined_fraction=0.0)

    def chunk(state: LoopState):
        rng, k_upd = jax.random.split(jax.random.wrap_key_data(state.rng))
        (dl, ol, rl), metrics = _gated_updates(agent, model, hp, cfg, state.replay,
                                               (state.dreamer, state.odt, state.ret), k_upd,
                                               batch_sharding)
        return state.replace(dreamer=dl, odt=ol, ret=rl, rng=jax.random.key_data(rng)), metrics

    rep = mesh_lib.replicated(mesh)
    return jax.jit(chunk, in_shardings=(rep,), out_shardings=(rep, rep), donate_argnums=0)


def make_chunk_fn(agent: dreamer_train.Agent, model: DecisionTransformer,
                  hp: odt_learner_lib.ODTHParams, cfg: LoopConfig, env: Any, mesh: Mesh,
                  score_fn: Callable[[jax.Array], jax.Array]) -> Callable:
    """Jitted ``state -> (state, metrics)``: collect, add to replay, K gated fused steps."""
    policy_fn = make_collect_policy(agent, model, hp, cfg)
    batch_sharding = mesh_lib.data_sharding(mesh)

    def chunk(state: LoopState):
        rng, k_roll, k_upd = jax.random.split(jax.random.wrap_key_data(state.rng), 3)
        rollout_state, carry, tr = rollout_lib.rollout(
            env, policy_fn, collect_params(state), state.carry, state.rollout, k_roll, cfg.env_steps)
        replay = replay_lib.add_transitions(state.replay, tr)
        (dl, ol, rl), metrics = _gated_updates(agent, model, hp, cfg, replay,
                                               (state.dreamer, state.odt, state.ret), k_upd,
                                               batch_sharding)
        finished = tr.episode_mask.sum()
        mean_ret = jnp.sum(tr.episode_return * tr.episode_mask) / jnp.maximum(finished, 1.0)
        last_return = jnp.where(finished > 0, mean_ret, state.last_return)
        metrics.update({"explore/episode_return": last_return,
                        "explore/normalized_score": score_fn(last_return),
                        "explore/episodes": state.episodes + finished.astype(jnp.int32)})
        new_state = LoopState(
            dreamer=dl, odt=ol, ret=rl, replay=replay, rollout=rollout_state, carry=carry,
            rng=jax.random.key_data(rng), env_steps=state.env_steps + cfg.env_steps * cfg.num_envs,
            episodes=state.episodes + finished.astype(jnp.int32), last_return=last_return)
        return new_state, metrics

    rep = mesh_lib.replicated(mesh)
    return jax.jit(chunk, in_shardings=(rep,), out_shardings=(rep, rep), donate_argnums=0)


def init_state(agent: dreamer_train.Agent, model: DecisionTransformer,
               hp: odt_learner_lib.ODTHParams, cfg: LoopConfig, env: Any, replay_capacity: int,
               key: jax.Array, obs_mean: jax.Array, obs_std: jax.Array,
               replay: replay_lib.TrajectoryReplay | None = None) -> LoopState:
    """Fresh learners, reset envs, and an empty replay unless a (dataset-seeded) one is given."""
    k_dreamer, k_odt, k_env, k_rng = jax.random.split(key, 4)
    k_ret = jax.random.fold_in(k_dreamer, 1)  # keeps the other parts' keys as they were
    obs_dim, action_dim = env.obs_size, env.action_size
    return LoopState(
        dreamer=dreamer_train.init_learner(agent, k_dreamer),
        odt=odt_learner_lib.init_learner(model, hp, k_odt, obs_mean, obs_std),
        ret=make_return_head(agent, cfg).init(k_ret, agent.wm.feat_dim),
        replay=replay if replay is not None else replay_lib.init_replay(
            replay_capacity, cfg.max_ep_len, cfg.num_envs, obs_dim, action_dim),
        rollout=rollout_lib.reset(env, k_env, cfg.num_envs),
        carry=Carry(odt=odt_policy.initial_context(cfg.num_envs, hp.context_len, obs_dim, action_dim),
                    dreamer=dreamer_train.initial_policy_carry(agent, cfg.num_envs)),
        rng=jax.random.key_data(k_rng), env_steps=jnp.zeros((), jnp.int32),
        episodes=jnp.zeros((), jnp.int32), last_return=jnp.zeros((), jnp.float32))
