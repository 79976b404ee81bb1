"""One fused step (world model, imagination, actor-critic, ODT) learns; 8 devices equal 1."""
import json
import os
import subprocess
import sys

import jax
import numpy as np

from fused_common import setup, tiny_config
from gdm_jax.dreamer_odt import train as loop_lib

HERE = os.path.dirname(os.path.abspath(__file__))


def test_fused_step_reduces_world_model_and_odt_losses():
    config = tiny_config(imagined_fraction=0.5, rtg_bootstrap="return_head")  # the critic path runs in the launch tests
    config.optim.wm_lr = 3e-3  # a few dozen steps must show progress
    agent, model, hp, cfg, replay, learners = setup(config)
    step = jax.jit(lambda l, k: loop_lib.fused_step(agent, model, hp, cfg, replay, l, k))
    history = []
    for i in range(40):
        learners, metrics = step(learners, jax.random.key(i))
        history.append({k: float(metrics[k]) for k in ("wm/loss", "odt/nll", "odt/imagined_rtg0",
                                                        "return_head/abs_err")})
    first = {k: np.mean([h[k] for h in history[:4]]) for k in history[0]}
    last = {k: np.mean([h[k] for h in history[-4:]]) for k in history[0]}
    assert all(np.isfinite(v) for h in history for v in h.values())
    assert last["wm/loss"] < 0.8 * first["wm/loss"], (first, last)
    assert last["odt/nll"] < first["odt/nll"] - 0.5, (first, last)
    # The return-to-go head fits the real hindsight labels of the replayed sequences.
    assert last["return_head/abs_err"] < 0.75 * first["return_head/abs_err"], (first, last)


def test_data_parallel_on_8_devices_equals_1_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": os.pathsep.join([HERE, os.path.dirname(os.path.dirname(HERE))])}
    r = subprocess.run([sys.executable, os.path.join(HERE, "dp_check.py")], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    assert result["max_param_diff"] < 1e-4, result
    assert result["max_metric_rel_diff"] < 1e-4, result
