"""Online Decision Transformer network: (rtg, state, action) tokens -> tanh-Gaussian action head."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from gdm_jax.nn.distributions import bounded_log_std
from gdm_jax.nn.transformer import Transformer, TransformerConfig

TOKENS_PER_STEP = 3  # return-to-go, state, action


@dataclasses.dataclass(frozen=True)
class ODTModelConfig:
    """Shapes and hyperparameters of the ODT network."""
    obs_dim: int
    action_dim: int
    context_len: int = 20
    max_ep_len: int = 1000
    transformer: TransformerConfig = TransformerConfig()
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    def __post_init__(self):
        for name in ("obs_dim", "action_dim", "context_len", "max_ep_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"ODTModelConfig.{name}={getattr(self, name)} must be >= 1")
        if self.log_std_min >= self.log_std_max:
            raise ValueError(f"ODTModelConfig.log_std_min={self.log_std_min} must be < "
                             f"log_std_max={self.log_std_max}")


class DecisionTransformer(nn.Module):
    """Predicts a_t from the state token s_t given (R_<=t, s_<=t, a_<t) inside the window."""
    config: ODTModelConfig

    @nn.compact
    def __call__(self, rtg_BxK: jax.Array, obs_BxKxO: jax.Array, action_BxKxA: jax.Array,
                 timestep_BxK: jax.Array, mask_BxK: jax.Array,
                 deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """Returns (mean_BxKxA, log_std_BxKxA) of the pre-tanh Gaussian at each step."""
        cfg = self.config
        B, K = rtg_BxK.shape
        E = cfg.transformer.embed_dim
        if K > cfg.context_len:
            raise ValueError(f"window length {K} exceeds ODTModelConfig.context_len={cfg.context_len}")
        t_emb = nn.Embed(cfg.max_ep_len, E, name="embed_timestep")(
            jnp.clip(timestep_BxK, 0, cfg.max_ep_len - 1))
        r_emb = nn.Dense(E, name="embed_return")(rtg_BxK[..., None]) + t_emb
        s_emb = nn.Dense(E, name="embed_state")(obs_BxKxO) + t_emb
        a_emb = nn.Dense(E, name="embed_action")(action_BxKxA) + t_emb
        # Interleave to R_1, s_1, a_1, R_2, ... so causal order matches decision order.
        tokens = jnp.stack([r_emb, s_emb, a_emb], axis=2).reshape(B, TOKENS_PER_STEP * K, E)
        tokens = nn.LayerNorm(name="embed_ln")(tokens)
        seg_Bx3K = jnp.repeat(mask_BxK.astype(jnp.int32), TOKENS_PER_STEP, axis=1)
        # Positions count tokens within the valid run, so padding on either side is harmless.
        pos_Bx3K = jnp.maximum(jnp.cumsum(seg_Bx3K, axis=1) - 1, 0).astype(jnp.int32)
        h = Transformer(cfg.transformer, name="transformer")(tokens, seg_Bx3K, pos_Bx3K,
                                                             deterministic)
        h_state_BxKxE = h.reshape(B, K, TOKENS_PER_STEP, E)[:, :, 1]
        out = nn.Dense(2 * cfg.action_dim, name="action_head")(h_state_BxKxE)
        mean, raw_log_std = jnp.split(out, 2, axis=-1)
        return mean, bounded_log_std(raw_log_std, cfg.log_std_min, cfg.log_std_max)
