"""A small real experiment for run-loop tests: noisy linear regression by SGD, chunked on device.

Usage: python toy_run.py WORKDIR NUM_CHUNKS [nan_at_chunk]
Writes WORKDIR/final_params.npy at the end.
"""
import os
import sys

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gdm_jax.core.runner import Experiment, Phase, run_experiment


@flax.struct.dataclass
class ToyState:
    w: jax.Array
    rng: jax.Array
    step: jax.Array


def make(num_chunks: int, nan_at: int = -1, lr: float = 0.01, steps: int = 50):
    w_true = jnp.linspace(-1.0, 1.0, 64)

    def init(key):
        return ToyState(w=jnp.zeros(64), rng=key, step=jnp.zeros((), jnp.int32))

    def update(state, _):
        rng, k1, k2 = jax.random.split(state.rng, 3)
        x = jax.random.normal(k1, (256, 64))
        y = x @ w_true + 0.1 * jax.random.normal(k2, (256,))
        loss, g = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(state.w)
        loss = jnp.where(state.step == nan_at * steps, jnp.nan, loss)
        return ToyState(w=state.w - lr * g, rng=rng, step=state.step + 1), loss

    @jax.jit
    def chunk(state):
        state, losses = jax.lax.scan(update, state, None, length=steps)
        return state, {"loss": losses.mean(), "return": -losses[-1]}

    def evaluate(state):
        return {"w_error": float(jnp.abs(state.w - w_true).max())}

    return Experiment(name="toy", init_state=init,
                      phases=(Phase("warmup", chunk, 2, env_steps_per_chunk=0, updates_per_chunk=steps),
                              Phase("main", chunk, num_chunks - 2, env_steps_per_chunk=100,
                                    updates_per_chunk=steps)),
                      evaluate=evaluate, plots={"curves": ("loss", "eval/w_error")})


def config(seed: int = 0, lr: float = 0.01):
    c = ml_collections.ConfigDict()
    c.experiment = "toy"
    c.seed = seed
    c.lr = lr
    c.run = ml_collections.ConfigDict(dict(checkpoint_every=3, keep_checkpoints=2, eval_every=4))
    return c


if __name__ == "__main__":
    workdir, n = sys.argv[1], int(sys.argv[2])
    nan_at = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    lr = float(os.environ.get("TOY_LR", "0.01"))
    steps = int(os.environ.get("TOY_STEPS", "50"))  # more steps = slower chunks, to kill mid-run
    summary = run_experiment(make(n, nan_at, lr, steps), config(lr=lr), workdir)
    if summary["stopped"] is None:
        from gdm_jax.core.checkpoint import Checkpointer
        state, _ = Checkpointer(workdir).restore(make(n).init_state(jax.random.key(0)))
        np.save(os.path.join(workdir, "final_params.npy"), np.asarray(state.w))
    sys.exit(143 if summary["stopped"] == "SIGTERM" else 0)
