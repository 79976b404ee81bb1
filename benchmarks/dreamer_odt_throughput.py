"""Throughput of the flagship's fused chunk and the share of time in each of its parts.

    python benchmarks/dreamer_odt_throughput.py --preset=cpu --out=results/dreamer_odt/throughput.json

Times, with compile excluded and each part jitted on its own: collection (the mixed
ODT/Dreamer policy acting in Brax), the world-model update, imagination, the
actor-critic update (its own imagination excluded), and the ODT update; then the whole
chunk (collection + K fused steps) as one program. Shares are of the sum of parts.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp

from gdm_jax.core import config_utils
from gdm_jax.data import replay as replay_lib
from gdm_jax.dreamer import actor_critic as ac_lib
from gdm_jax.dreamer import rssm
from gdm_jax.dreamer import world_model as wm_lib
from gdm_jax.dreamer_odt import run as run_lib
from gdm_jax.dreamer_odt import train as loop_lib
from gdm_jax.envs import rollout as rollout_lib
from gdm_jax.odt import learner as odt_learner
from gdm_jax.odt.run import score_fn_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timeit(fn, *args, repeats: int) -> float:
    """Median seconds of ``fn(*args)`` after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "dreamer_odt", "throughput.json"))
    args = p.parse_args()
    config = config_utils.load_config(f"configs/dreamer_odt.py:{args.preset}", ROOT)
    config.mesh.data = 1
    experiment, _ = run_lib.build_experiment(config)
    env, agent, model, hp, cfg, reference = run_lib.build(config)
    state = experiment.init_state(jax.random.key(0))  # replay seeded with offline.dataset
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    key = jax.random.key(1)
    replay, dl, ol = state.replay, state.dreamer, state.odt

    policy_fn = loop_lib.make_collect_policy(agent, model, hp, cfg)
    collect = jax.jit(lambda s, k: rollout_lib.rollout(env, policy_fn, loop_lib.collect_params(s),
                                                       s.carry, s.rollout, k, cfg.env_steps)[2].reward)
    seq = replay_lib.sample_sequences(replay, key, cfg.wm_batch_size, cfg.wm_seq_len)
    wm_update = jax.jit(lambda p, o, b, k: wm_lib.world_model_update(agent.wm, agent.wm_opt, p, o, b, k)[0])
    posts = wm_lib.world_model_loss(agent.wm, dl.wm_params, seq, key)[1][1]
    starts = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:])[:cfg.num_starts], posts)
    imagine = jax.jit(lambda p, a, s, k: wm_lib.imagine_rollout(
        agent.wm, p, s, agent.ac.policy(a["actor"]), agent.ac.cfg.horizon, k).obs)
    ac_update = jax.jit(lambda st, p, s, k: ac_lib.actor_critic_update(
        agent.ac, agent.actor_opt, agent.critic_opt, st, agent.wm, p, s, k)[0])
    ret_head = loop_lib.make_return_head(agent, cfg)
    feats = rssm.features(posts)
    ret_update = jax.jit(lambda st, f, b: ret_head.update(st, f, b["timestep"], b["rtg"], b["mask"])[0])
    windows = replay_lib.sample_windows(replay, key, cfg.odt_batch_size, hp.context_len)
    batch = {k: windows[k] for k in loop_lib.ODT_KEYS}
    odt_update = jax.jit(lambda l, b, k: odt_learner.update_step(model, hp, l, b, k)[0])

    parts = {
        "collection": timeit(collect, state, key, repeats=args.repeats),
        "world_model": timeit(wm_update, dl.wm_params, dl.wm_opt, seq, key, repeats=args.repeats),
        "imagination": timeit(imagine, dl.wm_params, dl.ac.params, starts, key, repeats=args.repeats),
        "actor_critic+imagination": timeit(ac_update, dl.ac, dl.wm_params, starts, key, repeats=args.repeats),
        "odt": timeit(odt_update, ol, batch, key, repeats=args.repeats),
        "return_head": timeit(ret_update, state.ret, feats, seq, repeats=args.repeats),
    }
    parts["actor_critic"] = max(parts["actor_critic+imagination"] - parts["imagination"], 0.0)
    per_update = {k: parts[k] for k in ("world_model", "return_head", "imagination", "actor_critic", "odt")}
    chunk_parts = {"collection": parts["collection"], **{k: v * cfg.updates for k, v in per_update.items()}}
    total = sum(chunk_parts.values())

    chunk_fn = loop_lib.make_chunk_fn(agent, model, hp, cfg, env, mesh, score_fn_for(reference))
    chunk_state = jax.tree.map(jnp.copy, state)
    chunk_state, _ = chunk_fn(chunk_state)  # compile
    jax.block_until_ready(chunk_state)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        chunk_state, m = chunk_fn(chunk_state)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    chunk_s = statistics.median(times)
    env_steps = cfg.num_envs * cfg.env_steps
    result = {
        "preset": args.preset, "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(), "env_steps_per_chunk": env_steps, "updates_per_chunk": cfg.updates,
        "chunk_seconds": chunk_s, "env_steps_per_second": env_steps / chunk_s,
        "updates_per_second": cfg.updates / chunk_s,
        "part_seconds_per_call": parts,
        "share_of_chunk": {k: v / total for k, v in chunk_parts.items()},
        "sum_of_parts_seconds": total,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"chunk: {chunk_s:.3f} s = {env_steps} env steps + {cfg.updates} fused updates -> "
          f"{env_steps / chunk_s:,.0f} env-steps/s, {cfg.updates / chunk_s:.1f} updates/s")
    print(f"{'part':<14}{'s/call':>10}{'share':>9}")
    for k, v in chunk_parts.items():
        per_call = parts[k]
        print(f"{k:<14}{per_call:>10.4f}{v / total:>9.1%}")
    print(f"(sum of parts {total:.3f} s vs fused chunk {chunk_s:.3f} s)")


if __name__ == "__main__":
    main()
