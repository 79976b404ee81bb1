"""Offline datasets in the spirit of D4RL, collected from Brax PPO behaviour policies."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import brax.envs
import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env

from gdm_jax.envs import behaviour

DATASET_NAMES = ("random", "medium", "expert", "medium-replay", "medium-expert")
ARRAY_KEYS = ("obs", "action", "reward", "terminated", "length")
METADATA_KEYS = ("env", "backend", "dataset", "policy")
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "datasets"
REFERENCE_FILE = "reference.json"
POLICY_DIR = "policies"

# PPO settings sized for a 2-core CPU; hopper follows Brax's published hopper recipe
# (reward_scaling=10, discount 0.97), halfcheetah its halfcheetah one (discount 0.95).
PPO_PRESETS = {
    "hopper": dict(reward_scaling=10.0, discounting=0.97, num_snapshots=41, num_eval_envs=16),
    "halfcheetah": dict(reward_scaling=1.0, discounting=0.95, num_snapshots=41, num_eval_envs=8),
}
# Step caps chosen so a 10-minute wall budget on the shared 2-core CPU still sees many snapshots.
DEFAULT_TIMESTEPS = {"hopper": 6_000_000, "halfcheetah": 3_000_000}

Trajectories = dict[str, np.ndarray]
Collector = Callable[[dict, jax.Array], dict[str, jax.Array]]


def dataset_dir(env_name: str, backend: str, root: Path | str | None = None) -> Path:
  """Folder holding one env/backend's datasets, reference.json and policies/."""
  return Path(root if root is not None else ASSETS_DIR) / f"{env_name}-{backend}"


def dataset_key(seed: int, name: str) -> jax.Array:
  """The rollout key of dataset `name`: reloading its policy with this key reproduces it."""
  if name not in DATASET_NAMES:
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")
  return jax.random.fold_in(jax.random.PRNGKey(seed), DATASET_NAMES.index(name) + 1)


def make_collector(env: Env, act_fn: behaviour.ActionFn, num_episodes: int,
                   episode_length: int) -> Collector:
  """Returns jitted collect(params_E, key) rolling out E episodes of one step cap each.

  params_E carries a leading episode axis (each episode may use its own policy). Steps past
  the first `done` are zeroed, so outputs follow the dataset format: obs [E,L,O],
  action [E,L,A], reward [E,L], terminated [E,L] (1.0 at a true terminal), length [E].
  """
  if num_episodes <= 0 or episode_length <= 0:
    raise ValueError(f"num_episodes and episode_length must be positive, got "
                     f"{num_episodes} and {episode_length}")

  @jax.jit
  def collect(params_E: behaviour.PolicyParams, key: jax.Array) -> dict[str, jax.Array]:
    reset_key, step_key = jax.random.split(key)
    state_E = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))
    alive_E = jnp.ones((num_episodes,), jnp.bool_)

    def step(carry, key_t):
      state_E, alive_E = carry
      action_ExA = jax.vmap(act_fn)(params_E, state_E.obs, jax.random.split(key_t, num_episodes))
      next_E = jax.vmap(env.step)(state_E, action_ExA)
      done_E = next_E.done > 0.5
      # where (not multiply) so a diverged post-terminal state cannot leak NaNs into padding.
      record = {
          "obs": jnp.where(alive_E[:, None], state_E.obs, 0.0),
          "action": jnp.where(alive_E[:, None], action_ExA, 0.0),
          "reward": jnp.where(alive_E, next_E.reward, 0.0),
          "terminated": jnp.where(alive_E & done_E, 1.0, 0.0),
          "alive": alive_E,
      }
      return (next_E, alive_E & ~done_E), record

    _, record_L = jax.lax.scan(step, (state_E, alive_E),
                               jax.random.split(step_key, episode_length))
    swap = lambda x: jnp.swapaxes(x, 0, 1).astype(jnp.float32)
    return {
        "obs": swap(record_L["obs"]), "action": swap(record_L["action"]),
        "reward": swap(record_L["reward"]), "terminated": swap(record_L["terminated"]),
        "length": record_L["alive"].sum(axis=0).astype(jnp.int32),
    }

  return collect


def action_bounds(env: Env) -> tuple[np.ndarray, np.ndarray]:
  """Per-dimension (low, high) of the actuators' control range, [-1, 1] when unspecified."""
  ctrl_range = np.asarray(env.sys.actuator.ctrl_range, np.float32)
  if ctrl_range.shape != (env.action_size, 2):
    return -np.ones(env.action_size, np.float32), np.ones(env.action_size, np.float32)
  return ctrl_range[:, 0], ctrl_range[:, 1]


