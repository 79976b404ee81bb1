"""Offline datasets: generation contract, exact unions, reproducible behaviour policies."""

import json
import shutil

import brax.envs
import numpy as np
import pytest

from gdm_jax.data import trajectory
from gdm_jax.envs import behaviour, datasets

ENV, BACKEND, SEED = "inverted_pendulum", "spring", 0
EPISODES, LENGTH = 3, 20
# A minuscule PPO run: two training epochs of one update each, tiny networks.
TINY_PPO = dict(num_envs=4, batch_size=4, num_minibatches=4, unroll_length=5,
                num_updates_per_batch=1, num_snapshots=3, num_eval_envs=4,
                policy_hidden_layer_sizes=(8,), value_hidden_layer_sizes=(8,))
COMMITTED = {"hopper": dict(obs=11, action=3, episodes=96),
             "halfcheetah": dict(obs=17, action=6, episodes=10)}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  root = tmp_path_factory.mktemp("datasets")
  reference = datasets.generate_datasets(
      ENV, BACKEND, root, num_timesteps=2000, episodes=EPISODES, episode_length=LENGTH,
      seed=SEED, ppo_overrides=TINY_PPO)
  loaded = {name: datasets.load_dataset(ENV, BACKEND, name, root)
            for name in datasets.DATASET_NAMES}
  return root, reference, loaded


def _check_contract(data, episodes, length, obs_size, action_size):
  assert data["obs"].shape == (episodes, length, obs_size) and data["obs"].dtype == np.float32
  assert data["action"].shape == (episodes, length, action_size)
  assert data["action"].dtype == np.float32
  for key in ("reward", "terminated"):
    assert data[key].shape == (episodes, length) and data[key].dtype == np.float32
  assert data["length"].shape == (episodes,) and data["length"].dtype == np.int32
  assert np.all(data["length"] >= 1) and np.all(data["length"] <= length)
  valid = np.arange(length)[None, :] < data["length"][:, None]
  for key in ("obs", "action", "reward", "terminated"):
    padding = data[key][~valid]
    assert np.all(padding == 0.0), f"{key} is not zero past length"
  # A true terminal is the last valid step; an episode shorter than the cap must have one.
  terminal_steps = [np.flatnonzero(row) for row in data["terminated"]]
  for steps, n in zip(terminal_steps, data["length"]):
    assert len(steps) <= 1
    if n < length:
      assert list(steps) == [n - 1]
    if len(steps):
      assert steps[0] == n - 1
  assert np.all(np.isfinite(data["obs"]))


def test_generation_writes_five_datasets_in_contract_format(generated):
  root, _, loaded = generated
  env = brax.envs.get_environment(ENV, backend=BACKEND)
  for name in datasets.DATASET_NAMES:
    path = datasets.dataset_dir(ENV, BACKEND, root) / f"{name}.npz"
    with np.load(path, allow_pickle=False) as raw:
      assert str(raw["dataset"]) == name and str(raw["env"]) == ENV
    episodes = 2 * EPISODES if name == "medium-expert" else EPISODES
    _check_contract(loaded[name], episodes, LENGTH, env.observation_size, env.action_size)
  # The pendulum falls under random actions: the terminal logic is exercised, not idle.
  assert loaded["random"]["terminated"].sum() >= 1


def test_medium_expert_is_exactly_medium_then_expert(generated):
  _, _, loaded = generated
  for key in datasets.ARRAY_KEYS:
    np.testing.assert_array_equal(
        loaded["medium-expert"][key],
        np.concatenate([loaded["medium"][key], loaded["expert"][key]]))


def test_random_dataset_uses_uniform_in_bounds_actions(generated):
  _, _, loaded = generated
  env = brax.envs.get_environment(ENV, backend=BACKEND)
  low, high = datasets.action_bounds(env)
  data = loaded["random"]
  valid = np.arange(LENGTH)[None, :] < data["length"][:, None]
  actions = data["action"][valid]
  assert np.all(actions >= low) and np.all(actions <= high)
  assert actions.std() > 0.3  # uniform on [-1, 1] has std 0.577; a policy would not spread so


def test_reference_returns_are_sums_of_rewards(generated):
  root, reference, loaded = generated
  on_disk = json.loads((datasets.dataset_dir(ENV, BACKEND, root) / "reference.json").read_text())
  assert on_disk == reference
  for name in datasets.DATASET_NAMES:
    sums = loaded[name]["reward"].astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(reference["returns"][name]["mean"], sums.mean(), rtol=1e-6)
    assert reference["returns"][name]["transitions"] == int(loaded[name]["length"].sum())
  r_random, r_expert = datasets.reference_returns(ENV, BACKEND, root)
  np.testing.assert_allclose(r_random, loaded["random"]["reward"].sum(axis=1).mean(), rtol=1e-6)
  np.testing.assert_allclose(r_expert, loaded["expert"]["reward"].sum(axis=1).mean(), rtol=1e-6)


