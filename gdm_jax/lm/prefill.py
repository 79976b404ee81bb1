"""Prepacked prefill: pack prompts, prefill the rows once, unpack per-prompt KV caches.

Pipeline (Zhao et al. 2024, "Prepacking"): prompts of different lengths are bin-packed
into few rows (``gdm_jax.data.packing``); one prefill over the rows uses segment ids and
restarting positions so prompts never see each other; the packed KV cache is then
gathered into the generation layout (prompt i in slots [0, len_i), segment id 1,
positions 0..len_i-1, empty slots segment 0), from which decoding continues exactly as
after an ordinary padded prefill. The padded baseline is the same pipeline with one
prompt per row, so every strategy shares one jitted program per shape.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.data.packing import PackedBatch, pack_prompts, pad_prompts
from gdm_jax.lm.bucketing import Buckets, pad_to_buckets
from gdm_jax.lm.config import LlamaConfig
from gdm_jax.lm.generate import generate_from_cache
from gdm_jax.lm.kv_cache import KVCache
from gdm_jax.lm.model import forward_hidden, lm_head

STRATEGIES = ("padded", "ffd", "bfd", "binpacking")


@flax.struct.dataclass
class Prefilled:
    """Per-prompt results of a prefill: next-token logits and the generation-layout cache.

    Leading axis N may exceed the number of real prompts when shapes are bucketed; the
    extra entries have length 0 and are to be ignored.
    """
    next_logits_NxV: jax.Array  # float32 logits for the token after each prompt
    cache: KVCache              # [L, N, S, K, D], prompt i in slots [0, len_i)
    lengths_N: jax.Array        # int32 prompt lengths (0 for bucket filler entries)


def check_prompt_lengths(cfg: LlamaConfig, lengths: Sequence[int], extra_tokens: int = 0) -> None:
    """Raise ValueError if a prompt (plus ``extra_tokens`` to generate) exceeds max context."""
    for i, n in enumerate(lengths):
        if n + extra_tokens > cfg.max_seq_len:
            more = f" plus {extra_tokens} new tokens" if extra_tokens else ""
            raise ValueError(f"prompt {i} has {n} tokens{more}, more than the model's "
                             f"max_seq_len={cfg.max_seq_len}")


def layout_batch(prompts: Sequence[Sequence[int]], strategy: str, *,
                 capacity: Optional[int] = None, pad_id: int = 0) -> PackedBatch:
    """Rows for one batch: ``padded`` (one prompt per row) or packed by ffd/bfd/binpacking."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown prefill strategy={strategy!r}; choose from {STRATEGIES}")
    if strategy == "padded":
        return pad_prompts(prompts, capacity, pad_id=pad_id)
    return pack_prompts(prompts, capacity, method=strategy, pad_id=pad_id)


def unpack_cache(packed: KVCache, prompt_row_N: jax.Array, prompt_offset_N: jax.Array,
                 prompt_length_N: jax.Array, num_slots: int) -> KVCache:
    """Gather a packed prefill cache [L, R, C, ...] into per-prompt caches [L, N, num_slots, ...].

    ``num_slots`` is static; the cursor is the longest prompt, so decoding appends after
    every prompt (gaps between len_i and the cursor are empty slots, segment 0).
    """
    C = packed.k.shape[2]
    slot_S = jnp.arange(num_slots, dtype=jnp.int32)
    valid_NxS = slot_S[None, :] < prompt_length_N[:, None]
    # Invalid slots read column 0 of the row and are then zeroed; clip keeps indices legal.
    col_NxS = jnp.where(valid_NxS, prompt_offset_N[:, None] + slot_S[None, :], 0)
    col_NxS = jnp.clip(col_NxS, 0, C - 1)
    row_NxS = jnp.broadcast_to(prompt_row_N[:, None], col_NxS.shape)
    keep = valid_NxS[None, :, :, None, None]
    k = jnp.where(keep, packed.k[:, row_NxS, col_NxS], 0).astype(packed.k.dtype)
    v = jnp.where(keep, packed.v[:, row_NxS, col_NxS], 0).astype(packed.v.dtype)
    return KVCache(k=k, v=v, segment_ids=valid_NxS.astype(jnp.int32),
                   positions=jnp.where(valid_NxS, slot_S[None, :], 0).astype(jnp.int32),
                   cursor=jnp.max(prompt_length_N).astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=("cfg", "num_slots", "attn_backend"))
