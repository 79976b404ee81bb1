"""Behaviour policies for offline datasets: a Brax PPO run that keeps its snapshots."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env
from brax.training.acme import running_statistics
from brax.training.agents.ppo import networks as ppo_networks
from brax.training.agents.ppo import train as ppo_train

NETWORK_FILE = "network.json"
SNAPSHOTS_FILE = "snapshots.msgpack"
TRAINING_FILE = "training.json"
MEDIUM_FRACTION = 0.4  # D4RL's medium policies sit at roughly 1/3 to 1/2 of expert return.

PolicyParams = dict[str, Any]  # {"normalizer": {"mean", "std"}, "policy": flax params}
ActionFn = Callable[[PolicyParams, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """Hyperparameters of a behaviour-policy PPO run (brax.training.agents.ppo.train)."""

  num_timesteps: int
  train_seconds: float | None = None  # Wall budget; the run stops after the first epoch past it.
  num_envs: int = 64
  batch_size: int = 64
  num_minibatches: int = 8
  unroll_length: int = 20
  num_updates_per_batch: int = 4
  learning_rate: float = 3e-4
  entropy_cost: float = 1e-3
  discounting: float = 0.97
  reward_scaling: float = 1.0
  num_snapshots: int = 31
  num_eval_envs: int = 16
  policy_hidden_layer_sizes: tuple[int, ...] = (64, 64)
  value_hidden_layer_sizes: tuple[int, ...] = (128, 128, 128)


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  """What is needed to rebuild a saved PPO policy network."""

  observation_size: int
  action_size: int
  policy_hidden_layer_sizes: tuple[int, ...]
  algorithm: str = "brax.training.agents.ppo"
  activation: str = "silu"
  distribution_type: str = "tanh_normal"
  normalize_observations: bool = True


@dataclasses.dataclass(frozen=True)
class BehaviourRun:
  """Snapshots of one PPO run, their step counts and stochastic evaluation returns."""

  spec: NetworkSpec
  snapshots: list[PolicyParams]
  steps: list[int]
  eval_returns: list[float]
  wall_seconds: float
  expert_index: int
  medium_index: int


def _device_put_replicated(tree: Any, devices: list) -> Any:
  """Stacks one copy per device along a sharded leading axis (what pmap expects as input)."""
  mesh = jax.sharding.Mesh(np.asarray(devices), ("replica",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("replica"))
  return jax.tree_util.tree_map(
      lambda x: jax.device_put(jnp.stack([jnp.asarray(x)] * len(devices)), sharding), tree)


def _jax_has(name: str) -> bool:
  try:
    getattr(jax, name)
    return True
  except AttributeError:
    return False


@contextlib.contextmanager
def brax_jax_compat():
  """Brax 0.14 trainers call jax.device_put_replicated, which this JAX removed; lend one."""
  if _jax_has("device_put_replicated"):
    yield
    return
  jax.device_put_replicated = _device_put_replicated
  try:
    yield
  finally:
    del jax.device_put_replicated


class _BudgetSpent(Exception):
  """Raised from the progress callback to stop Brax's training loop at the wall budget."""


def _policy_subset(params: tuple) -> PolicyParams:
  """Keeps what inference needs: normalizer mean/std and policy weights (no value net)."""
  normalizer, policy = params[0], params[1]
  return jax.device_get({"normalizer": {"mean": normalizer.mean, "std": normalizer.std},
                         "policy": policy})


def select_snapshots(eval_returns: list[float]) -> tuple[int, int]:
  """Returns (expert_index, medium_index): best snapshot, and a trained earlier one near 0.4x it.

  Snapshot 0 is the untrained initial policy, so it is medium only when nothing later qualifies.
  """
  if not eval_returns:
    raise ValueError("select_snapshots needs at least one evaluated snapshot")
  returns = np.asarray(eval_returns, dtype=np.float64)
  best = float(returns.max())
  expert_index = int(np.flatnonzero(returns == best)[-1])
  if best > 0:
    target = MEDIUM_FRACTION * best
  else:  # No positive return to take a fraction of: interpolate from the initial policy.
    target = returns[0] + MEDIUM_FRACTION * (best - returns[0])
  first = 1 if expert_index >= 1 else 0
  medium_index = first + int(np.argmin(np.abs(returns[first: expert_index + 1] - target)))
  return expert_index, medium_index