def test_reloaded_expert_policy_reproduces_dataset_actions(generated):
  root, _, loaded = generated
  policy_dir = datasets.dataset_dir(ENV, BACKEND, root) / datasets.POLICY_DIR
  params, _ = behaviour.load_behaviour(policy_dir, "expert")
  spec = behaviour.load_network_spec(policy_dir)
  env = brax.envs.get_environment(ENV, backend=BACKEND)
  collect = datasets.make_collector(env, datasets.dataset_action_fn(env, spec), EPISODES, LENGTH)
  again = collect(datasets.collector_inputs([params] * EPISODES, False),
                  datasets.dataset_key(SEED, "expert"))
  np.testing.assert_array_equal(np.asarray(again["length"]), loaded["expert"]["length"])
  np.testing.assert_allclose(np.asarray(again["action"]), loaded["expert"]["action"], atol=1e-5)
  np.testing.assert_allclose(np.asarray(again["obs"]), loaded["expert"]["obs"], atol=1e-4)
  with pytest.raises(ValueError, match="available.*expert"):
    behaviour.load_behaviour(policy_dir, "super-expert")


def test_reusing_saved_policies_recollects_identical_datasets(generated, tmp_path):
  root, reference, loaded = generated
  source = datasets.dataset_dir(ENV, BACKEND, root) / datasets.POLICY_DIR
  target = datasets.dataset_dir(ENV, BACKEND, tmp_path) / datasets.POLICY_DIR
  shutil.copytree(source, target)
  again = datasets.generate_datasets(ENV, BACKEND, tmp_path, num_timesteps=1,
                                     episodes=EPISODES, episode_length=LENGTH, seed=SEED,
                                     reuse_policies=True)
  assert again["returns"] == reference["returns"]
  for name in datasets.DATASET_NAMES:
    recollected = datasets.load_dataset(ENV, BACKEND, name, tmp_path)
    for key in datasets.ARRAY_KEYS:
      np.testing.assert_array_equal(recollected[key], loaded[name][key])


def test_normalized_score_is_0_at_random_and_100_at_expert(generated):
  root, reference, _ = generated
  r_random, r_expert = reference["R_random"], reference["R_expert"]
  scores = datasets.normalized_score(ENV, BACKEND, [r_random, r_expert], root)
  np.testing.assert_allclose(scores, [0.0, 100.0], atol=1e-9)
  midpoint = datasets.normalized_score(ENV, BACKEND, (r_random + r_expert) / 2, root)
  assert isinstance(midpoint, float) and abs(midpoint - 50.0) < 1e-9


def test_unknown_env_or_dataset_fails_naming_what_is_available(generated):
  root, _, _ = generated
  with pytest.raises(ValueError, match=r"'walker2d'.*available: \['inverted_pendulum-spring'\]"):
    datasets.load_dataset("walker2d", BACKEND, "expert", root)
  with pytest.raises(ValueError, match=r"'super-expert'.*available:.*'medium-replay'"):
    datasets.load_dataset(ENV, BACKEND, "super-expert", root)
  with pytest.raises(ValueError, match="walker2d"):
    datasets.normalized_score("walker2d", BACKEND, 1.0, root)


def test_bad_generation_arguments_fail_before_training(tmp_path):
  with pytest.raises(ValueError, match="episodes"):
    datasets.generate_datasets(ENV, BACKEND, tmp_path, num_timesteps=10, episodes=0)
  with pytest.raises(ValueError, match="unknown dataset 'expert-v2'"):
    datasets.dataset_key(0, "expert-v2")


def test_medium_snapshot_is_an_earlier_one_near_40_percent_of_expert():
  expert, medium = behaviour.select_snapshots([5.0, 120.0, 400.0, 900.0, 1000.0, 980.0])
  assert (expert, medium) == (4, 2)
  # The untrained snapshot 0 is skipped when a trained one can serve as medium.
  assert behaviour.select_snapshots([390.0, 300.0, 700.0, 1000.0]) == (3, 1)
  # A run that never improves still yields valid (expert, medium) indices.
  assert behaviour.select_snapshots([-3.0, -5.0]) == (0, 0)


@pytest.mark.parametrize("env_name", sorted(COMMITTED))
def test_committed_datasets_load_with_documented_shapes(env_name):
  sizes = COMMITTED[env_name]
  folder = datasets.dataset_dir(env_name, "spring")
  total_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
  assert total_bytes < 8 * 2**20
  for name in datasets.DATASET_NAMES:
    data = datasets.load_dataset(env_name, "spring", name)
    episodes = 2 * sizes["episodes"] if name == "medium-expert" else sizes["episodes"]
    _check_contract(data, episodes, 1000, sizes["obs"], sizes["action"])
  # The shared trajectory reader (replay's loader) accepts the files as they are.
  expert_file = folder / "expert.npz"
  episodes = trajectory.load_trajectories(expert_file)
  expert = datasets.load_dataset(env_name, "spring", "expert")
  assert [e.length for e in episodes] == expert["length"].tolist()
  np.testing.assert_allclose([e.episode_return for e in episodes],
                             expert["reward"].astype(np.float64).sum(axis=1), rtol=1e-6)
  r_random, r_expert = datasets.reference_returns(env_name, "spring")
  np.testing.assert_allclose(r_expert, expert["reward"].astype(np.float64).sum(axis=1).mean(),
                             rtol=1e-6)
  assert r_expert > r_random
  medium = datasets.load_dataset(env_name, "spring", "medium")
  medium_score = datasets.normalized_score(env_name, "spring",
                                           medium["reward"].sum(axis=1).mean())
  assert 0.0 < medium_score < 100.0
