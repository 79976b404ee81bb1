"""The ``dreamer_odt`` experiment: ``validate(config)`` and ``run(config, workdir)`` for the launcher."""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.core import mesh as mesh_lib
from gdm_jax.core.runner import Experiment, Phase, run_experiment
from gdm_jax.data import replay as replay_lib
from gdm_jax.dreamer import eval as dreamer_eval
from gdm_jax.dreamer import run as dreamer_run
from gdm_jax.dreamer import train as dreamer_train
from gdm_jax.dreamer_odt import train as loop_lib
from gdm_jax.envs import rollout as rollout_lib
from gdm_jax.odt import run as odt_run
from gdm_jax.odt.learner import ODTHParams
from gdm_jax.odt.model import DecisionTransformer, ODTModelConfig
from gdm_jax.odt.train import make_evaluate as make_odt_evaluate
from gdm_jax.nn.transformer import TransformerConfig


def _fail(key: str, value: Any, why: str) -> None:
    raise ValueError(f"{key}={value!r} {why}")


def validate(config: Any, num_devices: int | None = None) -> None:
    """Fail before any compile, naming the key, on values the loop cannot run with.

    ``num_devices`` overrides the local device count (AOT compilation for a TPU pod).
    """
    from gdm_jax.envs.brax_envs import BACKENDS, ENV_NAMES

    if config.get("experiment") != "dreamer_odt":
        _fail("experiment", config.get("experiment"), "is not 'dreamer_odt'")
    if config.env.name not in ENV_NAMES:
        _fail("env.name", config.env.name, f"is not a known environment; choose from {ENV_NAMES}")
    if config.env.backend not in BACKENDS:
        _fail("env.backend", config.env.backend, f"is not a Brax backend; choose from {BACKENDS}")
    lp = config.loop
    for key in ("num_envs", "env_steps", "updates", "num_chunks", "wm_batch_size", "wm_seq_len",
                "num_starts", "odt_batch_size"):
        v = lp[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            _fail(f"loop.{key}", v, "must be a positive int")
    if not 0.0 <= float(lp.imagined_fraction) <= 1.0:
        _fail("loop.imagined_fraction", lp.imagined_fraction, "must be in [0, 1]")
    if lp.rtg_bootstrap not in loop_lib.RTG_BOOTSTRAPS:
        _fail("loop.rtg_bootstrap", lp.rtg_bootstrap, f"must be one of {loop_lib.RTG_BOOTSTRAPS}")
    if lp.collector not in loop_lib.COLLECTORS:
        _fail("loop.collector", lp.collector, f"must be one of {loop_lib.COLLECTORS}")
    if lp.collector == "mix" and not 0 < lp.odt_envs < lp.num_envs:
        _fail("loop.odt_envs", lp.odt_envs, f"must be in 1..loop.num_envs-1={lp.num_envs - 1} for collector 'mix'")
    horizon, ctx = config.actor_critic.horizon, config.odt.context_len
    if lp.wm_seq_len > config.env.episode_length:
        _fail("loop.wm_seq_len", lp.wm_seq_len, f"is longer than env.episode_length={config.env.episode_length}")
    if horizon > lp.wm_seq_len:
        _fail("actor_critic.horizon", horizon, f"(imagination) is longer than the replayed sequences (loop.wm_seq_len={lp.wm_seq_len})")
    if ctx > lp.wm_seq_len:
        _fail("odt.context_len", ctx, f"is longer than the replayed sequences (loop.wm_seq_len={lp.wm_seq_len})")
    if lp.imagined_fraction > 0 and ctx > horizon:
        _fail("odt.context_len", ctx, f"is longer than the imagination horizon (actor_critic.horizon={horizon}) it trains on")
    if ctx > config.odt_model.max_context_len:
        _fail("odt.context_len", ctx, f"exceeds the model's maximum odt_model.max_context_len={config.odt_model.max_context_len}")
    if lp.num_starts > lp.wm_batch_size * lp.wm_seq_len:
        _fail("loop.num_starts", lp.num_starts, f"exceeds loop.wm_batch_size*loop.wm_seq_len={lp.wm_batch_size * lp.wm_seq_len}")
    n_img = int(round(lp.imagined_fraction * lp.odt_batch_size))
    if n_img > lp.num_starts:
        _fail("loop.imagined_fraction", lp.imagined_fraction, f"asks for {n_img} imagined windows but only loop.num_starts={lp.num_starts} are imagined")
    if config.replay.capacity < lp.num_envs:
        _fail("replay.capacity", config.replay.capacity, f"must be >= loop.num_envs={lp.num_envs}")
    if config.offline.chunks < 0 or (config.offline.chunks and not config.offline.dataset):
        _fail("offline.chunks", config.offline.chunks, "must be >= 0, and needs offline.dataset when > 0")
    if config.eval.context + config.eval.horizon > config.env.episode_length:
        _fail("eval.context", config.eval.context, "plus eval.horizon exceeds env.episode_length")
    devices = num_devices or mesh_lib.num_data_devices(config)
    for key in ("wm_batch_size", "odt_batch_size"):
        if lp[key] % devices:
            _fail(f"loop.{key}", lp[key], f"does not divide over the {devices} devices of mesh.data")


def build(config: Any, num_devices: int | None = None):
    """Env, agents and hyperparameters from the config (host side, no compiles)."""
    from gdm_jax.envs import datasets as datasets_lib
    from gdm_jax.envs.brax_envs import make_env

    validate(config, num_devices)
    obs_mask = tuple(config.env.obs_mask) or None
    env = make_env(config.env.name, config.env.backend, config.env.episode_length, obs_mask)
    agent = dreamer_run.build_agent(config, env.obs_size, env.action_size)
    m = config.odt_model
    model = DecisionTransformer(ODTModelConfig(
        obs_dim=env.obs_size, action_dim=env.action_size, context_len=m.max_context_len,
        max_ep_len=config.env.episode_length,
        transformer=TransformerConfig(num_layers=m.num_layers, num_heads=m.num_heads,
                                      embed_dim=m.embed_dim, dropout_rate=m.dropout_rate,
                                      attention_backend=m.attention_backend)))
    o = config.odt
    hp = ODTHParams(batch_size=config.loop.odt_batch_size, context_len=o.context_len,
                    rtg_scale=o.rtg_scale, target_entropy=o.target_entropy_per_dim * env.action_size,
                    learning_rate=o.learning_rate, weight_decay=o.weight_decay,
                    warmup_steps=o.warmup_steps, grad_clip=o.grad_clip,
                    temperature_lr=o.temperature_lr, init_temperature=o.init_temperature)
    reference = datasets_lib.reference_returns(config.env.name, config.env.backend)
    lp = config.loop
    cfg = loop_lib.LoopConfig(
        num_envs=lp.num_envs, env_steps=lp.env_steps, updates=lp.updates,
        wm_batch_size=lp.wm_batch_size, wm_seq_len=lp.wm_seq_len, num_starts=lp.num_starts,
        odt_batch_size=lp.odt_batch_size, imagined_fraction=float(lp.imagined_fraction),
        collector=lp.collector, odt_envs=lp.odt_envs,
        explore_return=float(o.explore_return_factor * reference[1]),
        max_ep_len=config.env.episode_length, rtg_bootstrap=lp.rtg_bootstrap,
        return_head_lr=float(config.optim.wm_lr))
    return env, agent, model, hp, cfg, reference


def load_offline(config: Any) -> list:
    """The ``offline.dataset`` trajectories (restricted to ``env.obs_mask``), or [] for none."""
    from gdm_jax.data.trajectory import make_trajectory, trajectories_from_padded
    from gdm_jax.envs import datasets as datasets_lib

    if not config.offline.dataset:
        return []
    arrays = datasets_lib.load_dataset(config.env.name, config.env.backend, config.offline.dataset)
    if tuple(config.env.obs_mask):
        arrays = dict(arrays, obs=arrays["obs"][..., list(config.env.obs_mask)])
    L = config.env.episode_length  # the replay's row length: longer episodes are cut there
    return [make_trajectory(t.obs[:L], t.action[:L], t.reward[:L], t.terminated[:L])
            for t in trajectories_from_padded(arrays)]


def make_dreamer_evaluate(agent: dreamer_train.Agent, env: Any, num_envs: int, score_fn, mesh):
    """Jitted ``(dreamer learner, key) -> metrics``: the actor's mean action, first episode per env."""
    policy_fn = dreamer_train.make_policy_fn(agent, explore=False)

    def evaluate(learner: dreamer_train.LearnerState, key: jax.Array) -> dict:
        reset_key, rollout_key = jax.random.split(key)
        start = rollout_lib.reset(env, reset_key, num_envs)
        params = {"wm": learner.wm_params, "actor": learner.ac.params["actor"]}
        _, _, tr = rollout_lib.rollout(env, policy_fn, params,
                                       dreamer_train.initial_policy_carry(agent, num_envs), start,
                                       rollout_key, env.episode_length)
        returns, _ = rollout_lib.first_episode_stats(tr)
        return {"episode_return": returns.mean(), "normalized_score": score_fn(returns.mean())}

    rep = mesh_lib.replicated(mesh)
    return jax.jit(evaluate, in_shardings=(rep, rep), out_shardings=rep)


def build_experiment(config: Any) -> tuple[Experiment, dict]:
    """The run loop's view of the loop; the dict collects the latest open-loop errors."""
    env, agent, model, hp, cfg, reference = build(config)
    mesh = mesh_lib.make_mesh(config)
    score_fn = odt_run.score_fn_for(reference)
    rep = mesh_lib.replicated(mesh)
    obs_dim = env.obs_size
    trajs = load_offline(config)
    if trajs:  # ODT sees standardised observations, as in the offline ODT
        all_obs = np.concatenate([t.obs for t in trajs])
        obs_mean, obs_std = all_obs.mean(0), all_obs.std(0) + 1e-6
    else:
        obs_mean, obs_std = np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32)

    def init_state(key: jax.Array) -> loop_lib.LoopState:
        seeded = replay_lib.replay_from_trajectories(
            trajs, config.replay.capacity, config.env.episode_length, cfg.num_envs) if trajs else None
        state = loop_lib.init_state(agent, model, hp, cfg, env, config.replay.capacity, key,
                                    obs_mean, obs_std, seeded)
        # Copies: reset() may alias one buffer under two leaves, and chunks donate the state.
        return jax.device_put(jax.tree.map(jnp.copy, state), rep)

    chunk_fn = loop_lib.make_chunk_fn(agent, model, hp, cfg, env, mesh, score_fn)
    e = config.eval
    odt_eval = make_odt_evaluate(model, hp, mesh, env, num_envs=e.num_envs,
                                 eval_return=float(config.odt.eval_return_factor * reference[1]),
                                 score_fn=score_fn)
    dreamer_eval_fn = make_dreamer_evaluate(agent, env, e.num_envs, score_fn, mesh)

    @jax.jit
    def open_loop(state: loop_lib.LoopState, key: jax.Array):
        k_seq, k_eval = jax.random.split(key)
        seq = replay_lib.sample_sequences(state.replay, k_seq, e.batch_size, e.context + e.horizon)
        errors = dreamer_eval.open_loop_error(agent.wm, state.dreamer.wm_params, seq, e.context,
                                              e.horizon, k_eval)
        return errors, seq["mask"].min()

    latest: dict[str, np.ndarray] = {}
    eval_key = jax.random.fold_in(jax.random.key(int(config.seed)), 7)

    def evaluate(state: loop_lib.LoopState) -> dict[str, float]:
        out = {f"odt_{k}": float(v) for k, v in jax.device_get(odt_eval(state.odt, eval_key)).items()}
        out.update({f"dreamer_{k}": float(v) for k, v in
                    jax.device_get(dreamer_eval_fn(state.dreamer, eval_key)).items()})
        errors, valid = jax.device_get(open_loop(state, eval_key))
        if valid > 0:  # replay holds sequences long enough to compare against
            latest.clear()
            latest.update({k: np.asarray(v) for k, v in errors.items()})
            out[f"open_loop_obs_mse_h{e.horizon}"] = float(errors["obs_mse"][-1])
            out[f"open_loop_copy_obs_mse_h{e.horizon}"] = float(errors["copy_obs_mse"][-1])
        return out

    lp = config.loop
    experiment = Experiment(
        name=f"dreamer_odt-{config.env.name}", init_state=init_state,
        phases=([Phase("offline", loop_lib.make_offline_chunk_fn(agent, model, hp, cfg, mesh),
                       config.offline.chunks, updates_per_chunk=lp.updates)]
                if config.offline.chunks else [])
        + [Phase("online", chunk_fn, lp.num_chunks, env_steps_per_chunk=lp.num_envs * lp.env_steps,
                 updates_per_chunk=lp.updates)],
        evaluate=evaluate,
        plots={"score": ("eval/odt_normalized_score", "eval/dreamer_normalized_score",
                         "explore/normalized_score"),
               "losses": ("wm/loss", "odt/nll", "critic/loss", "actor/imag_return"),
               "world_model": ("wm/recon_loss", "wm/reward_loss", "wm/kl_dyn",
                               f"eval/open_loop_obs_mse_h{e.horizon}")})
    return experiment, latest


def run(config: Any, workdir: str) -> dict:
    """Train the world model, the Dreamer actor-critic and the ODT together on Brax."""
    experiment, latest = build_experiment(config)
    summary = run_experiment(experiment, config, workdir)
    if latest and jax.process_index() == 0:
        dreamer_eval.plot_open_loop(latest, os.path.join(workdir, "plots", "open_loop.png"),
                                    title=f"dreamer_odt {config.env.name}: open-loop prediction error")
        with open(os.path.join(workdir, "open_loop.json"), "w") as f:
            json.dump({k: v.tolist() for k, v in latest.items()}, f, indent=1)
    return summary