def prefill_and_unpack(params: dict, inputs: dict, *, cfg: LlamaConfig, num_slots: int,
                       attn_backend: str = "xla") -> Prefilled:
    """One (packed) prefill and the unpack, as one program. Static: cfg, num_slots, attn_backend."""
    hidden_RxCxD, packed = forward_hidden(params, cfg, inputs["tokens"], inputs["positions"],
                                          inputs["segment_ids"], attn_backend=attn_backend)
    row, offset, length = inputs["prompt_row"], inputs["prompt_offset"], inputs["prompt_length"]
    last_col = jnp.clip(offset + length - 1, 0, hidden_RxCxD.shape[1] - 1)
    # The LM head only at each prompt's last token: full [R, C, V] logits would dominate
    # the program's memory and cost ~20% of a small model's prefill FLOPs.
    next_logits = lm_head(params, cfg, hidden_RxCxD[row, last_col])
    cache = unpack_cache(packed, row, offset, length, num_slots)
    return Prefilled(next_logits_NxV=next_logits, cache=cache, lengths_N=length)


def device_inputs(batch: PackedBatch, buckets: Optional[Buckets] = None, *,
                  pad_id: int = 0) -> dict:
    """Bucket-padded prefill inputs on device."""
    return jax.device_put(pad_to_buckets(batch, buckets, pad_id=pad_id))


def prefill_batch(params: dict, cfg: LlamaConfig, batch: PackedBatch, *, extra_slots: int = 0,
                  buckets: Optional[Buckets] = None, attn_backend: str = "xla",
                  pad_id: int = 0) -> Prefilled:
    """Prefill a laid-out batch; caches get ``extra_slots`` free slots past the row length."""
    check_prompt_lengths(cfg, batch.prompt_length, extra_slots)
    bad = np.flatnonzero((batch.tokens_RxC < 0) | (batch.tokens_RxC >= cfg.vocab_size))
    if bad.size:
        r, c = divmod(int(bad[0]), batch.capacity)
        raise ValueError(f"token id {int(batch.tokens_RxC[r, c])} (row {r}, column {c}) is outside "
                         f"the model's vocabulary [0, {cfg.vocab_size}); check the prompts and pad_id")
    inputs = device_inputs(batch, buckets, pad_id=pad_id)
    C = inputs["tokens"].shape[1]
    return prefill_and_unpack(params, inputs, cfg=cfg, num_slots=C + extra_slots,
                              attn_backend=attn_backend)


def prefill_prompts(params: dict, cfg: LlamaConfig, prompts: Sequence[Sequence[int]],
                    strategy: str = "ffd", *, extra_slots: int = 0,
                    buckets: Optional[Buckets] = None, attn_backend: str = "xla",
                    pad_id: int = 0) -> Prefilled:
    """Lay out, prefill and unpack token-id prompts; entry i of the result is prompt i."""
    if len(prompts) == 0:
        raise ValueError("cannot prefill an empty list of prompts")
    check_prompt_lengths(cfg, [len(p) for p in prompts], extra_slots)
    batch = layout_batch(prompts, strategy, pad_id=pad_id)
    return prefill_batch(params, cfg, batch, extra_slots=extra_slots, buckets=buckets,
                         attn_backend=attn_backend, pad_id=pad_id)


@jax.jit
def greedy_first_tokens(next_logits_NxV: jax.Array) -> jax.Array:
    """The first generated token of every prompt, greedily (argmax of next-token logits)."""
    return jnp.argmax(next_logits_NxV, axis=-1).astype(jnp.int32)


def generate_prompts(params: dict, cfg: LlamaConfig, prompts: Sequence[Sequence[int]],
                     max_new_tokens: int, *, eos_id: int, strategy: str = "ffd",
                     pad_id: Optional[int] = None, temperature: float = 0.0, top_k: int = 0,
                     key: Optional[jax.Array] = None, buckets: Optional[Buckets] = None,
                     attn_backend: str = "xla") -> list[list[int]]:
    """Continuations of token-id prompts: (pre)packed prefill, unpack, cached decode (EOS kept)."""
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be > 0, got max_new_tokens={max_new_tokens}")
    check_prompt_lengths(cfg, [len(p) for p in prompts], max_new_tokens)
    pad_id = eos_id if pad_id is None else pad_id
    # The first token comes from the prefill logits, so decoding writes max_new_tokens - 1.
    prefilled = prefill_prompts(params, cfg, prompts, strategy, extra_slots=max_new_tokens - 1,
                                buckets=buckets, attn_backend=attn_backend, pad_id=pad_id)
    key = jax.random.PRNGKey(0) if key is None else key
    out, lengths = generate_from_cache(
        params, cfg, prefilled.cache, prefilled.next_logits_NxV, prefilled.lengths_N, key,
        max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, temperature=temperature,
        top_k=top_k, attn_backend=attn_backend)
    out, lengths = np.asarray(out), np.asarray(lengths)
    return [out[i, :lengths[i]].tolist() for i in range(len(prompts))]
