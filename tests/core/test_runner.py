"""The run loop: exact resume (also after SIGKILL), SIGTERM checkpoints, guards on bad input."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOY = os.path.join(HERE, "toy_run.py")


def run_toy(workdir, chunks, *extra, env=None, wait=True):
    full_env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(HERE)), **(env or {})}
    cmd = [sys.executable, TOY, str(workdir), str(chunks), *map(str, extra)]
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=300)


def ckpt_steps(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 12-chunk run."""
    wd = tmp_path_factory.mktemp("ref")
    r = run_toy(wd, 12)
    assert r.returncode == 0, r.stderr
    return wd


def test_run_writes_metrics_plots_summary_and_learns(reference):
    records = [json.loads(l) for l in open(reference / "metrics.jsonl")]
    train = [r for r in records if "loss" in r]
    assert [r["chunk"] for r in train] == list(range(1, 13))
    assert [r["step"] for r in train][:3] == [0, 0, 100]  # warmup phase has no env steps
    assert train[-1]["loss"] < 0.1 * train[0]["loss"]
    assert os.path.exists(reference / "plots" / "curves.png")
    assert os.listdir(reference / "tensorboard")
    summary = json.load(open(reference / "summary.json"))
    assert summary["chunk"] == 12 and summary["eval"]["eval/w_error"] < 0.2


def test_sigkill_mid_chunk_then_resume_matches_uninterrupted(tmp_path):
    env = {"TOY_STEPS": "1500"}
    ref = tmp_path / "ref"
    assert run_toy(ref, 40, env=env).returncode == 0
    wd = tmp_path / "killed"
    p = run_toy(wd, 40, env=env, wait=False)
    deadline = time.time() + 240
    while time.time() < deadline and (not ckpt_steps(wd) or ckpt_steps(wd)[-1] < 9):
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = ckpt_steps(wd)[-1]
    assert killed_at < 40
    r = run_toy(wd, 40, env=env)
    assert r.returncode == 0, r.stderr
    assert f"resumed from chunk {killed_at}" in r.stderr
    np.testing.assert_array_equal(np.load(wd / "final_params.npy"), np.load(ref / "final_params.npy"))
    chunks = [json.loads(l)["chunk"] for l in open(wd / "metrics.jsonl") if "loss" in l]
    assert chunks == list(range(1, 41)), "metrics after a resume must not repeat or skip chunks"


def test_sigterm_saves_checkpoint_then_resume_matches(tmp_path):
    env = {"TOY_STEPS": "1500"}
    ref = tmp_path / "ref"
    assert run_toy(ref, 30, env=env).returncode == 0
    wd = tmp_path / "term"
    p = run_toy(wd, 30, env=env, wait=False)
    deadline = time.time() + 240
    while time.time() < deadline and (not ckpt_steps(wd) or ckpt_steps(wd)[-1] < 4):
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "SIGTERM: saved checkpoint" in err
    stopped_at = ckpt_steps(wd)[-1]
    assert 4 <= stopped_at < 30
    assert run_toy(wd, 30, env=env).returncode == 0
    np.testing.assert_array_equal(np.load(wd / "final_params.npy"), np.load(ref / "final_params.npy"))


def test_resume_with_a_different_config_fails_and_keeps_checkpoints(reference, tmp_path):
    before = {p: os.path.getmtime(os.path.join(reference, "checkpoints", str(p))) for p in ckpt_steps(reference)}
    r = run_toy(reference, 12, env={"TOY_LR": "0.5"})
    assert r.returncode != 0
    assert "different config" in r.stderr and "lr" in r.stderr
    after = {p: os.path.getmtime(os.path.join(reference, "checkpoints", str(p))) for p in ckpt_steps(reference)}
    assert before == after


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    r = run_toy(tmp_path, 12, 5)  # loss is NaN in chunk 6 (0-based 5)
    assert r.returncode != 0
    assert "loss=nan at chunk 6" in r.stderr
    assert ckpt_steps(tmp_path) == [3]


def test_corrupt_checkpoint_is_named_and_left_alone(tmp_path):
    assert run_toy(tmp_path, 3).returncode == 0
    state_dir = tmp_path / "checkpoints" / "3" / "state"
    victims = [os.path.join(d, f) for d, _, fs in os.walk(state_dir) for f in fs]
    for v in victims:
        with open(v, "wb") as f:
            f.write(b"garbage")
    r = run_toy(tmp_path, 6)
    assert r.returncode != 0
    assert "checkpoints/3 could not be restored" in r.stderr
    assert ckpt_steps(tmp_path) == [3]
