"""ODT end to end on the tiny preset (synthetic dataset, inverted pendulum) and config validation."""
import json
import os

import numpy as np
import pytest

from configs.odt import get_config
from gdm_jax.odt import run as odt_run

ENV = "inverted_pendulum"


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    folder = root / f"{ENV}-spring"
    folder.mkdir()
    rng = np.random.default_rng(0)
    M, L = 6, 40
    length = rng.integers(10, L + 1, size=M).astype(np.int32)
    valid = np.arange(L)[None, :] < length[:, None]
    np.savez(folder / "medium.npz",
             obs=(rng.normal(size=(M, L, 4)) * valid[..., None]).astype(np.float32),
             action=(rng.uniform(-1, 1, size=(M, L, 1)) * valid[..., None]).astype(np.float32),
             reward=valid.astype(np.float32),
             terminated=(np.arange(L)[None, :] == length[:, None] - 1).astype(np.float32),
             length=length)
    (folder / "reference.json").write_text(json.dumps({"R_random": 5.0, "R_expert": 40.0}))
    return str(root)


def _config(dataset_root, **overrides):
    config = get_config("tiny")
    config.env.name = ENV
    config.dataset_root = dataset_root
    for key, value in overrides.items():
        section, name = key.split(".") if "." in key else (None, key)
        (config[section] if section else config)[name] = value
    return config


@pytest.mark.parametrize("key, value, message", [
    ("odt.context_len", 9, "odt.context_len=9"),
    ("mesh.data", 64, "mesh.data=64"),
    ("env.name", "pong", "env.name='pong'"),
    ("dataset", "best", "dataset='best'"),
    ("odt.offline_updates", 3, "odt.offline_updates=3"),
    ("odt.rtg_scale", -1.0, "odt.rtg_scale=-1.0"),
    ("env.episode_length", 100, "env.episode_length=100"),
    ("model.num_heads", 3, "model.embed_dim=16"),
    ("odt.replay_capacity", 1, "odt.replay_capacity=1"),
    ("odt.target_entropy_per_dim", 1.0, "odt.target_entropy_per_dim=1.0"),
])
def test_validate_names_the_bad_key(dataset_root, key, value, message):
    with pytest.raises(ValueError) as err:
        odt_run.validate(_config(dataset_root, **{key: value}))
    assert message in str(err.value)


def test_presets_validate_and_unknown_preset_fails():
    for preset in ("tiny", "cpu", ""):
        odt_run.validate(get_config(preset))
    with pytest.raises(ValueError, match="preset"):
        get_config("huge")


def test_tiny_run_end_to_end_and_resume(dataset_root, tmp_path):
    config = _config(dataset_root)
    workdir = str(tmp_path / "run")
    summary = odt_run.run(config, workdir)
    total = config.odt.offline_updates // config.odt.offline_updates_per_chunk + config.odt.online_chunks
    assert summary["chunk"] == total
    assert summary["step"] == config.odt.online_chunks * config.odt.num_envs * config.odt.rollout_steps
    assert np.isfinite(summary["eval"]["eval/normalized_score"])
    assert np.isfinite(summary["train"]["online/loss"])
    records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert {r.get("phase") for r in records} >= {"offline", "online"}
    # Episodes of <= 40 steps end inside the 20-step x 2-chunk exploration only sometimes;
    # the replay must still have grown past its seeds or kept them.
    again = odt_run.run(config, workdir)
    assert again["chunk"] == total
