"""Key/value cache for incremental decoding, shared by every layer."""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from gdm_jax.lm.config import LlamaConfig


@flax.struct.dataclass
class KVCache:
    """Per-layer keys/values plus the segment ids and positions of every slot."""

    k: jax.Array  # [L, B, S, K, D]
    v: jax.Array  # [L, B, S, K, D]
    segment_ids: jax.Array  # [B, S] int32, 0 = empty slot
    positions: jax.Array  # [B, S] int32, token position within its prompt
    cursor: jax.Array  # scalar int32: next slot to write (same for all rows)

    @property
    def max_slots(self) -> int:
        """Number of slots S."""
        return self.k.shape[2]

    @property
    def batch(self) -> int:
        """Number of rows B."""
        return self.k.shape[1]


def empty_cache(cfg: LlamaConfig, batch: int, max_slots: int) -> KVCache:
    """A cache with every slot empty (segment id 0) and cursor 0."""
    if batch <= 0 or max_slots <= 0:
        raise ValueError(f"empty_cache needs batch > 0 and max_slots > 0, "
                         f"got batch={batch}, max_slots={max_slots}")
    shape = (cfg.n_layers, batch, max_slots, cfg.n_kv_heads, cfg.head_dim)
    dtype = jnp.dtype(cfg.dtype)
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                   segment_ids=jnp.zeros((batch, max_slots), jnp.int32),
                   positions=jnp.zeros((batch, max_slots), jnp.int32),
                   cursor=jnp.zeros((), jnp.int32))


def grow_cache(cache: KVCache, max_slots: int) -> KVCache:
    """The same cache with empty slots appended up to `max_slots` (room for decoding)."""
    extra = max_slots - cache.max_slots
    if extra < 0:
        raise ValueError(f"grow_cache: max_slots={max_slots} is smaller than the cache's "
                         f"{cache.max_slots} slots")
    pad_kv = [(0, 0), (0, 0), (0, extra), (0, 0), (0, 0)]
    pad_bs = [(0, 0), (0, extra)]
    return KVCache(k=jnp.pad(cache.k, pad_kv), v=jnp.pad(cache.v, pad_kv),
                   segment_ids=jnp.pad(cache.segment_ids, pad_bs),
                   positions=jnp.pad(cache.positions, pad_bs), cursor=cache.cursor)
