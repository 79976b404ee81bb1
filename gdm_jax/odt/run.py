"""ODT experiment: validate the config, build model/data/envs, and hand the phases to the run loop."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.core import mesh as mesh_lib
from gdm_jax.core.runner import Experiment, Phase, run_experiment
from gdm_jax.data import replay as replay_lib
from gdm_jax.data.trajectory import trajectories_from_padded
from gdm_jax.envs import datasets as datasets_lib
from gdm_jax.envs import rollout as rollout_lib
from gdm_jax.envs.brax_envs import BACKENDS, ENV_NAMES, make_env
from gdm_jax.nn.attention import BACKENDS as ATTENTION_BACKENDS
from gdm_jax.nn.transformer import TransformerConfig
from gdm_jax.odt.learner import ODTHParams, auto_mesh, init_learner
from gdm_jax.odt.model import DecisionTransformer, ODTModelConfig
from gdm_jax.odt.policy import initial_context
from gdm_jax.odt.train import (ODTState, make_evaluate, make_offline_chunk, make_online_chunk)

_POSITIVE_INTS = ("env.episode_length", "model.embed_dim", "model.num_layers", "model.num_heads",
                  "model.max_context_len", "model.max_ep_len", "odt.context_len",
                  "odt.batch_size", "odt.offline_updates_per_chunk",
                  "odt.online_updates_per_chunk", "odt.num_envs", "odt.rollout_steps",
                  "odt.replay_capacity", "odt.replay_seed_trajectories", "odt.eval_envs",
                  "run.checkpoint_every", "run.keep_checkpoints")
_NON_NEGATIVE_INTS = ("odt.offline_updates", "odt.online_chunks", "odt.warmup_steps",
                      "run.eval_every")
_POSITIVE_FLOATS = ("odt.rtg_scale", "odt.learning_rate", "odt.grad_clip",
                    "odt.temperature_lr", "odt.init_temperature", "odt.eval_return_factor",
                    "odt.explore_return_factor")


def _get(config: Any, key: str) -> Any:
    node = config
    for part in key.split("."):
        if part not in node:
            raise ValueError(f"config is missing {key!r}")
        node = node[part]
    return node


def _fail(key: str, value: Any, why: str) -> None:
    raise ValueError(f"config.{key}={value!r}: {why}")


def validate(config: Any) -> None:
    """Check every value the ODT run uses, before anything is compiled; errors name the key."""
    for key in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, value, "must be an int")
        if value < (1 if key in _POSITIVE_INTS else 0):
            _fail(key, value, "must be >= 1" if key in _POSITIVE_INTS else "must be >= 0")
    for key in _POSITIVE_FLOATS:
        value = _get(config, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            _fail(key, value, "must be a positive number")
    if config.env.name not in ENV_NAMES:
        _fail("env.name", config.env.name, f"unknown env; choose from {ENV_NAMES}")
    if config.env.backend not in BACKENDS:
        _fail("env.backend", config.env.backend, f"unknown backend; choose from {BACKENDS}")
    if config.dataset not in datasets_lib.DATASET_NAMES:
        _fail("dataset", config.dataset, f"choose from {datasets_lib.DATASET_NAMES}")
    if config.model.attention_backend not in ATTENTION_BACKENDS:
        _fail("model.attention_backend", config.model.attention_backend,
              f"choose from {ATTENTION_BACKENDS}")
    if config.odt.context_len > config.model.max_context_len:
        _fail("odt.context_len", config.odt.context_len,
              f"exceeds the model's maximum model.max_context_len={config.model.max_context_len}")
    if config.model.embed_dim % config.model.num_heads:
        _fail("model.embed_dim", config.model.embed_dim,
              f"must be divisible by model.num_heads={config.model.num_heads}")
    if not 0.0 <= config.model.dropout_rate < 1.0:
        _fail("model.dropout_rate", config.model.dropout_rate, "must be in [0, 1)")
    if config.model.log_std_min >= config.model.log_std_max:
        _fail("model.log_std_min", config.model.log_std_min,
              f"must be < model.log_std_max={config.model.log_std_max}")
    if config.env.episode_length > config.model.max_ep_len:
        _fail("env.episode_length", config.env.episode_length,
              f"exceeds model.max_ep_len={config.model.max_ep_len} (timestep embedding size)")
    if config.odt.offline_updates % config.odt.offline_updates_per_chunk:
        _fail("odt.offline_updates", config.odt.offline_updates,
              f"must be a multiple of odt.offline_updates_per_chunk="
              f"{config.odt.offline_updates_per_chunk}")
    if config.odt.replay_capacity < config.odt.num_envs:
        _fail("odt.replay_capacity", config.odt.replay_capacity,
              f"must be >= odt.num_envs={config.odt.num_envs}")
    if config.odt.weight_decay < 0:
        _fail("odt.weight_decay", config.odt.weight_decay, "must be >= 0")
    if config.odt.target_entropy_per_dim >= math.log(2.0):
        _fail("odt.target_entropy_per_dim", config.odt.target_entropy_per_dim,
              "must be < log 2, the largest entropy per dim of any density on (-1, 1)")
    devices = mesh_lib.num_data_devices(config)  # raises naming mesh.data
    if config.odt.batch_size % devices:
        _fail("odt.batch_size", config.odt.batch_size,
              f"does not divide over the {devices} devices of mesh.data")


@dataclasses.dataclass(frozen=True)
class ODTSetup:
    """Everything built from the config: env, data, model, hyperparameters, mesh, targets."""
    env: Any
    model: DecisionTransformer
    hp: ODTHParams
    mesh: Any
    trajectories: list
    obs_mean: np.ndarray
    obs_std: np.ndarray
    max_len: int
    eval_return: float
    explore_return: float
    reference: tuple[float, float]  # (R_random, R_expert)


def load_offline(config: Any) -> list:
    """The offline dataset as trajectories, restricted to ``env.obs_mask`` dims if set."""
    root = config.dataset_root or None
    arrays = datasets_lib.load_dataset(config.env.name, config.env.backend, config.dataset, root)
    if tuple(config.env.obs_mask):
        arrays = dict(arrays, obs=arrays["obs"][..., list(config.env.obs_mask)])
    return trajectories_from_padded(arrays)


def model_and_hparams(config: Any, obs_dim: int,
                      action_dim: int) -> tuple[DecisionTransformer, ODTHParams]:
    """The network and the optimisation hyperparameters described by ``config``."""
    model = DecisionTransformer(ODTModelConfig(
        obs_dim=obs_dim, action_dim=action_dim,
        context_len=config.model.max_context_len, max_ep_len=config.model.max_ep_len,
        transformer=TransformerConfig(
            num_layers=config.model.num_layers, num_heads=config.model.num_heads,
            embed_dim=config.model.embed_dim, dropout_rate=config.model.dropout_rate,
            attention_backend=config.model.attention_backend),
        log_std_min=config.model.log_std_min, log_std_max=config.model.log_std_max))
    o = config.odt
    hp = ODTHParams(batch_size=o.batch_size, context_len=o.context_len, rtg_scale=o.rtg_scale,
                    target_entropy=o.target_entropy_per_dim * action_dim,
                    learning_rate=o.learning_rate, weight_decay=o.weight_decay,
                    warmup_steps=o.warmup_steps, grad_clip=o.grad_clip,
                    temperature_lr=o.temperature_lr, init_temperature=o.init_temperature)
    return model, hp


def setup(config: Any) -> ODTSetup:
    """Build env, dataset, model and hyperparameters (host side, no compiles)."""
    validate(config)
    obs_mask = tuple(config.env.obs_mask) or None
    env = make_env(config.env.name, config.env.backend, config.env.episode_length, obs_mask)
    trajs = load_offline(config)
    if trajs[0].obs.shape[-1] != env.obs_size:
        raise ValueError(f"dataset {config.dataset!r} has obs size {trajs[0].obs.shape[-1]} but "
                         f"env {config.env.name!r} observes {env.obs_size} dims")
    all_obs = np.concatenate([t.obs for t in trajs])
    best_return = max(t.episode_return for t in trajs)
    model, hp = model_and_hparams(config, env.obs_size, env.action_size)
    o = config.odt
    return ODTSetup(
        env=env, model=model, hp=hp, mesh=auto_mesh(mesh_lib.make_mesh(config)),
        trajectories=trajs,
        obs_mean=all_obs.mean(0), obs_std=all_obs.std(0) + 1e-6,
        max_len=max(config.env.episode_length, max(t.length for t in trajs)),
        eval_return=float(o.eval_return_factor * best_return),
        explore_return=float(o.explore_return_factor * best_return),
        reference=datasets_lib.reference_returns(config.env.name, config.env.backend,
                                                 config.dataset_root or None))


def score_fn_for(reference: tuple[float, float]):
    """Jittable normalised score 100 (R - R_random) / (R_expert - R_random)."""
    r_random, r_expert = reference
    return lambda returns: 100.0 * (returns - r_random) / (r_expert - r_random)


def build_experiment(config: Any, s: ODTSetup) -> Experiment:
    """The run loop's view of ODT: init_state, offline and online phases, evaluation."""
    o = config.odt
    rep = mesh_lib.replicated(s.mesh)
    env, model, hp = s.env, s.model, s.hp
    seeds = replay_lib.top_k_by_return(s.trajectories, min(o.replay_seed_trajectories,
                                                           len(s.trajectories)))
    offline_replay = jax.device_put(replay_lib.replay_from_trajectories(
        s.trajectories, len(s.trajectories), s.max_len, 1), rep)

    def init_state(key: jax.Array) -> ODTState:
        param_key, reset_key, rng = jax.random.split(key, 3)
        state = ODTState(
            learner=init_learner(model, hp, param_key, s.obs_mean, s.obs_std),
            rng=jax.random.key_data(rng),
            rollout=rollout_lib.reset(env, reset_key, o.num_envs),
            context=initial_context(o.num_envs, hp.context_len, env.obs_size, env.action_size),
            replay=replay_lib.replay_from_trajectories(seeds, o.replay_capacity, s.max_len,
                                                       o.num_envs),
            env_steps=jnp.zeros((), jnp.int32))
        # Copy: reset() may return one buffer under two leaves (obs, final_obs), and the
        # chunks donate the state, which forbids donating a buffer twice.
        return jax.device_put(jax.tree.map(jnp.copy, state), rep)

    score_fn = score_fn_for(s.reference)
    phases = []
    if o.offline_updates:
        offline = make_offline_chunk(model, hp, s.mesh, o.offline_updates_per_chunk)
        phases.append(Phase("offline", lambda state: offline(state, offline_replay),
                            num_chunks=o.offline_updates // o.offline_updates_per_chunk,
                            updates_per_chunk=o.offline_updates_per_chunk))
    if o.online_chunks:
        phases.append(Phase("online", make_online_chunk(
            model, hp, s.mesh, env, num_steps=o.rollout_steps,
            num_updates=o.online_updates_per_chunk, explore_return=s.explore_return,
            score_fn=score_fn), num_chunks=o.online_chunks,
            env_steps_per_chunk=o.num_envs * o.rollout_steps,
            updates_per_chunk=o.online_updates_per_chunk))
    evaluate_jit = make_evaluate(model, hp, s.mesh, env, num_envs=o.eval_envs,
                                 eval_return=s.eval_return, score_fn=score_fn)
    eval_key = jax.random.fold_in(jax.random.key(int(config.seed)), 7)

    def evaluate(state: ODTState) -> dict[str, float]:
        return {k: float(v) for k, v in jax.device_get(evaluate_jit(state.learner,
                                                                    eval_key)).items()}

    return Experiment(
        name=f"odt-{config.env.name}-{config.dataset}", init_state=init_state, phases=phases,
        evaluate=evaluate, plot_x="updates",
        plots={"score": ("eval/normalized_score", "explore/normalized_score"),
               "loss": ("offline/nll", "online/nll", "online/entropy", "online/temperature")})


def run(config: Any, workdir: str) -> dict:
    """Offline pretraining then online fine-tuning; returns the run loop's summary."""
    s = setup(config)
    summary = run_experiment(build_experiment(config, s), config, workdir)
    summary["targets"] = {"eval_return": s.eval_return, "explore_return": s.explore_return}
    return summary
