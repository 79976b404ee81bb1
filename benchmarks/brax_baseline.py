"""Brax's own SAC at a fixed env-step budget, scored like the gdm_jax runs (a baseline, not a test).

python benchmarks/brax_baseline.py --env hopper --env_steps 32768 --seed 0 --workdir runs/sac-hopper-0
Writes ``metrics.jsonl`` (one ``eval/...`` line per evaluation, ``step`` = env steps) and
``summary.json`` in the workdir, in the layout of ``gdm_jax.core.runner``. Evaluation uses
deterministic (mean) actions, like the ODT and Dreamer evaluations.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script

# Standard SAC settings (Haarnoja et al. 2018), shared by every env and never tuned per task.
SAC_DEFAULTS = dict(learning_rate=3e-4, discounting=0.99, batch_size=256, tau=0.005,
                    reward_scaling=1.0, normalize_observations=True)


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """One baseline run: env, budget and how often it is evaluated."""
    env_name: str
    backend: str = "spring"
    episode_length: int = 1000
    env_steps: int = 32768
    num_evals: int = 9  # including the evaluation at step 0
    num_envs: int = 8
    num_eval_envs: int = 8
    updates_per_env_step: float = 0.5  # Brax's published SAC configs: grad_updates_per_step = num_envs / 2
    min_replay_size: int = 1024
    seed: int = 0


def validate(spec: BaselineSpec) -> None:
    """Clear errors, naming the field, before anything compiles."""
    from gdm_jax.envs.brax_envs import BACKENDS, ENV_NAMES

    if spec.env_name not in ENV_NAMES:
        raise ValueError(f"env_name={spec.env_name!r} is not a known environment; choose from {ENV_NAMES}")
    if spec.backend not in BACKENDS:
        raise ValueError(f"backend={spec.backend!r} is not a Brax backend; choose from {BACKENDS}")
    for key in ("episode_length", "env_steps", "num_envs", "num_eval_envs", "seed"):
        v = getattr(spec, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "seed" else 1):
            raise ValueError(f"{key}={v!r} must be a positive int")
    if spec.num_evals < 2:
        raise ValueError(f"num_evals={spec.num_evals!r} must be >= 2 (step 0 plus at least one more)")
    if not spec.updates_per_env_step > 0:
        raise ValueError(f"updates_per_env_step={spec.updates_per_env_step!r} must be > 0")
    if not 0 <= spec.min_replay_size < spec.env_steps:
        raise ValueError(f"min_replay_size={spec.min_replay_size!r} must be in [0, env_steps={spec.env_steps})")


def score_or_none(env_name: str, backend: str, episode_return: float) -> float | None:
    """Normalised score, or None when the env has no reference returns yet."""
    from gdm_jax.envs import datasets

    try:
        return datasets.normalized_score(env_name, backend, episode_return)
    except ValueError:
        return None


def run_sac(spec: BaselineSpec, workdir: str) -> dict:
    """Train ``brax.training.agents.sac`` for ``spec.env_steps`` env steps; returns the summary."""
    validate(spec)
    import brax.envs
    from brax.training.agents.sac import train as sac

    from gdm_jax.envs.behaviour import brax_jax_compat  # Brax 0.14 needs a JAX it no longer has

    os.makedirs(workdir, exist_ok=True)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    open(metrics_path, "w").close()  # a rerun without summary.json starts over
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"algo": "sac", **dataclasses.asdict(spec), **SAC_DEFAULTS}, f, indent=2, sort_keys=True)

    env = brax.envs.get_environment(spec.env_name, backend=spec.backend)
    t0 = time.perf_counter()
    evals: list[dict] = []

    def progress(step: int, metrics: dict) -> None:
        ret = float(metrics["eval/episode_reward"])
        record = {"step": int(step), "eval/episode_return": ret,
                  "eval/episode_return_std": float(metrics.get("eval/episode_reward_std", math.nan)),
                  "eval/normalized_score": score_or_none(spec.env_name, spec.backend, ret),
                  "wall_seconds": round(time.perf_counter() - t0, 3)}
        evals.append(record)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    # Brax SAC makes grad_updates_per_step updates per actor step, which moves num_envs env steps.
    grad_updates = max(1, round(spec.updates_per_env_step * spec.num_envs))
    with brax_jax_compat():
        sac.train(environment=env, num_timesteps=spec.env_steps, episode_length=spec.episode_length,
                  num_envs=spec.num_envs, num_eval_envs=spec.num_eval_envs, num_evals=spec.num_evals,
                  seed=spec.seed, min_replay_size=spec.min_replay_size, max_replay_size=spec.env_steps,
                  grad_updates_per_step=grad_updates, deterministic_eval=True, progress_fn=progress,
                  **SAC_DEFAULTS)
    summary = {"experiment": f"sac-{spec.env_name}", "step": evals[-1]["step"] if evals else 0,
               "wall_seconds": round(time.perf_counter() - t0, 3), "eval": evals[-1] if evals else {}}
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algo", default="sac", choices=("sac",))
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--backend", default="spring")
    parser.add_argument("--episode_length", type=int, default=1000)
    parser.add_argument("--env_steps", type=int, default=32768)
    parser.add_argument("--num_evals", type=int, default=9)
    parser.add_argument("--num_envs", type=int, default=8)
    parser.add_argument("--num_eval_envs", type=int, default=8)
    parser.add_argument("--min_replay_size", type=int, default=1024)
    parser.add_argument("--updates_per_env_step", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    spec = BaselineSpec(env_name=args.env, backend=args.backend, episode_length=args.episode_length,
                        env_steps=args.env_steps, num_evals=args.num_evals, num_envs=args.num_envs,
                        num_eval_envs=args.num_eval_envs, updates_per_env_step=args.updates_per_env_step,
                        min_replay_size=min(args.min_replay_size, args.env_steps // 2), seed=args.seed)
    print(json.dumps(run_sac(spec, args.workdir), indent=2))


if __name__ == "__main__":
    main()
