"""ODT throughput: gradient updates/s of the jitted chunk and env-steps/s of the ODT-policy rollout.

``python -m gdm_jax.odt.bench --preset=cpu --env=hopper`` prints a table and writes
``results/odt/bench.json``. Needs no dataset: the replay is filled with random-policy-shaped
synthetic trajectories, which cost the same as real ones.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.odt import get_config
from gdm_jax.core import mesh as mesh_lib
from gdm_jax.data import replay as replay_lib
from gdm_jax.data.trajectory import make_trajectory
from gdm_jax.envs import rollout as rollout_lib
from gdm_jax.envs.brax_envs import make_env
from gdm_jax.odt.learner import auto_mesh, init_learner, policy_params
from gdm_jax.odt.policy import initial_context, make_policy_fn
from gdm_jax.odt.run import model_and_hparams
from gdm_jax.odt.train import ODTState, make_offline_chunk


def _timed(fn, *args, repeats: int) -> tuple[float, float, object]:
    """(compile+first call seconds, best steady-state seconds, last output)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return first, best, out


def bench(preset: str, env_name: str, num_updates: int, rollout_steps: int,
          repeats: int) -> dict:
    """Measure updates/s and rollout env-steps/s for ``configs/odt.py:<preset>`` on ``env_name``."""
    config = get_config(preset)
    config.env.name = env_name
    env = make_env(env_name, config.env.backend, config.env.episode_length)
    model, hp = model_and_hparams(config, env.obs_size, env.action_size)
    mesh = auto_mesh(mesh_lib.make_mesh(config))
    rng = np.random.default_rng(0)
    trajs = [make_trajectory(rng.normal(size=(n, env.obs_size)),
                             rng.uniform(-1, 1, size=(n, env.action_size)), rng.uniform(size=n))
             for n in rng.integers(hp.context_len, config.env.episode_length + 1, size=32)]
    replay = replay_lib.replay_from_trajectories(trajs, len(trajs), config.env.episode_length, 1)
    num_envs = config.odt.num_envs
    learner = init_learner(model, hp, jax.random.key(0), jnp.zeros(env.obs_size),
                           jnp.ones(env.obs_size))
    state = ODTState(learner=learner, rng=jax.random.key_data(jax.random.key(1)),
                     rollout=rollout_lib.reset(env, jax.random.key(2), num_envs),
                     context=initial_context(num_envs, hp.context_len, env.obs_size,
                                             env.action_size),
                     replay=replay, env_steps=jnp.zeros((), jnp.int32))
    state = jax.tree.map(jnp.copy, state)
    offline = make_offline_chunk(model, hp, mesh, num_updates)
    # The chunk donates its state; feed each call the previous output.
    holder = {"state": state}

    def run_chunk():
        holder["state"], metrics = offline(holder["state"], replay)
        return metrics

    update_first, update_best, _ = _timed(run_chunk, repeats=repeats)
    explore_fn = make_policy_fn(model, rtg_scale=hp.rtg_scale, target_return=1000.0,
                                stochastic=True)
    roll = jax.jit(lambda params, ctx, rs, key: rollout_lib.rollout(
        env, explore_fn, params, ctx, rs, key, rollout_steps))
    s = holder["state"]
    roll_first, roll_best, _ = _timed(roll, policy_params(s.learner), s.context, s.rollout,
                                      jax.random.key(3), repeats=repeats)
    return {
        "preset": preset or "default", "env": env_name, "backend": config.env.backend,
        "device": str(jax.devices()[0].device_kind), "num_devices": int(mesh.size),
        "host": platform.machine(), "cpu_count": os.cpu_count(),
        "batch_size": hp.batch_size, "context_len": hp.context_len,
        "embed_dim": config.model.embed_dim, "num_layers": config.model.num_layers,
        "updates_per_chunk": num_updates, "updates_per_s": num_updates / update_best,
        "update_chunk_compile_s": update_first - update_best,
        "num_envs": num_envs, "rollout_steps": rollout_steps,
        "env_steps_per_s": num_envs * rollout_steps / roll_best,
        "rollout_compile_s": roll_first - roll_best,
    }


def main(argv: list[str] | None = None) -> None:
    """CLI entry: run the benchmark, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--rollout_steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join("results", "odt", "bench.json"))
    args = parser.parse_args(argv)
    result = bench(args.preset, args.env, args.updates, args.rollout_steps, args.repeats)
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
