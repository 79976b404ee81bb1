"""Imagined trajectories -> ODT training windows with bootstrapped return-to-go."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def imagined_return_to_go(rewards_HxN: jax.Array, continues_HxN: jax.Array,
                          bootstrap_N: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Undiscounted RTG of every imagined step, bootstrapped with a value at the horizon.

    A predicted termination (continue < 0.5) ends the imagined episode: later steps are
    masked out and the bootstrap is dropped. Returns ``(rtg_HxN, alive_HxN)`` where
    ``alive[t]`` says step t still belongs to the episode.
    """
    ends_HxN = continues_HxN < 0.5
    alive_HxN = jnp.cumprod(jnp.concatenate(
        [jnp.ones_like(ends_HxN[:1]), ~ends_HxN[:-1]], axis=0).astype(jnp.float32), axis=0)
    alive_after_N = alive_HxN[-1] * (~ends_HxN[-1]).astype(jnp.float32)

    def back(acc_N, x):
        r_N, alive_N = x
        acc_N = alive_N * (r_N + acc_N)
        return acc_N, acc_N

    _, rtg_HxN = jax.lax.scan(back, alive_after_N * bootstrap_N, (rewards_HxN, alive_HxN),
                              reverse=True)
    return rtg_HxN, alive_HxN


def imagined_windows(obs_Hp1xNxO: jax.Array, actions_HxNxA: jax.Array, rewards_HxN: jax.Array,
                     continues_HxN: jax.Array, bootstrap_N: jax.Array, start_timestep_N: jax.Array,
                     context_len: int, max_timestep: int) -> dict:
    """The first ``context_len`` imagined steps per start as an ODT batch (batch-major).

    ``obs[t]`` is the decoded observation at which ``actions[t]`` was taken; ``rtg[t]``
    counts the predicted rewards from t to the horizon plus the critic's value there.
    Keys match ``gdm_jax.data.replay.sample_windows``. ``context_len`` is static.
    """
    rtg_HxN, alive_HxN = imagined_return_to_go(rewards_HxN, continues_HxN, bootstrap_N)
    K = context_len
    steps = jnp.arange(K, dtype=jnp.int32)
    timestep_NxK = jnp.minimum(start_timestep_N[:, None] + steps[None, :], max_timestep - 1)
    bm = lambda x: jnp.swapaxes(x[:K], 0, 1)  # time-major [H, N, ...] -> [N, K, ...]
    mask_NxK = bm(alive_HxN)
    zero_pad = lambda x: x * mask_NxK.reshape(mask_NxK.shape + (1,) * (x.ndim - 2))
    return {"obs": zero_pad(bm(obs_Hp1xNxO)), "action": zero_pad(bm(actions_HxNxA)),
            "rtg": zero_pad(bm(rtg_HxN)), "reward": zero_pad(bm(rewards_HxN)),
            "timestep": jnp.where(mask_NxK > 0, timestep_NxK, 0).astype(jnp.int32),
            "mask": mask_NxK}
