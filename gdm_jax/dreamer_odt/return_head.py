"""A return-to-go head: the undiscounted return still to come, from a model state and its timestep.

The ODT is conditioned on undiscounted return-to-go up to the episode's end (hindsight
labels of whole real trajectories), while Dreamer's critic predicts a discounted value
(gamma = 0.99: an effective horizon of ~100 steps). Bootstrapping imagined windows with the
critic therefore labels them with returns several times smaller than real windows from
the same states on 1000-step tasks, so imagined data only ever teach the ODT what to do
when asked for a low return. This head regresses the real hindsight return-to-go of the
replayed sequences (a Monte-Carlo target, two-hot over symlog bins) from the world
model's posterior features (no gradient into the world model) and the timestep, which
gives imagined windows labels on the same scale as real ones.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from gdm_jax.dreamer import heads
from gdm_jax.dreamer.world_model import make_optimizer


@struct.dataclass
class ReturnHeadState:
    params: dict
    opt: optax.OptState


class ReturnHead:
    """Two-hot symlog regression of return-to-go on (features, timestep / episode length)."""

    def __init__(self, hidden: int, layers: int, bins_K: jax.Array, max_ep_len: int,
                 learning_rate: float, grad_clip: float = 100.0):
        self.net = heads.MLP((hidden,) * layers, int(bins_K.shape[0]), zero_init_out=True)
        self.bins = bins_K
        self.max_ep_len = max_ep_len
        self.opt = make_optimizer(learning_rate, grad_clip)

    def _inputs(self, feat: jax.Array, timestep: jax.Array) -> jax.Array:
        frac = timestep.astype(jnp.float32)[..., None] / self.max_ep_len
        return jnp.concatenate([jax.lax.stop_gradient(feat), frac, 1.0 - frac], axis=-1)

    def init(self, key: jax.Array, feat_dim: int) -> ReturnHeadState:
        params = self.net.init(key, jnp.zeros((1, feat_dim + 2)))["params"]
        return ReturnHeadState(params=params, opt=self.opt.init(params))

    def predict(self, params: dict, feat: jax.Array, timestep: jax.Array) -> jax.Array:
        """Expected return-to-go at ``timestep`` (real scale)."""
        logits = self.net.apply({"params": params}, self._inputs(feat, timestep))
        return heads.twohot_decode(logits, self.bins)

    def loss(self, params: dict, feat: jax.Array, timestep: jax.Array, rtg: jax.Array,
             mask: jax.Array) -> tuple[jax.Array, dict]:
        logits = self.net.apply({"params": params}, self._inputs(feat, timestep))
        mask = mask.astype(jnp.float32)
        mean = lambda x: jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        pred = heads.twohot_decode(logits, self.bins)
        loss = mean(heads.twohot_loss(logits, rtg, self.bins))
        return loss, {"return_head/loss": loss, "return_head/abs_err": mean(jnp.abs(pred - rtg)),
                      "return_head/target_mean": mean(rtg)}

    def update(self, state: ReturnHeadState, feat: jax.Array, timestep: jax.Array,
               rtg: jax.Array, mask: jax.Array) -> tuple[ReturnHeadState, dict]:
        grads, metrics = jax.grad(self.loss, has_aux=True)(state.params, feat, timestep, rtg, mask)
        updates, opt = self.opt.update(grads, state.opt, state.params)
        return ReturnHeadState(optax.apply_updates(state.params, updates), opt), metrics
