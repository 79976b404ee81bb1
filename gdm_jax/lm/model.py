"""Llama-family decoder as pure functions over a params pytree.

Params layout (a plain nested dict; layer weights stacked on a leading L axis so the
layers run as one `lax.scan`; matrices are stored [in, out] so `x @ w` applies them):

    {"embed":      [V, D],
     "layers": {"attn_norm": [L, D],
                "wq": [L, D, H*Dh], "wk": [L, D, K*Dh], "wv": [L, D, K*Dh],
                "wo": [L, H*Dh, D],
                "mlp_norm": [L, D],
                "w_gate": [L, D, F], "w_up": [L, D, F], "w_down": [L, F, D]},
     "final_norm": [D],
     "lm_head":    [D, V]}   # only when cfg.tie_embeddings is False

Q/K columns use the Hugging Face rotate-half RoPE layout (first half of each head's
dims pairs with the second half).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.lm.config import LlamaConfig
from gdm_jax.lm.kv_cache import KVCache
from gdm_jax.nn.attention import attention

Params = dict


def param_shapes(cfg: LlamaConfig) -> dict:
    """The shape of every leaf of a params pytree for `cfg` (same nesting as params)."""
    L, D, F, Dh = cfg.n_layers, cfg.dim, cfg.hidden_dim, cfg.head_dim
    shapes = {
        "embed": (cfg.vocab_size, D),
        "layers": {
            "attn_norm": (L, D),
            "wq": (L, D, cfg.n_heads * Dh),
            "wk": (L, D, cfg.n_kv_heads * Dh),
            "wv": (L, D, cfg.n_kv_heads * Dh),
            "wo": (L, cfg.n_heads * Dh, D),
            "mlp_norm": (L, D),
            "w_gate": (L, D, F),
            "w_up": (L, D, F),
            "w_down": (L, F, D),
        },
        "final_norm": (D,),
    }
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (D, cfg.vocab_size)
    return shapes


def _named_leaves(tree) -> dict:
    """{'["layers"]["wq"]': leaf, ...} with shape tuples treated as leaves."""
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in flat}


def check_params(cfg: LlamaConfig, params: Params) -> None:
    """Raise ValueError naming the first missing, extra or mis-shaped leaf."""
    want = _named_leaves(param_shapes(cfg))
    got = {name: tuple(x.shape) for name, x in _named_leaves(params).items()}
    for name in sorted(set(want) - set(got)):
        raise ValueError(f"params is missing tensor {name} (expected shape {want[name]})")
    for name in sorted(set(got) - set(want)):
        raise ValueError(f"params has unexpected tensor {name} with shape {got[name]}")
    for name, shape in want.items():
        if got[name] != shape:
            raise ValueError(f"tensor {name} has shape {got[name]}, config expects {shape}")


def init_params(cfg: LlamaConfig, key: jax.Array, scale: float = 0.02) -> Params:
    """Random params (normal(0, scale) matrices, unit norms) in cfg.dtype."""
    dtype = jnp.dtype(cfg.dtype)
    shapes = param_shapes(cfg)
    named = _named_leaves(shapes)
    keys = dict(zip(named, jax.random.split(key, len(named))))

    def init(name, shape):
        if "norm" in name:
            return jnp.ones(shape, dtype)
        return (scale * jax.random.normal(keys[name], shape, jnp.float32)).astype(dtype)

    flat = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))
    leaves = [init(jax.tree_util.keystr(path), shape) for path, shape in flat[0]]
    return jax.tree_util.tree_unflatten(flat[1], leaves)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm computed in float32, scaled in the input dtype (as HF Llama does)."""
    xf = x.astype(jnp.float32)
    normed = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * normed.astype(x.dtype)


