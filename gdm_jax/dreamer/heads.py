"""DreamerV3 output transforms and small MLP heads: symlog, two-hot bins, encoder, decoders."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def symlog(x: jax.Array) -> jax.Array:
    """sign(x) * log(1 + |x|): compresses large magnitudes, identity-like near 0."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    """Inverse of symlog."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def symlog_bins(num_bins: int = 255, low: float = -20.0, high: float = 20.0) -> jax.Array:
    """Evenly spaced bin centres in symlog space."""
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    return jnp.linspace(low, high, num_bins, dtype=jnp.float32)


def twohot_encode(y: jax.Array, bins_K: jax.Array) -> jax.Array:
    """Two-hot weights [..., K] whose expectation over bins_K equals y (clipped to the bin range)."""
    y = jnp.clip(y, bins_K[0], bins_K[-1])
    num_bins = bins_K.shape[0]
    # Index of the bin just below y; the top bin is handled by clipping the pair to [K-2, K-1].
    below = jnp.clip(jnp.searchsorted(bins_K, y, side="right") - 1, 0, num_bins - 2)
    above = below + 1
    lo, hi = bins_K[below], bins_K[above]
    w_above = (y - lo) / (hi - lo)
    w_below = 1.0 - w_above
    return (jax.nn.one_hot(below, num_bins) * w_below[..., None]
            + jax.nn.one_hot(above, num_bins) * w_above[..., None])


def twohot_decode(logits_K: jax.Array, bins_K: jax.Array) -> jax.Array:
    """Expected value in real space: symexp of the softmax-weighted symlog bins."""
    return symexp(jnp.sum(jax.nn.softmax(logits_K, axis=-1) * bins_K, axis=-1))


def twohot_loss(logits_K: jax.Array, target: jax.Array, bins_K: jax.Array) -> jax.Array:
    """Cross-entropy of the logits against the two-hot symlog encoding of real-valued targets."""
    weights = twohot_encode(symlog(target), bins_K)
    return -jnp.sum(weights * jax.nn.log_softmax(logits_K, axis=-1), axis=-1)


class MLP(nn.Module):
    """Dense -> LayerNorm -> SiLU blocks, optionally followed by a linear output layer."""
    hidden: Sequence[int]
    out_dim: int | None = None
    zero_init_out: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width, use_bias=False)(x)
            x = nn.LayerNorm()(x)
            x = nn.silu(x)
        if self.out_dim is not None:
            # Zero-initialised reward/critic outputs start at a prediction of 0 (DreamerV3),
            # avoiding huge early value estimates from random two-hot logits.
            init = nn.initializers.zeros if self.zero_init_out else nn.initializers.lecun_normal()
            x = nn.Dense(self.out_dim, kernel_init=init)(x)
        return x


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Widths of the encoder/decoder/reward/continue MLPs."""
    hidden: int = 256
    layers: int = 2
    num_bins: int = 255


class VectorEncoder(nn.Module):
    """Embeds vector observations after symlog squashing."""
    cfg: HeadConfig

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP((self.cfg.hidden,) * self.cfg.layers)(symlog(obs))


class VectorDecoder(nn.Module):
    """Predicts symlog(obs) from model features."""
    cfg: HeadConfig
    obs_dim: int

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        return MLP((self.cfg.hidden,) * self.cfg.layers, self.obs_dim)(feat)


class TwoHotHead(nn.Module):
    """Logits over symlog bins for a real-valued scalar (reward or value)."""
    cfg: HeadConfig

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        return MLP((self.cfg.hidden,) * self.cfg.layers, self.cfg.num_bins, zero_init_out=True)(feat)


class ContinueHead(nn.Module):
    """Bernoulli logit that the episode continues after this transition."""
    cfg: HeadConfig

    @nn.compact
    def __call__(self, feat: jax.Array) -> jax.Array:
        return MLP((self.cfg.hidden,) * self.cfg.layers, 1)(feat)[..., 0]
