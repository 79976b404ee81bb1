"""The ``dreamer`` experiment: ``validate(config)`` and ``run(config, workdir)`` for the launcher."""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from gdm_jax.core import mesh as mesh_lib
from gdm_jax.core.checkpoint import Checkpointer
from gdm_jax.core.runner import Experiment, Phase, run_experiment
from gdm_jax.dreamer import actor_critic as ac_lib
from gdm_jax.dreamer import eval as eval_lib
from gdm_jax.dreamer import replay as replay_lib
from gdm_jax.dreamer import train as train_lib
from gdm_jax.dreamer import world_model as wm_lib

_POSITIVE_INTS = {
    "env": ("episode_length", "num_envs"), "replay": ("capacity",),
    "train": ("num_chunks", "env_steps", "updates", "batch_size", "seq_len"),
    "model": ("deter", "stoch", "classes", "hidden", "layers", "num_bins"),
    "actor_critic": ("hidden", "layers", "horizon"),
    "eval": ("context", "horizon", "batch_size"),
    "run": ("checkpoint_every", "keep_checkpoints", "eval_every"),
}
_POSITIVE_FLOATS = {
    "optim": ("wm_lr", "actor_lr", "critic_lr", "wm_grad_clip", "ac_grad_clip", "eps"),
    "actor_critic": ("min_std", "max_std"),
}
_UNIT_INTERVAL = {  # (0, 1]
    "actor_critic": ("gamma", "lam"),
}
_PROBABILITIES = {  # [0, 1)
    "model": ("unimix",), "actor_critic": ("slow_critic_decay", "return_norm_decay"),
}


def _get(config: Any, section: str, key: str):
    if section not in config or key not in config[section]:
        raise ValueError(f"config is missing {section}.{key}")
    return config[section][key]