def dataset_action_fn(env: Env, spec: behaviour.NetworkSpec) -> behaviour.ActionFn:
  """act({"policy", "uniform"}, obs, key): the PPO policy, or uniform in-bounds actions.

  One action function for all datasets lets a single compiled collector serve them all.
  """
  policy_act = behaviour.make_action_fn(spec)
  low, high = action_bounds(env)

  def act(params, obs_O, key):
    uniform_A = jax.random.uniform(key, (env.action_size,), minval=low, maxval=high)
    return jnp.where(params["uniform"], uniform_A, policy_act(params["policy"], obs_O, key))

  return act


def collector_inputs(policies: list[behaviour.PolicyParams], uniform: bool) -> dict:
  """Per-episode inputs of a dataset collector: one policy per episode and the uniform flag."""
  return {"policy": behaviour.stack_params(policies),
          "uniform": np.full((len(policies),), uniform, np.bool_)}


def episode_returns(trajectories: Trajectories) -> np.ndarray:
  """Sum of rewards of each episode, [M]."""
  return np.asarray(trajectories["reward"], np.float64).sum(axis=1)


def _save_npz(path: Path, trajectories: Trajectories, metadata: dict[str, str]) -> None:
  arrays = {k: np.asarray(trajectories[k]) for k in ARRAY_KEYS}
  arrays.update({k: np.asarray(v, dtype=np.str_) for k, v in metadata.items()})
  np.savez_compressed(path, **arrays)


def _summary(trajectories: Trajectories) -> dict[str, float]:
  returns = episode_returns(trajectories)
  return {"mean": float(returns.mean()), "std": float(returns.std()),
          "min": float(returns.min()), "max": float(returns.max()),
          "episodes": int(returns.shape[0]),
          "transitions": int(np.asarray(trajectories["length"]).sum()),
          "mean_length": float(np.asarray(trajectories["length"]).mean())}


def generate_datasets(env_name: str, backend: str, out_dir: Path | str, *,
                      num_timesteps: int, train_seconds: float | None = None,
                      episodes: int = 10, episode_length: int = 1000, seed: int = 0,
                      ppo_overrides: dict | None = None, reuse_policies: bool = False,
                      log: Callable[[str], None] | None = None) -> dict:
  """Trains behaviour policies, writes the five datasets + reference.json; returns the reference.

  With reuse_policies, the run saved under out_dir/<env>-<backend>/policies is reloaded instead
  of trained, so the datasets are re-collected from the same snapshots.
  """
  if episodes <= 0:
    raise ValueError(f"episodes must be positive, got {episodes}")
  env = brax.envs.get_environment(env_name, backend=backend)
  out = dataset_dir(env_name, backend, out_dir)
  if reuse_policies:
    run, config = behaviour.load_run(out / POLICY_DIR)
  else:
    ppo_kwargs = {**PPO_PRESETS.get(env_name, {}), **(ppo_overrides or {})}
    config = behaviour.PPOConfig(num_timesteps=num_timesteps, train_seconds=train_seconds,
                                 **ppo_kwargs)
    run = behaviour.train_behaviour(env, config, episode_length=episode_length, seed=seed,
                                    log=log)
  behaviour.save_behaviour(run, out / POLICY_DIR, config)

  start = time.monotonic()
  collect = make_collector(env, dataset_action_fn(env, run.spec), episodes, episode_length)
  medium, expert = run.snapshots[run.medium_index], run.snapshots[run.expert_index]
  # medium-replay: the successive snapshots seen up to medium, spread evenly over episodes.
  replay_index = (np.arange(episodes) * (run.medium_index + 1)) // episodes
  sources = {
      "random": (collector_inputs([medium] * episodes, True), "uniform random actions"),
      "medium": (collector_inputs([medium] * episodes, False),
                 f"PPO snapshot {run.medium_index} (step {run.steps[run.medium_index]})"),
      "expert": (collector_inputs([expert] * episodes, False),
                 f"PPO snapshot {run.expert_index} (step {run.steps[run.expert_index]})"),
      "medium-replay": (collector_inputs([run.snapshots[i] for i in replay_index], False),
                        f"PPO snapshots 0..{run.medium_index}"),
  }
  datasets: dict[str, Trajectories] = {}
  for name, (inputs, _) in sources.items():
    datasets[name] = jax.device_get(collect(inputs, dataset_key(seed, name)))
  datasets["medium-expert"] = {k: np.concatenate([datasets["medium"][k], datasets["expert"][k]])
                               for k in ARRAY_KEYS}
  policies = {name: source[1] for name, source in sources.items()}
  policies["medium-expert"] = "medium + expert"
  for name in DATASET_NAMES:
    _save_npz(out / f"{name}.npz", datasets[name],
              {"env": env_name, "backend": backend, "dataset": name, "policy": policies[name]})

  summaries = {name: _summary(datasets[name]) for name in DATASET_NAMES}
  reference = {
      "env": env_name, "backend": backend, "seed": seed, "episode_length": episode_length,
      "R_random": summaries["random"]["mean"], "R_expert": summaries["expert"]["mean"],
      "returns": summaries, "train_wall_seconds": run.wall_seconds,
      "train_env_steps": run.steps[-1], "collect_wall_seconds": time.monotonic() - start,
      "expert_snapshot": run.expert_index, "medium_snapshot": run.medium_index,
  }
  (out / REFERENCE_FILE).write_text(json.dumps(reference, indent=2))
  return reference