def train_behaviour(env: Env, config: PPOConfig, *, episode_length: int, seed: int,
                    log: Callable[[str], None] | None = None) -> BehaviourRun:
  """Trains PPO on `env`, keeping a snapshot (and its eval return) after every epoch."""
  if config.num_snapshots < 2:
    raise ValueError(f"num_snapshots must be >= 2, got {config.num_snapshots}")
  if config.num_timesteps <= 0:
    raise ValueError(f"num_timesteps must be positive, got {config.num_timesteps}")
  snapshots: list[PolicyParams] = []
  steps: list[int] = []
  eval_returns: list[float] = []
  start = time.monotonic()

  def keep_params(step: int, make_policy: Any, params: tuple) -> None:
    del make_policy
    snapshots.append(_policy_subset(params))
    steps.append(int(step))

  def record_progress(step: int, metrics: dict) -> None:
    eval_returns.append(float(metrics["eval/episode_reward"]))
    if log is not None:
      log(f"step {step}: eval return {eval_returns[-1]:.1f} "
          f"({time.monotonic() - start:.0f} s)")
    if config.train_seconds is not None and time.monotonic() - start > config.train_seconds:
      raise _BudgetSpent()

  network_factory = functools.partial(
      ppo_networks.make_ppo_networks,
      policy_hidden_layer_sizes=config.policy_hidden_layer_sizes,
      value_hidden_layer_sizes=config.value_hidden_layer_sizes)
  with brax_jax_compat():
    try:
      ppo_train.train(
          environment=env, num_timesteps=config.num_timesteps, episode_length=episode_length,
          num_envs=config.num_envs, batch_size=config.batch_size,
          num_minibatches=config.num_minibatches, unroll_length=config.unroll_length,
          num_updates_per_batch=config.num_updates_per_batch,
          learning_rate=config.learning_rate, entropy_cost=config.entropy_cost,
          discounting=config.discounting, reward_scaling=config.reward_scaling,
          normalize_observations=True, network_factory=network_factory, seed=seed,
          num_evals=config.num_snapshots, num_eval_envs=config.num_eval_envs,
          deterministic_eval=False, progress_fn=record_progress, policy_params_fn=keep_params)
    except _BudgetSpent:
      pass
  wall_seconds = time.monotonic() - start
  # Brax calls both callbacks once before training and once per epoch, so the lists pair up.
  count = min(len(snapshots), len(eval_returns))
  snapshots, steps, eval_returns = snapshots[:count], steps[:count], eval_returns[:count]
  expert_index, medium_index = select_snapshots(eval_returns)
  spec = NetworkSpec(observation_size=int(env.observation_size), action_size=int(env.action_size),
                     policy_hidden_layer_sizes=tuple(config.policy_hidden_layer_sizes))
  return BehaviourRun(spec=spec, snapshots=snapshots, steps=steps, eval_returns=eval_returns,
                      wall_seconds=wall_seconds, expert_index=expert_index,
                      medium_index=medium_index)


def make_action_fn(spec: NetworkSpec) -> ActionFn:
  """Returns act(params, obs_O, key) -> action_A sampling the stochastic PPO policy."""
  networks = ppo_networks.make_ppo_networks(
      spec.observation_size, spec.action_size,
      preprocess_observations_fn=running_statistics.normalize,
      policy_hidden_layer_sizes=spec.policy_hidden_layer_sizes)
  make_policy = ppo_networks.make_inference_fn(networks)

  def act(params: PolicyParams, obs_O: jax.Array, key: jax.Array) -> jax.Array:
    normalizer = running_statistics.NestedMeanStd(mean=params["normalizer"]["mean"],
                                                  std=params["normalizer"]["std"])
    action_1xA, _ = make_policy((normalizer, params["policy"]), deterministic=False)(
        obs_O[None], key)
    return action_1xA[0]

  return act


