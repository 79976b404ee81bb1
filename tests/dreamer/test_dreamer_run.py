"""End to end: the tiny dreamer experiment through the launcher's run(), on hopper (spring)."""
import json
import os

import numpy as np

from configs.dreamer import get_config
from gdm_jax.dreamer import run as dreamer_run


def test_tiny_run_writes_metrics_plots_and_open_loop(tmp_path):
    config = get_config("tiny")
    summary = dreamer_run.run(config, str(tmp_path))
    per_chunk = config.env.num_envs * config.train.env_steps
    assert summary["chunk"] == config.train.num_chunks
    assert summary["step"] == config.train.num_chunks * per_chunk
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    train = [l for l in lines if "wm/loss" in l]
    assert len(train) == config.train.num_chunks
    assert all(np.isfinite(l["wm/loss"]) and np.isfinite(l["actor/loss"]) for l in train)
    # Hopper under a random-ish policy ends episodes within 2 x 16 steps per env.
    assert train[-1]["train/episodes"] >= 1 and train[-1]["train/episode_return"] != 0
    errors = json.load(open(tmp_path / "open_loop.json"))
    assert len(errors["obs_mse"]) == config.eval.horizon
    for png in ("open_loop", "return", "world_model", "actor_critic"):
        assert os.path.getsize(tmp_path / "plots" / f"{png}.png") > 1000
