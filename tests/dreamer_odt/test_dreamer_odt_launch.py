"""The flagship through the launcher (tiny preset): artefacts, exact resume, bad input named."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def launch(workdir, *overrides, preset="tiny"):
    cmd = [sys.executable, "-m", "gdm_jax.launch", f"--config=configs/dreamer_odt.py:{preset}",
           f"--workdir={workdir}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


def records(workdir):
    return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("flagship")
    r = launch(wd)
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


def test_tiny_run_writes_everything_a_user_looks_at(full_run):
    summary = json.load(open(full_run / "summary.json"))
    assert summary["chunk"] == 3 and summary["step"] == 2 * 2 * 25  # 1 offline + 2 online chunks
    phases = [r["phase"] for r in records(full_run) if "wm/loss" in r]
    assert phases == ["offline", "online", "online"]
    for name in ("score", "losses", "world_model", "open_loop"):
        assert os.path.exists(full_run / "plots" / f"{name}.png"), name
    evals = [r for r in records(full_run) if "eval/odt_normalized_score" in r]
    assert evals and "eval/dreamer_normalized_score" in evals[-1]
    assert json.load(open(full_run / "config.json"))["experiment"] == "dreamer_odt"
    assert os.listdir(full_run / "tensorboard")


def test_resume_from_checkpoint_is_bit_exact(full_run, tmp_path):
    wd = tmp_path / "resumed"
    shutil.copytree(full_run, wd)
    shutil.rmtree(wd / "checkpoints" / "3")  # as if killed during chunk 3
    r = launch(wd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from chunk 2" in r.stderr
    original, resumed = records(full_run), records(wd)
    assert len(original) == len(resumed)
    strip = lambda rec: {k: v for k, v in rec.items() if k != "wall_seconds"}
    assert [strip(a) for a in original] == [strip(b) for b in resumed]


@pytest.mark.parametrize("override, message", [
    ("--config.loop.imagined_fraction=1.5", "loop.imagined_fraction=1.5 must be in [0, 1]"),
    ("--config.actor_critic.horizon=9", "actor_critic.horizon=9 (imagination) is longer than the replayed sequences"),
    ("--config.odt.context_len=7", "odt.context_len=7 is longer than the imagination horizon"),
    ("--config.env.name=cartpole", "env.name='cartpole' is not a known environment"),
    ("--config.loop.wm_batch_sizes=3", "wm_batch_sizes"),
    ("--config.loop.rtg_bootstrap=value", "loop.rtg_bootstrap='value' must be one of"),
])
def test_bad_config_fails_before_compiling_and_names_the_key(tmp_path, override, message):
    r = launch(tmp_path, override)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr[-2000:]
    assert not os.path.exists(tmp_path / "checkpoints")


def test_workdir_of_another_config_is_refused_and_kept(full_run):
    before = sorted(os.listdir(full_run / "checkpoints"))
    r = launch(full_run, "--config.loop.imagined_fraction=0.25")
    assert r.returncode != 0
    assert "different config" in r.stderr and "loop.imagined_fraction" in r.stderr
    assert sorted(os.listdir(full_run / "checkpoints")) == before
