"""Env-steps/s of the on-device ``lax.scan`` rollout vs a host loop of jitted single steps.

python benchmarks/rollout_bench.py --env hopper --backend spring --num_envs 64 --num_steps 200
Both drive the same MLP policy with a context carry (an observation trace cleared at episode
starts); compile time is measured separately and excluded from the throughput.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from gdm_jax.envs import rollout as rl
from gdm_jax.envs.brax_envs import make_env


class MLPPolicy(nn.Module):
    """Two hidden layers over [obs, obs trace] -> tanh action mean."""
    hidden: int
    action_size: int

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(self.hidden)(x))
        x = nn.tanh(nn.Dense(self.hidden)(x))
        return jnp.tanh(nn.Dense(self.action_size)(x))


def make_policy_fn(model: MLPPolicy):
    """policy_fn with carry = decayed observation trace, reset where ``first``."""
    def policy_fn(params, trace_NxO, obs_NxO, prev_reward_N, first_N, key):
        trace_NxO = jnp.where(first_N[:, None], 0.0, 0.9 * trace_NxO) + obs_NxO
        mean = model.apply(params, jnp.concatenate([obs_NxO, trace_NxO], -1))
        noise = 0.1 * jax.random.normal(key, mean.shape)
        return jnp.clip(mean + noise, -1.0, 1.0), trace_NxO
    return policy_fn


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--backend", default="spring")
    parser.add_argument("--num_envs", type=int, default=64)
    parser.add_argument("--num_steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/rollout_bench.json")
    args = parser.parse_args()

    env = make_env(args.env, backend=args.backend)
    model = MLPPolicy(hidden=64, action_size=env.action_size)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2 * env.obs_size)))
    policy_fn = make_policy_fn(model)
    carry = jnp.zeros((args.num_envs, env.obs_size))
    state = jax.jit(rl.reset, static_argnums=(0, 2))(env, jax.random.PRNGKey(1), args.num_envs)
    key = jax.random.PRNGKey(2)

    scan_fn = jax.jit(functools.partial(rl.rollout, env, policy_fn), static_argnums=(4,))
    start = time.perf_counter()
    jax.block_until_ready(scan_fn(params, carry, state, key, args.num_steps))
    scan_compile_s = time.perf_counter() - start
    scan_s = _timed(lambda: scan_fn(params, carry, state, key, args.num_steps), args.repeats)

    step_fn = rl.make_jitted_step(env, policy_fn)
    start = time.perf_counter()
    jax.block_until_ready(step_fn(params, carry, state, key))
    step_compile_s = time.perf_counter() - start
    host_s = _timed(lambda: rl.host_loop_rollout(env, policy_fn, params, carry, state, key,
                                                 args.num_steps, jitted_step=step_fn),
                    args.repeats)

    env_steps = args.num_envs * args.num_steps
    result = {
        "env": args.env, "backend": args.backend, "num_envs": args.num_envs,
        "num_steps": args.num_steps, "device": str(jax.devices()[0]),
        "scan_env_steps_per_s": env_steps / scan_s, "host_env_steps_per_s": env_steps / host_s,
        "speedup": host_s / scan_s, "scan_seconds": scan_s, "host_seconds": host_s,
        "scan_compile_seconds": scan_compile_s, "step_compile_seconds": step_compile_s,
    }
    print(f"{'rollout':<12}{'env-steps/s':>14}{'seconds':>10}{'compile s':>11}")
    print(f"{'lax.scan':<12}{result['scan_env_steps_per_s']:>14.0f}{scan_s:>10.3f}"
          f"{scan_compile_s:>11.1f}")
    print(f"{'host loop':<12}{result['host_env_steps_per_s']:>14.0f}{host_s:>10.3f}"
          f"{step_compile_s:>11.1f}")
    print(f"speedup (host time / scan time): {result['speedup']:.2f}x")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
