"""Segment-aware causal attention: one function for every transformer in gdm_jax.

Conventions (shared by ODT, Dreamer, the LM and packed prefill):
- ``segment_ids`` are int32, ``0`` marks padding; tokens attend only to keys of the
  same (non-zero) segment.
- ``positions`` restart at 0 in every segment; causality is ``kv_pos <= q_pos``
  within a segment, so the same mask serves packed prefill and KV-cache decoding.
- Grouped-query attention: ``k``/``v`` may carry fewer heads than ``q`` (H % K == 0).
- Query rows with no visible key (padding) return zeros, never NaN.
"""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

BACKENDS = ("xla", "cudnn_or_xla")


def segment_positions(segment_ids_BxT: jax.Array) -> jax.Array:
    """Positions that restart at 0 at each new segment (padding gets 0)."""
    seg = segment_ids_BxT
    starts = jnp.concatenate(
        [jnp.ones_like(seg[:, :1], dtype=bool), seg[:, 1:] != seg[:, :-1]], axis=1)
    idx = jnp.broadcast_to(jnp.arange(seg.shape[1], dtype=jnp.int32), seg.shape)
    last_start = jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
    return jnp.where(seg > 0, idx - last_start, 0).astype(jnp.int32)


def attention_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                   q_positions: jax.Array, kv_positions: jax.Array,
                   causal: bool = True) -> jax.Array:
    """Boolean mask [B, 1, T, S]: same non-padding segment and (if causal) kv_pos <= q_pos."""
    same = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])
    same &= (kv_segment_ids[:, None, :] > 0) & (q_segment_ids[:, :, None] > 0)
    if causal:
        same &= kv_positions[:, None, :] <= q_positions[:, :, None]
    return same[:, None, :, :]


def _xla_attention(q, k, v, mask, scale):
    B, T, H, D = q.shape
    K = k.shape[2]
    g = H // K
    q = q.reshape(B, T, K, g, D)
    logits = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) * scale
    m = mask[:, :, None, :, :]  # [B,1,1,T,S]
    logits = jnp.where(m, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = jnp.where(m, probs, 0.0).astype(v.dtype)  # fully masked rows -> 0, not uniform
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(B, T, H, D)


def attention(q_BxTxHxD: jax.Array, k_BxSxKxD: jax.Array, v_BxSxKxD: jax.Array, *,
              q_segment_ids: Optional[jax.Array] = None,
              kv_segment_ids: Optional[jax.Array] = None,
              q_positions: Optional[jax.Array] = None,
              kv_positions: Optional[jax.Array] = None,
              causal: bool = True, backend: str = "xla") -> jax.Array:
    """Causal attention restricted to equal segment ids. Returns [B, T, H, D].

    Missing segment ids mean one segment per row; missing positions are derived from
    the segment ids (restarting per segment).
    """
    B, T, H, D = q_BxTxHxD.shape
    S, K = k_BxSxKxD.shape[1], k_BxSxKxD.shape[2]
    if H % K:
        raise ValueError(f"query heads ({H}) must be a multiple of kv heads ({K})")
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose from {BACKENDS}")
    if q_segment_ids is None:
        q_segment_ids = jnp.ones((B, T), jnp.int32)
    if kv_segment_ids is None:
        kv_segment_ids = jnp.ones((B, S), jnp.int32)
    if q_positions is None:
        q_positions = segment_positions(q_segment_ids)
    if kv_positions is None:
        kv_positions = segment_positions(kv_segment_ids)
    mask = attention_mask(q_segment_ids, kv_segment_ids, q_positions, kv_positions, causal)
    scale = 1.0 / math.sqrt(D)  # a Python float: stays static under jit
    if backend == "cudnn_or_xla":
        # jax.nn.dot_product_attention picks cuDNN flash attention on GPU, XLA elsewhere.
        out = jax.nn.dot_product_attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD,
                                           mask=mask, scale=scale)
        visible = jnp.any(mask, axis=-1)[:, 0, :, None, None]  # [B,T,1,1]
        return jnp.where(visible, out, 0.0).astype(q_BxTxHxD.dtype)
    return _xla_attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, mask, scale).astype(q_BxTxHxD.dtype)