def rope_tables(positions_BxT: jax.Array, head_dim: int, theta: float):
    """cos/sin tables [B, T, 1, Dh] for rotate-half RoPE at explicit positions."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_BxTxHxD: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate each head's (i, i + Dh/2) pairs by the position angle."""
    half = x_BxTxHxD.shape[-1] // 2
    x1, x2 = x_BxTxHxD[..., :half], x_BxTxHxD[..., half:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    out = x_BxTxHxD.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin
    return out.astype(x_BxTxHxD.dtype)


def check_positions(cfg: LlamaConfig, positions_BxT) -> None:
    """Raise ValueError if a concrete position reaches max_seq_len (traced values pass unchecked).

    Positions restart per prompt in packed rows, so the bound is on positions, not on
    the row length: a packed row may hold more than max_seq_len tokens.
    """
    if isinstance(positions_BxT, jax.core.Tracer):
        return
    positions = np.asarray(positions_BxT)
    if positions.size and int(positions.max()) >= cfg.max_seq_len:
        b, t = np.unravel_index(int(positions.argmax()), positions.shape)
        raise ValueError(f"position {int(positions.max())} (row {b}, column {t}) is beyond the "
                         f"model's max_seq_len={cfg.max_seq_len}")
    if positions.size and int(positions.min()) < 0:
        raise ValueError(f"positions must be >= 0, got {int(positions.min())}")


def _check_inputs(cfg, tokens, positions, segment_ids, cache):
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [B, T], got shape {tokens.shape}")
    if positions.shape != tokens.shape or segment_ids.shape != tokens.shape:
        raise ValueError(f"tokens {tokens.shape}, positions {positions.shape} and "
                         f"segment_ids {segment_ids.shape} must share one [B, T] shape")
    B, T = tokens.shape
    check_positions(cfg, positions)
    if cache is not None:
        L, cb, S, K, Dh = cache.k.shape
        if (L, K, Dh) != (cfg.n_layers, cfg.n_kv_heads, cfg.head_dim):
            raise ValueError(f"cache k shape {cache.k.shape} does not match config "
                             f"(n_layers={cfg.n_layers}, n_kv_heads={cfg.n_kv_heads}, "
                             f"head_dim={cfg.head_dim})")
        if cb != B:
            raise ValueError(f"cache batch {cb} != tokens batch {B}")
        if T > S:
            raise ValueError(f"{T} new tokens do not fit a cache of {S} slots")


def forward(params: Params, cfg: LlamaConfig, tokens_BxT: jax.Array, positions_BxT: jax.Array,
            segment_ids_BxT: jax.Array, cache: Optional[KVCache] = None,
            attn_backend: str = "xla",
            logits_at_BxN: Optional[jax.Array] = None) -> tuple[jax.Array, KVCache]:
    """Logits [B, T, V] (float32), or [B, N, V] at ``logits_at_BxN``, and the KV cache.

    Without `cache`: (packed) prefill, attention among the T tokens only; the returned
    cache has S = T slots and cursor = T. With `cache`: the tokens are written at slots
    [cursor, cursor + T), attend to every same-segment slot with kv_pos <= q_pos, and
    the cursor advances by T. `logits_at_BxN` (int32 columns of each row) limits the LM
    head to those tokens, e.g. each prompt's last one in a prefill. `cfg` and
    `attn_backend` are static under jit. The caller keeps cursor + T <= S (dynamic
    slices clamp otherwise).
    """
    B = tokens_BxT.shape[0]
    if logits_at_BxN is not None and (logits_at_BxN.ndim != 2 or logits_at_BxN.shape[0] != B):
        raise ValueError(f"logits_at_BxN must be [B={B}, N] indices into the T axis, "
                         f"got shape {logits_at_BxN.shape}")
    hidden_BxTxD, new_cache = forward_hidden(params, cfg, tokens_BxT, positions_BxT,
                                             segment_ids_BxT, cache, attn_backend)
    if logits_at_BxN is not None:
        hidden_BxTxD = jnp.take_along_axis(hidden_BxTxD, logits_at_BxN.astype(jnp.int32)[..., None],
                                           axis=1)
    return lm_head(params, cfg, hidden_BxTxD), new_cache


def lm_head(params: Params, cfg: LlamaConfig, hidden_xD: jax.Array) -> jax.Array:
    """Float32 logits [..., V] of final hidden states [..., D]."""
    head = params["embed"].T if cfg.tie_embeddings else params["lm_head"]
    return (hidden_xD @ head.astype(hidden_xD.dtype)).astype(jnp.float32)


def forward_hidden(params: Params, cfg: LlamaConfig, tokens_BxT: jax.Array,
                   positions_BxT: jax.Array, segment_ids_BxT: jax.Array,
                   cache: Optional[KVCache] = None,
                   attn_backend: str = "xla") -> tuple[jax.Array, KVCache]:
    """Final-norm hidden states [B, T, D] and the KV cache; `forward` without the LM head."""
    _check_inputs(cfg, tokens_BxT, positions_BxT, segment_ids_BxT, cache)
    dtype = jnp.dtype(cfg.dtype)
    B, T = tokens_BxT.shape
    H, K, Dh = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    positions_BxT = positions_BxT.astype(jnp.int32)
    segment_ids_BxT = segment_ids_BxT.astype(jnp.int32)

    if cache is None:
        cursor = jnp.zeros((), jnp.int32)
        kv_segment_ids, kv_positions = segment_ids_BxT, positions_BxT
        k_all = jnp.zeros((cfg.n_layers, B, T, K, Dh), dtype)
        v_all = jnp.zeros((cfg.n_layers, B, T, K, Dh), dtype)
    else:
        cursor = cache.cursor.astype(jnp.int32)
        kv_segment_ids = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids_BxT, (0, cursor))
        kv_positions = jax.lax.dynamic_update_slice(cache.positions, positions_BxT, (0, cursor))
        k_all, v_all = cache.k.astype(dtype), cache.v.astype(dtype)

    cos, sin = rope_tables(positions_BxT, Dh, cfg.rope_theta)
    x = params["embed"].astype(dtype)[tokens_BxT]
    zero = jnp.zeros((), jnp.int32)

    def layer(carry, inputs):
        x, k_all, v_all = carry
        lp, idx = inputs
        lp = jax.tree_util.tree_map(lambda w: w.astype(dtype), lp)
        h = rms_norm(x, lp["attn_norm"], cfg.norm_eps)
        q = apply_rope((h @ lp["wq"]).reshape(B, T, H, Dh), cos, sin)
        k = apply_rope((h @ lp["wk"]).reshape(B, T, K, Dh), cos, sin)
        v = (h @ lp["wv"]).reshape(B, T, K, Dh)
        # Write only the new tokens into the carried cache; the layer then reads its slice.
        k_all = jax.lax.dynamic_update_slice(k_all, k[None], (idx, zero, cursor, zero, zero))
        v_all = jax.lax.dynamic_update_slice(v_all, v[None], (idx, zero, cursor, zero, zero))
        k_l = jax.lax.dynamic_index_in_dim(k_all, idx, axis=0, keepdims=False)
        v_l = jax.lax.dynamic_index_in_dim(v_all, idx, axis=0, keepdims=False)
        attn = attention(q, k_l, v_l, q_segment_ids=segment_ids_BxT, kv_segment_ids=kv_segment_ids,
                         q_positions=positions_BxT, kv_positions=kv_positions, causal=True,
                         backend=attn_backend)
        x = x + attn.reshape(B, T, H * Dh) @ lp["wo"]
        h = rms_norm(x, lp["mlp_norm"], cfg.norm_eps)
        x = x + (jax.nn.silu(h @ lp["w_gate"]) * (h @ lp["w_up"])) @ lp["w_down"]
        return (x, k_all, v_all), None

    layer_ids = jnp.arange(cfg.n_layers, dtype=jnp.int32)
    (x, k_all, v_all), _ = jax.lax.scan(layer, (x, k_all, v_all), (params["layers"], layer_ids))
    x = rms_norm(x, params["final_norm"], cfg.norm_eps)
    new_cache = KVCache(k=k_all, v=v_all, segment_ids=kv_segment_ids, positions=kv_positions,
                        cursor=cursor + T)
    return x, new_cache
