"""World-model quality: open-loop prediction error of imagined vs real trajectories, and its plot."""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.dreamer import rssm
from gdm_jax.dreamer import world_model as wm_lib


def open_loop_error(wm: wm_lib.WorldModel, params: dict, batch: Mapping[str, jax.Array],
                    context: int, horizon: int, key: jax.Array) -> dict[str, jax.Array]:
    """Per-step errors [horizon] of predictions ``1..horizon`` steps past a ``context``-step prefix.

    The model observes ``obs[:context]``, then imagines with the real actions; imagined step
    ``k`` is compared with ``obs[context + k - 1]`` and ``reward[context + k - 1]``. Windows
    with an episode start inside the predicted part are left out (the model cannot foresee
    a reset). ``copy_obs_mse`` is the error of repeating the last observed obs, a
    baseline any useful model must beat. ``context`` and ``horizon`` are static.
    """
    obs, action = batch["obs"], batch["action"]
    if obs.shape[1] < context + horizon:
        raise ValueError(f"sequence length {obs.shape[1]} < context {context} + horizon {horizon}")
    if context < 1 or horizon < 1:
        raise ValueError(f"context and horizon must be >= 1, got {context}, {horizon}")
    obs_key, img_key = jax.random.split(key)
    is_first = batch["is_first"].at[:, 0].set(True)
    prefix_T = lambda x: wm_lib.time_major(x[:, :context])
    posts, _ = wm.observe(params, wm.initial(obs.shape[0]), prefix_T(obs),
                          prefix_T(wm_lib.previous_actions(action)), prefix_T(is_first), obs_key)
    last = jax.tree.map(lambda x: x[-1], posts)
    real_actions = wm_lib.time_major(action[:, context - 1:context + horizon - 1])
    keys = jax.random.split(img_key, horizon)

    def step(state, inputs):
        act, k = inputs
        nxt = wm.img_step(params, state, act, k)
        return nxt, nxt

    _, states = jax.lax.scan(step, last, (real_actions, keys))
    feats = rssm.features(states)  # [H, B, F], step k-1 predicts time context + k - 1
    window = slice(context, context + horizon)
    target_obs = wm_lib.time_major(obs[:, window])
    target_rew = wm_lib.time_major(batch["reward"][:, window])
    pred_obs = wm.decode_obs(params, feats)
    pred_rew = wm.predict_reward(params, feats, wm_lib.time_major(action[:, window]))
    # Whole rows are kept or dropped so that every horizon averages over the same windows.
    row_ok = ~jnp.any(batch["is_first"][:, window], axis=1)
    valid = jnp.broadcast_to(row_ok[None, :], target_rew.shape).astype(jnp.float32)
    count = jnp.maximum(valid.sum(1), 1.0)
    per_step = lambda err: jnp.sum(err * valid, 1) / count
    last_obs = obs[:, context - 1][None]
    return {
        "obs_mse": per_step(jnp.mean(jnp.square(pred_obs - target_obs), -1)),
        "reward_abs": per_step(jnp.abs(pred_rew - target_rew)),
        "copy_obs_mse": per_step(jnp.mean(jnp.square(last_obs - target_obs), -1)),
        "valid_fraction": valid.mean(1),
    }


def plot_open_loop(errors: Mapping[str, np.ndarray], path: str, title: str = "open-loop error") -> None:
    """Two panels vs prediction step: observation MSE (with copy-last baseline) and reward error."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(errors["obs_mse"]) + 1)
    fig, (ax_obs, ax_rew) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_obs.plot(steps, errors["obs_mse"], marker="o", ms=3, label="world model")
    ax_obs.plot(steps, errors["copy_obs_mse"], ls="--", label="repeat last obs")
    ax_obs.set_xlabel("steps ahead (open loop)")
    ax_obs.set_ylabel("obs MSE")
    ax_obs.set_yscale("log")
    ax_obs.legend()
    ax_rew.plot(steps, errors["reward_abs"], marker="o", ms=3, color="C2")
    ax_rew.set_xlabel("steps ahead (open loop)")
    ax_rew.set_ylabel("|reward error|")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
