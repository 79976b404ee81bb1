"""Shared setup for fused-step tests: the tiny dreamer_odt config on a replay of real hopper data."""
import importlib.util
import os

import jax
import numpy as np

from gdm_jax.data import replay as replay_lib
from gdm_jax.data.trajectory import make_trajectory, trajectories_from_padded
from gdm_jax.dreamer_odt import run as run_lib
from gdm_jax.dreamer_odt import train as loop_lib
from gdm_jax.envs.datasets import load_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(**loop_overrides):
    spec = importlib.util.spec_from_file_location("dreamer_odt_config", os.path.join(ROOT, "configs", "dreamer_odt.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    config.loop.update(loop_overrides)
    return config


def setup(config):
    """(agent, model, hp, cfg, replay, learners) with the replay holding real hopper trajectories."""
    env, agent, model, hp, cfg, _ = run_lib.build(config)
    L = config.env.episode_length
    trajs = [make_trajectory(t.obs[:L], t.action[:L], t.reward[:L])
             for t in trajectories_from_padded(load_dataset("hopper", "spring", "medium"))]
    trajs = [t for t in trajs if t.length >= config.loop.wm_seq_len][:12]
    replay = replay_lib.replay_from_trajectories(trajs, 16, L, cfg.num_envs)
    state = loop_lib.init_state(agent, model, hp, cfg, env, 16, jax.random.key(0),
                                np.zeros(env.obs_size, np.float32), np.ones(env.obs_size, np.float32))
    return agent, model, hp, cfg, replay, (state.dreamer, state.odt, state.ret)