def stack_params(params_list: list[PolicyParams]) -> PolicyParams:
  """Stacks policies along a new leading axis (one per episode, for vmapped rollouts)."""
  return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *params_list)


def save_behaviour(run: BehaviourRun, policy_dir: Path, config: PPOConfig) -> None:
  """Writes network.json, expert/medium/snapshots msgpack files and training.json (no pickle)."""
  policy_dir.mkdir(parents=True, exist_ok=True)
  (policy_dir / NETWORK_FILE).write_text(json.dumps(dataclasses.asdict(run.spec), indent=2))
  for name, index in (("expert", run.expert_index), ("medium", run.medium_index)):
    (policy_dir / f"{name}.msgpack").write_bytes(flax.serialization.to_bytes(run.snapshots[index]))
  (policy_dir / SNAPSHOTS_FILE).write_bytes(
      flax.serialization.to_bytes(stack_params(run.snapshots)))
  training = {
      "ppo_config": dataclasses.asdict(config), "steps": run.steps,
      "eval_returns": run.eval_returns, "expert_index": run.expert_index,
      "medium_index": run.medium_index, "wall_seconds": run.wall_seconds}
  (policy_dir / TRAINING_FILE).write_text(json.dumps(training, indent=2))


def load_run(policy_dir: Path) -> tuple[BehaviourRun, PPOConfig]:
  """Reloads a saved run (all snapshots and their evaluations) to re-collect without training."""
  policy_dir = Path(policy_dir)
  for name in (SNAPSHOTS_FILE, TRAINING_FILE):
    if not (policy_dir / name).exists():
      raise ValueError(f"cannot reuse behaviour policies: {policy_dir / name} is missing")
  training = json.loads((policy_dir / TRAINING_FILE).read_text())
  stacked = flax.serialization.msgpack_restore((policy_dir / SNAPSHOTS_FILE).read_bytes())
  count = len(training["steps"])
  snapshots = [jax.tree_util.tree_map(lambda x, i=i: np.asarray(x[i]), stacked)
               for i in range(count)]
  raw_config = training["ppo_config"]
  for key in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes"):
    raw_config[key] = tuple(raw_config[key])
  expert_index, medium_index = select_snapshots(training["eval_returns"])
  run = BehaviourRun(spec=load_network_spec(policy_dir), snapshots=snapshots,
                     steps=training["steps"], eval_returns=training["eval_returns"],
                     wall_seconds=training["wall_seconds"], expert_index=expert_index,
                     medium_index=medium_index)
  return run, PPOConfig(**raw_config)


def load_network_spec(policy_dir: Path) -> NetworkSpec:
  """Reads network.json written by save_behaviour."""
  path = Path(policy_dir) / NETWORK_FILE
  if not path.exists():
    raise ValueError(f"no behaviour policy network file at {path}")
  raw = json.loads(path.read_text())
  raw["policy_hidden_layer_sizes"] = tuple(raw["policy_hidden_layer_sizes"])
  return NetworkSpec(**raw)


def load_behaviour(policy_dir: Path, name: str) -> tuple[PolicyParams, ActionFn]:
  """Loads a saved policy ('expert', 'medium' or 'snapshots') and its action function."""
  path = Path(policy_dir) / f"{name}.msgpack"
  if not path.exists():
    available = sorted(p.stem for p in Path(policy_dir).glob("*.msgpack"))
    raise ValueError(f"no behaviour policy {name!r} in {policy_dir}; available: {available}")
  spec = load_network_spec(policy_dir)
  params = flax.serialization.msgpack_restore(path.read_bytes())
  params = jax.tree_util.tree_map(jnp.asarray, params)
  return params, make_action_fn(spec)