def validate(config: Any) -> None:
    """Fail fast, naming the key, on bad values or shapes replay cannot provide."""
    from gdm_jax.envs.brax_envs import BACKENDS, ENV_NAMES

    if config.get("experiment") != "dreamer":
        raise ValueError(f"experiment={config.get('experiment')!r}, expected 'dreamer'")
    for section, keys in _POSITIVE_INTS.items():
        for key in keys:
            v = _get(config, section, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{section}.{key} must be a positive int, got {v!r}")
    for section, keys in _POSITIVE_FLOATS.items():
        for key in keys:
            v = _get(config, section, key)
            if not float(v) > 0:
                raise ValueError(f"{section}.{key} must be > 0, got {v!r}")
    for section, keys in _UNIT_INTERVAL.items():
        for key in keys:
            v = float(_get(config, section, key))
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{section}.{key} must be in (0, 1], got {v!r}")
    for section, keys in _PROBABILITIES.items():
        for key in keys:
            v = float(_get(config, section, key))
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{section}.{key} must be in [0, 1), got {v!r}")
    for section, key in (("model", "free_nats"), ("model", "dyn_scale"), ("model", "rep_scale"),
                         ("actor_critic", "entropy_coef")):
        if float(_get(config, section, key)) < 0:
            raise ValueError(f"{section}.{key} must be >= 0, got {_get(config, section, key)!r}")
    if config.actor_critic.min_std > config.actor_critic.max_std:
        raise ValueError(f"actor_critic.min_std={config.actor_critic.min_std} > "
                         f"actor_critic.max_std={config.actor_critic.max_std}")
    if config.actor_critic.actor_grad not in ac_lib.ACTOR_GRADS:
        raise ValueError(f"actor_critic.actor_grad={config.actor_critic.actor_grad!r}; "
                         f"choose from {ac_lib.ACTOR_GRADS}")
    if config.env.name not in ENV_NAMES:
        raise ValueError(f"env.name={config.env.name!r}; choose from {ENV_NAMES}")
    if config.env.backend not in BACKENDS:
        raise ValueError(f"env.backend={config.env.backend!r}; choose from {BACKENDS}")
    if config.model.num_bins < 2:
        raise ValueError(f"model.num_bins must be >= 2, got {config.model.num_bins}")

    # Shapes replay must be able to provide.
    capacity, per_chunk = config.replay.capacity, config.train.env_steps
    if per_chunk > capacity:
        raise ValueError(f"train.env_steps={per_chunk} per chunk exceeds replay.capacity={capacity}")
    if config.train.seq_len > per_chunk:
        raise ValueError(f"train.seq_len={config.train.seq_len} is longer than the {per_chunk} steps per env "
                         "that replay holds when training starts (train.env_steps)")
    first_eval = min(capacity, per_chunk * min(config.run.eval_every, config.train.num_chunks))
    needed = config.eval.context + config.eval.horizon
    if needed > first_eval:
        raise ValueError(f"eval.context + eval.horizon = {needed} is longer than the {first_eval} steps per env "
                         "replay holds at the first evaluation (replay.capacity, train.env_steps, run.eval_every)")
    if config.actor_critic.horizon > config.env.episode_length:
        raise ValueError(f"actor_critic.horizon={config.actor_critic.horizon} exceeds "
                         f"env.episode_length={config.env.episode_length}")
    if isinstance(config.actor_critic.num_starts, bool) or config.actor_critic.num_starts < 0:
        raise ValueError(f"actor_critic.num_starts must be >= 0 (0 = all), got {config.actor_critic.num_starts!r}")
    if config.mesh.data != -1 and config.mesh.data < 1:
        raise ValueError(f"mesh.data must be -1 (all devices) or >= 1, got {config.mesh.data}")


def make_auto_mesh(config: Any) -> jax.sharding.Mesh:
    """The ``data`` mesh with Auto axis types: Brax's scatters cannot resolve Explicit shardings."""
    n = mesh_lib.num_data_devices(config)
    return jax.make_mesh((n,), (mesh_lib.DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:n])


def build_agent(config: Any, obs_dim: int, action_dim: int) -> train_lib.Agent:
    """The agent's frozen hyperparameter dataclasses from the config."""
    m, a, o = config.model, config.actor_critic, config.optim
    wm_cfg = wm_lib.WorldModelConfig(
        obs_dim=obs_dim, action_dim=action_dim, deter=m.deter, stoch=m.stoch, classes=m.classes,
        hidden=m.hidden, layers=m.layers, num_bins=m.num_bins, unimix=m.unimix,
        free_nats=m.free_nats, dyn_scale=m.dyn_scale, rep_scale=m.rep_scale)
    ac_cfg = ac_lib.ActorCriticConfig(
        action_dim=action_dim, hidden=a.hidden, layers=a.layers, num_bins=m.num_bins,
        horizon=a.horizon, gamma=a.gamma, lam=a.lam, entropy_coef=a.entropy_coef,
        min_std=a.min_std, max_std=a.max_std, slow_critic_decay=a.slow_critic_decay,
        return_norm_decay=a.return_norm_decay, actor_grad=a.actor_grad, num_starts=a.num_starts)
    opt_cfg = train_lib.OptimConfig(wm_lr=o.wm_lr, actor_lr=o.actor_lr, critic_lr=o.critic_lr,
                                    wm_grad_clip=o.wm_grad_clip, ac_grad_clip=o.ac_grad_clip, eps=o.eps)
    return train_lib.Agent(wm_cfg, ac_cfg, opt_cfg)


def run(config: Any, workdir: str) -> dict:
    """Train Dreamer on a Brax env; writes metrics, checkpoints, curves and the open-loop plot."""
    from gdm_jax.envs.brax_envs import make_env

    validate(config)
    mesh = make_auto_mesh(config)
    mesh_lib.check_divisible("env.num_envs", config.env.num_envs, mesh)
    mesh_lib.check_divisible("train.batch_size", config.train.batch_size, mesh)
    mesh_lib.check_divisible("eval.batch_size", config.eval.batch_size, mesh)
    env = make_env(config.env.name, backend=config.env.backend, episode_length=config.env.episode_length)
    agent = build_agent(config, env.obs_size, env.action_size)
    chunk = train_lib.ChunkConfig(
        num_envs=config.env.num_envs, env_steps=config.train.env_steps, updates=config.train.updates,
        batch_size=config.train.batch_size, seq_len=config.train.seq_len,
        replay_capacity=config.replay.capacity)

    make_state = lambda key: train_lib.init_state(agent, env, chunk, key)
    shardings = train_lib.state_shardings(jax.eval_shape(make_state, jax.random.key(0)), mesh)
    init_fn = jax.jit(make_state, out_shardings=shardings)
    chunk_fn = train_lib.make_chunk_fn(agent, env, chunk, mesh, shardings)

    ctx, hor = config.eval.context, config.eval.horizon

    @jax.jit
    def open_loop(state: train_lib.DreamerState):
        sample_key, eval_key = jax.random.split(jax.random.fold_in(state.rng, 1))
        batch = replay_lib.sample(state.replay, sample_key, config.eval.batch_size, ctx + hor)
        return eval_lib.open_loop_error(agent.wm, state.learner.wm_params, batch, ctx, hor, eval_key)

    latest: dict[str, np.ndarray] = {}

    def evaluate(state: train_lib.DreamerState) -> dict[str, float]:
        errors = {k: np.asarray(v) for k, v in open_loop(state).items()}
        latest.update(errors)
        out = {f"open_loop/obs_mse_h{h}": float(errors["obs_mse"][h - 1])
               for h in sorted({1, max(1, hor // 2), hor})}
        out[f"open_loop/reward_abs_h{hor}"] = float(errors["reward_abs"][-1])
        out[f"open_loop/copy_obs_mse_h{hor}"] = float(errors["copy_obs_mse"][-1])
        return out

    env_steps = config.env.num_envs * config.train.env_steps
    experiment = Experiment(
        name="dreamer", init_state=init_fn,
        phases=[Phase("train", chunk_fn, config.train.num_chunks, env_steps_per_chunk=env_steps,
                      updates_per_chunk=config.train.updates)],
        evaluate=evaluate,
        plots={"return": ["train/episode_return"],
               "world_model": ["wm/loss", "wm/recon_loss", "wm/reward_loss", "wm/kl_dyn"],
               "actor_critic": ["actor/imag_return", "critic/value", "actor/entropy"]})
    summary = run_experiment(experiment, config, workdir)
    if latest and jax.process_index() == 0:
        os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
        eval_lib.plot_open_loop(latest, os.path.join(workdir, "plots", "open_loop.png"),
                                title=f"dreamer {config.env.name}: open-loop prediction error")
        with open(os.path.join(workdir, "open_loop.json"), "w") as f:
            json.dump({k: v.tolist() for k, v in latest.items()}, f, indent=1)
    return summary


def policy_return(agent: train_lib.Agent, env: Any, wm_params: dict, actor_params: dict,
                  key: jax.Array, num_envs: int, num_steps: int, explore: bool = False
                  ) -> dict[str, float]:
    """Mean return and length of the first episode of each of ``num_envs`` fresh envs."""
    from gdm_jax.envs import rollout as rollout_lib

    @jax.jit
    def go(key):
        reset_key, run_key = jax.random.split(key)
        state = rollout_lib.reset(env, reset_key, num_envs)
        _, _, trans = rollout_lib.rollout(
            env, train_lib.make_policy_fn(agent, explore=explore),
            {"wm": wm_params, "actor": actor_params}, train_lib.initial_policy_carry(agent, num_envs),
            state, run_key, num_steps)
        first_end = (jax.numpy.cumsum(trans.episode_mask, 0) == 1) & (trans.episode_mask > 0)
        done = first_end.any(0)
        ret = jax.numpy.sum(trans.episode_return * first_end, 0)
        length = jax.numpy.sum(trans.episode_length * first_end, 0)
        return ret, length, done

    ret, length, done = (np.asarray(x) for x in go(key))
    return {"return_mean": float(ret[done].mean()) if done.any() else float("nan"),
            "return_std": float(ret[done].std()) if done.any() else float("nan"),
            "length_mean": float(length[done].mean()) if done.any() else float("nan"),
            "episodes": int(done.sum())}


def evaluate_checkpoint(config: Any, workdir: str, num_batches: int = 4, num_envs: int = 8,
                        step: int | None = None) -> dict:
    """Restore a run's checkpoint; write open-loop errors (plot + JSON) and deterministic-policy returns."""
    from gdm_jax.envs.brax_envs import make_env

    validate(config)
    env = make_env(config.env.name, backend=config.env.backend, episode_length=config.env.episode_length)
    agent = build_agent(config, env.obs_size, env.action_size)
    chunk = train_lib.ChunkConfig(
        num_envs=config.env.num_envs, env_steps=config.train.env_steps, updates=config.train.updates,
        batch_size=config.train.batch_size, seq_len=config.train.seq_len,
        replay_capacity=config.replay.capacity)
    template = jax.jit(lambda k: train_lib.init_state(agent, env, chunk, k))(jax.random.key(0))
    ckpt = Checkpointer(workdir, keep=int(config.run.keep_checkpoints))
    state, meta = ckpt.restore(template, step)
    ckpt.close()
    ctx, hor = config.eval.context, config.eval.horizon

    @jax.jit
    def open_loop(key):
        sample_key, eval_key = jax.random.split(key)
        batch = replay_lib.sample(state.replay, sample_key, config.eval.batch_size, ctx + hor)
        return eval_lib.open_loop_error(agent.wm, state.learner.wm_params, batch, ctx, hor, eval_key)

    runs = [open_loop(k) for k in jax.random.split(jax.random.key(123), num_batches)]
    weights = np.stack([np.asarray(r["valid_fraction"]) for r in runs])  # [num_batches, H]
    errors = {k: np.sum(np.stack([np.asarray(r[k]) for r in runs]) * weights, 0) / np.maximum(weights.sum(0), 1e-9)
              for k in ("obs_mse", "reward_abs", "copy_obs_mse")}
    errors["windows"] = weights.sum(0) * config.eval.batch_size
    plots = os.path.join(workdir, "plots")
    os.makedirs(plots, exist_ok=True)
    eval_lib.plot_open_loop(errors, os.path.join(plots, "open_loop.png"),
                            title=f"dreamer {config.env.name}: open-loop prediction error "
                                  f"(context {ctx}, chunk {meta.get('chunk')})")
    returns = {mode: policy_return(agent, env, state.learner.wm_params, state.learner.ac.params["actor"],
                                   jax.random.key(7), num_envs, config.env.episode_length, explore)
               for mode, explore in (("mean_action", False), ("sampled_action", True))}
    out = {"chunk": meta.get("chunk"), "step": meta.get("step"),
           "open_loop": {k: v.tolist() for k, v in errors.items()}, "policy": returns}
    with open(os.path.join(workdir, "evaluation.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out
