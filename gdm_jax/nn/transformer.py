"""GPT-style causal transformer (pre-LayerNorm blocks) on the shared segment-aware attention."""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gdm_jax.nn.attention import BACKENDS, attention, segment_positions


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters of a causal transformer stack."""
    num_layers: int = 3
    num_heads: int = 1
    embed_dim: int = 128
    mlp_ratio: int = 4
    dropout_rate: float = 0.1
    causal: bool = True
    attention_backend: str = "xla"

    def __post_init__(self):
        for name in ("num_layers", "num_heads", "embed_dim", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"TransformerConfig.{name}={getattr(self, name)} must be >= 1")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"TransformerConfig.embed_dim={self.embed_dim} is not divisible by "
                             f"num_heads={self.num_heads}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"TransformerConfig.dropout_rate={self.dropout_rate} must be in [0, 1)")
        if self.attention_backend not in BACKENDS:
            raise ValueError(f"TransformerConfig.attention_backend={self.attention_backend!r}; "
                             f"choose from {BACKENDS}")


class SelfAttention(nn.Module):
    """Multi-head self-attention restricted to equal segment ids."""
    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BxTxE: jax.Array, segment_ids_BxT: jax.Array, positions_BxT: jax.Array,
                 deterministic: bool) -> jax.Array:
        cfg = self.config
        B, T, E = x_BxTxE.shape
        D = E // cfg.num_heads
        qkv = nn.Dense(3 * E, name="qkv")(x_BxTxE).reshape(B, T, 3, cfg.num_heads, D)
        out_BxTxHxD = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2],
                                q_segment_ids=segment_ids_BxT, kv_segment_ids=segment_ids_BxT,
                                q_positions=positions_BxT, kv_positions=positions_BxT,
                                causal=cfg.causal, backend=cfg.attention_backend)
        out_BxTxE = nn.Dense(E, name="out")(out_BxTxHxD.reshape(B, T, E))
        return nn.Dropout(cfg.dropout_rate)(out_BxTxE, deterministic=deterministic)


class TransformerBlock(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + mlp(LN(x))."""
    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BxTxE: jax.Array, segment_ids_BxT: jax.Array, positions_BxT: jax.Array,
                 deterministic: bool) -> jax.Array:
        cfg = self.config
        E = x_BxTxE.shape[-1]
        h = nn.LayerNorm(name="ln_attn")(x_BxTxE)
        x_BxTxE = x_BxTxE + SelfAttention(cfg, name="attn")(h, segment_ids_BxT, positions_BxT,
                                                            deterministic)
        h = nn.LayerNorm(name="ln_mlp")(x_BxTxE)
        h = nn.Dense(cfg.mlp_ratio * E, name="mlp_in")(h)
        h = nn.Dense(E, name="mlp_out")(nn.gelu(h))
        return x_BxTxE + nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)


class Transformer(nn.Module):
    """Stack of causal blocks with a final LayerNorm; input and output are [B, T, E]."""
    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BxTxE: jax.Array, segment_ids_BxT: Optional[jax.Array] = None,
                 positions_BxT: Optional[jax.Array] = None,
                 deterministic: bool = True) -> jax.Array:
        cfg = self.config
        if x_BxTxE.shape[-1] != cfg.embed_dim:
            raise ValueError(f"input width {x_BxTxE.shape[-1]} != TransformerConfig.embed_dim="
                             f"{cfg.embed_dim}")
        B, T, _ = x_BxTxE.shape
        if segment_ids_BxT is None:
            segment_ids_BxT = jnp.ones((B, T), jnp.int32)
        if positions_BxT is None:
            positions_BxT = segment_positions(segment_ids_BxT)
        x_BxTxE = nn.Dropout(cfg.dropout_rate)(x_BxTxE, deterministic=deterministic)
        for i in range(cfg.num_layers):
            x_BxTxE = TransformerBlock(cfg, name=f"block_{i}")(x_BxTxE, segment_ids_BxT,
                                                                positions_BxT, deterministic)
        return nn.LayerNorm(name="ln_final")(x_BxTxE)
