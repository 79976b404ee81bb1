"""The Dreamer agent as pure functions: fused train step and the collect + K-updates chunk."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from gdm_jax.core import mesh as mesh_lib
from gdm_jax.dreamer import actor_critic as ac_lib
from gdm_jax.dreamer import replay as replay_lib
from gdm_jax.dreamer import rssm
from gdm_jax.dreamer import world_model as wm_lib
from gdm_jax.envs import rollout as rollout_lib


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Learning rates and clipping of the three optimisers."""
    wm_lr: float = 1e-4
    actor_lr: float = 3e-5
    critic_lr: float = 3e-5
    wm_grad_clip: float = 1000.0
    ac_grad_clip: float = 100.0
    eps: float = 1e-8


class Agent:
    """World model, actor-critic and their optimisers; stateless (parameters live in state)."""

    def __init__(self, wm_cfg: wm_lib.WorldModelConfig, ac_cfg: ac_lib.ActorCriticConfig,
                 opt_cfg: OptimConfig):
        if wm_cfg.action_dim != ac_cfg.action_dim:
            raise ValueError(f"action_dim differs: world model {wm_cfg.action_dim}, actor {ac_cfg.action_dim}")
        self.wm = wm_lib.WorldModel(wm_cfg)
        self.ac = ac_lib.ActorCritic(ac_cfg)
        self.wm_opt = wm_lib.make_optimizer(opt_cfg.wm_lr, opt_cfg.wm_grad_clip, opt_cfg.eps)
        self.actor_opt = wm_lib.make_optimizer(opt_cfg.actor_lr, opt_cfg.ac_grad_clip, opt_cfg.eps)
        self.critic_opt = wm_lib.make_optimizer(opt_cfg.critic_lr, opt_cfg.ac_grad_clip, opt_cfg.eps)


@struct.dataclass
class LearnerState:
    """Everything the train step changes."""
    wm_params: dict
    wm_opt: optax.OptState
    ac: ac_lib.ActorCriticState


def init_learner(agent: Agent, key: jax.Array) -> LearnerState:
    """Fresh parameters and optimiser states."""
    k_wm, k_ac = jax.random.split(key)
    wm_params = agent.wm.init(k_wm)
    ac_params = agent.ac.init(k_ac, agent.wm.feat_dim)
    ac_state = ac_lib.ActorCriticState(
        params=ac_params, actor_opt=agent.actor_opt.init(ac_params["actor"]),
        critic_opt=agent.critic_opt.init(ac_params["critic"]), norm=ac_lib.ReturnNorm.create())
    return LearnerState(wm_params, agent.wm_opt.init(wm_params), ac_state)


def train_step(agent: Agent, learner: LearnerState, batch: Mapping[str, jax.Array], key: jax.Array
               ) -> tuple[LearnerState, dict]:
    """World-model update, then imagination from every replayed posterior and an actor-critic update."""
    wm_key, start_key, ac_key = jax.random.split(key, 3)
    wm_params, wm_opt, wm_metrics, posts = wm_lib.world_model_update(
        agent.wm, agent.wm_opt, learner.wm_params, learner.wm_opt, batch, wm_key)
    start = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), posts)  # [B*T, ...]
    num_starts = agent.ac.cfg.num_starts
    total = start.deter.shape[0]
    if 0 < num_starts < total:
        # Imagination dominates the step's cost; a random subset of starts keeps it affordable.
        idx = jax.random.choice(start_key, total, (num_starts,), replace=False)
        start = jax.tree.map(lambda x: x[idx], start)
    ac_state, _, ac_metrics = ac_lib.actor_critic_update(
        agent.ac, agent.actor_opt, agent.critic_opt, learner.ac, agent.wm, wm_params, start, ac_key)
    return LearnerState(wm_params, wm_opt, ac_state), {**wm_metrics, **ac_metrics}


@struct.dataclass
class PolicyCarry:
    """What the acting policy remembers between env steps."""
    state: rssm.RSSMState  # posterior of the last observation
    prev_action: jax.Array


def initial_policy_carry(agent: Agent, num_envs: int) -> PolicyCarry:
    return PolicyCarry(agent.wm.initial(num_envs),
                       jnp.zeros((num_envs, agent.wm.cfg.action_dim), jnp.float32))


def make_policy_fn(agent: Agent, explore: bool = True):
    """Rollout policy: filter the obs into the RSSM posterior, then act from its features."""
    def policy_fn(params, carry: PolicyCarry, obs, prev_reward, first, key):
        del prev_reward  # the world model predicts rewards itself
        obs_key, act_key = jax.random.split(key)
        post = agent.wm.obs_step(params["wm"], carry.state, carry.prev_action, obs, first, obs_key)
        feat = rssm.features(post)
        if explore:
            action = agent.ac.policy(params["actor"])(feat, act_key)
        else:
            action = agent.ac.mode(params["actor"], feat)
        return action, PolicyCarry(post, action)
    return policy_fn


