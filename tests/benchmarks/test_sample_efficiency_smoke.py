"""The study's bookkeeping: budgets on one grid, resume by summary.json, seed-paired aggregation."""
import importlib.util
import json
import os
import sys
import types

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


se = _load("sample_efficiency")
baseline = _load("brax_baseline")


def test_every_method_evaluates_on_the_shared_budget_grid():
    budget, points = 32768, 8
    for method in ("dreamer_odt", "odt", "dreamer"):
        chunks, every = se.plan_chunks(method, budget, points)
        per = se.env_steps_per_chunk(method)
        assert chunks % points == 0 and every * points == chunks
        eval_steps = [per * every * (k + 1) for k in range(points)]
        assert eval_steps == [budget * (k + 1) // points for k in range(points)], method


def test_odt_run_differs_from_flagship_only_in_imagination_and_collector():
    flag = se.run_command("dreamer_odt", "hopper", 1, 8192, 4, "/tmp/a")
    odt = se.run_command("odt", "hopper", 1, 8192, 4, "/tmp/a")
    assert set(odt) - set(flag) == {"--config.loop.imagined_fraction=0.0", "--config.loop.collector=odt"}
    assert set(flag) - set(odt) == {"--config.loop.imagined_fraction=0.5"}
    flag = se.run_command("dreamer_odt_offline", "halfcheetah", 1, 8192, 4, "/tmp/a")
    odt = se.run_command("odt_offline", "halfcheetah", 1, 8192, 4, "/tmp/a")
    assert set(odt) - set(flag) == {"--config.loop.imagined_fraction=0.0", "--config.loop.collector=odt"}
    assert set(flag) - set(odt) == {"--config.loop.imagined_fraction=0.5"}
    assert "--config.offline.dataset=medium-replay" in odt


def test_long_episode_tasks_keep_the_chunk_size_but_end_episodes_sooner():
    for method in ("dreamer_odt", "odt"):
        cmd = se.run_command(method, "halfcheetah", 0, 16384, 4, "/tmp/a")
        assert "--config.loop.num_envs=2" in cmd and "--config.loop.env_steps=128" in cmd
        assert 2 * 128 == se.env_steps_per_chunk(method)
    assert not any("num_envs" in a for a in se.run_command("dreamer", "halfcheetah", 0, 16384, 4, "/tmp/a"))


def test_deadline_earlier_in_the_day_means_tomorrow_but_a_recent_one_has_passed():
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    hhmm = lambda dt: dt.strftime("%H:%M")
    assert se.seconds_to_deadline("") == float("inf")
    assert -1200 < se.seconds_to_deadline(hhmm(now - datetime.timedelta(minutes=10))) <= -540
    left = se.seconds_to_deadline(hhmm(now - datetime.timedelta(hours=20)))
    assert 4 * 3600 - 120 < left <= 4 * 3600


def _write_run(root, method, seed, lines, stopped=None):
    workdir = os.path.join(root, f"hopper-{method}-s{seed}")
    os.makedirs(workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(l) + "\n" for l in lines)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump({"stopped": stopped}, f)
    return {"env": "hopper", "method": method, "seed": seed, "workdir": workdir, "status": "done"}


def test_aggregate_pairs_seeds_and_scores_with_the_reference(tmp_path):
    from gdm_jax.envs import datasets
    r_random, r_expert = datasets.reference_returns("hopper", "spring")
    ret = lambda score: r_random + score / 100.0 * (r_expert - r_random)
    runs = []
    for seed, (a, b) in enumerate([(10.0, 30.0), (20.0, 50.0)]):
        runs.append(_write_run(tmp_path, "dreamer_odt", seed, [
            {"step": 512, "eval/odt_episode_return": ret(a), "eval/dreamer_episode_return": ret(0.0)},
            {"step": 1024, "eval/odt_episode_return": ret(b), "eval/dreamer_episode_return": ret(5.0)}]))
        runs.append(_write_run(tmp_path, "odt", seed, [
            {"step": 512, "eval/odt_episode_return": ret(a - 5)},
            {"step": 1024, "eval/odt_episode_return": ret(b - 10)}]))
    args = types.SimpleNamespace(env_steps=1024, num_points=2, envs=["hopper"], methods=["dreamer_odt", "odt"])
    res = se.aggregate(args, runs)
    task = res["tasks"]["hopper"]
    assert task["metric"] == "normalized_score"
    np.testing.assert_allclose(task["methods"]["dreamer_odt"]["mean"], [15.0, 40.0], atol=1e-6)
    np.testing.assert_allclose(task["methods"]["dreamer_odt"]["std"], [5.0, 10.0], atol=1e-6)
    np.testing.assert_allclose(task["methods"]["dreamer_odt:dreamer_actor"]["mean"], [0.0, 5.0], atol=1e-6)
    lines = se.comparison(task, res["grid_env_steps"])
    assert "+10.0" in lines[-1] and "2/2" in lines[-1]


def test_resume_skips_only_runs_that_finished(tmp_path):
    done = _write_run(tmp_path, "odt", 0, [])
    stopped = _write_run(tmp_path, "odt", 1, [], stopped="SIGTERM")
    assert se.finished(done["workdir"]) and not se.finished(stopped["workdir"])
    assert not se.finished(os.path.join(tmp_path, "absent"))


def test_each_budget_takes_the_latest_point_not_past_it():
    grid = np.asarray([100.0, 200.0])
    out = se.on_grid(np.asarray([40.0, 90.0, 150.0, 210.0]), np.asarray([1.0, 3.0, 7.0, 9.0]), grid, 100.0)
    np.testing.assert_allclose(out, [3.0, 7.0])
    late = se.on_grid(np.asarray([0.0, 120.0, 210.0]), np.asarray([5.0, 1.0, 2.0]), grid, 100.0, late=25.0)
    np.testing.assert_allclose(late, [1.0, 2.0])  # step 0 never stands in for the first budget
    assert np.isnan(se.on_grid(np.asarray([300.0]), np.asarray([1.0]), grid, 100.0)).all()


@pytest.mark.parametrize("field,value", [("env_name", "cartpole"), ("backend", "mujoco"),
                                         ("num_evals", 1), ("min_replay_size", 10**9)])
def test_baseline_rejects_bad_specs_naming_the_field(field, value):
    spec = baseline.BaselineSpec(env_name="hopper", env_steps=4096)
    with pytest.raises(ValueError, match=field):
        baseline.validate(baseline.dataclasses.replace(spec, **{field: value}))