def _available(root: Path) -> list[str]:
  return sorted(p.parent.name for p in root.glob(f"*/{REFERENCE_FILE}"))


def load_dataset(env_name: str, backend: str, name: str,
                 root: Path | str | None = None) -> Trajectories:
  """Loads dataset `name` of env/backend: obs, action, reward, terminated, length + metadata."""
  root = Path(root if root is not None else ASSETS_DIR)
  folder = dataset_dir(env_name, backend, root)
  if not folder.is_dir():
    raise ValueError(f"no datasets for env {env_name!r} backend {backend!r} under {root}; "
                     f"available: {_available(root)}")
  path = folder / f"{name}.npz"
  if not path.exists():
    available = [n for n in DATASET_NAMES if (folder / f"{n}.npz").exists()]
    raise ValueError(f"no dataset {name!r} for {env_name}-{backend}; available: {available}")
  with np.load(path, allow_pickle=False) as data:
    out = {k: np.asarray(data[k]) for k in ARRAY_KEYS}
    out.update({k: str(data[k]) for k in METADATA_KEYS if k in data.files})
  return out


def reference_returns(env_name: str, backend: str,
                      root: Path | str | None = None) -> tuple[float, float]:
  """Returns (R_random, R_expert): mean episode returns of the random and expert datasets."""
  root = Path(root if root is not None else ASSETS_DIR)
  path = dataset_dir(env_name, backend, root) / REFERENCE_FILE
  if not path.exists():
    raise ValueError(f"no reference returns for env {env_name!r} backend {backend!r} under "
                     f"{root}; available: {_available(root)}")
  reference = json.loads(path.read_text())
  return float(reference["R_random"]), float(reference["R_expert"])


def normalized_score(env_name: str, backend: str, returns, root: Path | str | None = None):
  """D4RL score 100*(R - R_random)/(R_expert - R_random); same shape as `returns`."""
  r_random, r_expert = reference_returns(env_name, backend, root)
  if r_expert == r_random:
    raise ValueError(f"degenerate reference for {env_name}-{backend}: R_expert == R_random")
  score = 100.0 * (np.asarray(returns, np.float64) - r_random) / (r_expert - r_random)
  return float(score) if score.ndim == 0 else score


def main(argv: list[str] | None = None) -> None:
  """CLI: python -m gdm_jax.envs.datasets --env hopper --backend spring --out DIR."""
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--env", required=True)
  parser.add_argument("--backend", default="spring")
  parser.add_argument("--out", default=str(ASSETS_DIR))
  parser.add_argument("--num_timesteps", type=int, default=None,
                      help="PPO step cap; defaults to the env's preset")
  parser.add_argument("--train_seconds", type=float, default=600.0)
  parser.add_argument("--episodes", type=int, default=10)
  parser.add_argument("--episode_length", type=int, default=1000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--reuse_policies", action="store_true",
                      help="re-collect from the saved PPO snapshots instead of training")
  args = parser.parse_args(argv)
  reference = generate_datasets(
      args.env, args.backend, args.out,
      num_timesteps=args.num_timesteps or DEFAULT_TIMESTEPS.get(args.env, 5_000_000),
      train_seconds=args.train_seconds, episodes=args.episodes,
      episode_length=args.episode_length, seed=args.seed, reuse_policies=args.reuse_policies,
      log=lambda line: print(line, file=sys.stderr, flush=True))
  print(json.dumps(reference, indent=2))


if __name__ == "__main__":
  main()