@struct.dataclass
class DreamerState:
    """The whole train state the run loop checkpoints."""
    learner: LearnerState
    replay: replay_lib.SequenceReplay
    rollout: rollout_lib.RolloutState
    policy_carry: PolicyCarry
    rng: jax.Array
    last_return: jax.Array  # mean return of the most recently finished episodes
    last_length: jax.Array
    episodes: jax.Array     # finished episodes so far


@dataclasses.dataclass(frozen=True)
class ChunkConfig:
    """Shapes of one chunk; all static under jit."""
    num_envs: int
    env_steps: int     # per env, per chunk
    updates: int       # train steps per chunk
    batch_size: int
    seq_len: int
    replay_capacity: int  # per env


def init_state(agent: Agent, env: Any, chunk: ChunkConfig, key: jax.Array) -> DreamerState:
    """Fresh learner, empty replay, reset envs."""
    k_learn, k_env, k_rng = jax.random.split(key, 3)
    return DreamerState(
        learner=init_learner(agent, k_learn),
        replay=replay_lib.create(chunk.num_envs, chunk.replay_capacity, agent.wm.cfg.obs_dim,
                                 agent.wm.cfg.action_dim),
        rollout=rollout_lib.reset(env, k_env, chunk.num_envs),
        policy_carry=initial_policy_carry(agent, chunk.num_envs),
        rng=k_rng, last_return=jnp.zeros((), jnp.float32), last_length=jnp.zeros((), jnp.float32),
        episodes=jnp.zeros((), jnp.int32))


def state_shardings(state: DreamerState, mesh: Mesh) -> DreamerState:
    """Env-indexed leaves (envs, replay, policy carry) split over ``data``; the rest replicated."""
    rep, data = mesh_lib.replicated(mesh), mesh_lib.data_sharding(mesh)
    per_env = lambda tree: jax.tree.map(lambda _: data, tree)
    return DreamerState(
        learner=jax.tree.map(lambda _: rep, state.learner), replay=replay_lib.SequenceReplay(
            data=per_env(state.replay.data), cursor=rep, size=rep),
        rollout=per_env(state.rollout), policy_carry=per_env(state.policy_carry), rng=rep,
        last_return=rep, last_length=rep, episodes=rep)


def collect(agent: Agent, env: Any, state: DreamerState, num_steps: int, key: jax.Array
            ) -> tuple[DreamerState, dict]:
    """Act ``num_steps`` steps in every env with the current actor and append them to replay."""
    params = {"wm": state.learner.wm_params, "actor": state.learner.ac.params["actor"]}
    rollout_state, carry, trans = rollout_lib.rollout(
        env, make_policy_fn(agent), params, state.policy_carry, state.rollout, key, num_steps)
    finished = trans.episode_mask.sum()
    mean_ret = jnp.sum(trans.episode_return * trans.episode_mask) / jnp.maximum(finished, 1.0)
    mean_len = jnp.sum(trans.episode_length * trans.episode_mask) / jnp.maximum(finished, 1.0)
    # Chunks in which no episode ends keep the previous figure rather than reporting 0.
    last_return = jnp.where(finished > 0, mean_ret, state.last_return)
    last_length = jnp.where(finished > 0, mean_len, state.last_length)
    state = state.replace(replay=replay_lib.add(state.replay, trans), rollout=rollout_state,
                          policy_carry=carry, last_return=last_return, last_length=last_length,
                          episodes=state.episodes + finished.astype(jnp.int32))
    return state, {"train/episode_return": last_return, "train/episode_length": last_length,
                   "train/episodes": state.episodes, "train/step_reward": trans.reward.mean()}


def make_chunk_fn(agent: Agent, env: Any, chunk: ChunkConfig, mesh: Mesh, shardings: DreamerState):
    """Jitted ``state -> (state, metrics)``: collect, append, then K fused train steps in a scan."""
    batch_sharding = mesh_lib.data_sharding(mesh)

    def chunk_fn(state: DreamerState):
        rng, collect_key, train_key = jax.random.split(state.rng, 3)
        state, collect_metrics = collect(agent, env, state, chunk.env_steps, collect_key)

        def update(learner, key):
            sample_key, step_key = jax.random.split(key)
            batch = replay_lib.sample(state.replay, sample_key, chunk.batch_size, chunk.seq_len)
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
            return train_step(agent, learner, batch, step_key)

        learner, metrics = jax.lax.scan(update, state.learner,
                                        jax.random.split(train_key, chunk.updates))
        metrics = jax.tree.map(jnp.mean, metrics)
        return state.replace(learner=learner, rng=rng), {**metrics, **collect_metrics}

    return jax.jit(chunk_fn, in_shardings=(shardings,), out_shardings=(shardings, None),
                   donate_argnums=0)
