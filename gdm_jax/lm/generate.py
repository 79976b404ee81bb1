"""Greedy and sampled generation from a KV cache, one jitted `lax.while_loop` over steps."""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.lm.config import LlamaConfig
from gdm_jax.lm.kv_cache import KVCache, grow_cache
from gdm_jax.lm.model import Params, forward


def sample_tokens(logits_BxV: jax.Array, key: jax.Array, temperature: float = 0.0,
                  top_k: int = 0) -> jax.Array:
    """Next tokens [B]: argmax when temperature == 0, else softmax(logits / T) over the top k."""
    if temperature < 0 or top_k < 0:
        raise ValueError(f"temperature and top_k must be >= 0, got {temperature}, {top_k}")
    if temperature == 0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    logits = logits_BxV.astype(jnp.float32) / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "temperature", "top_k",
                                             "attn_backend"))
def generate_from_cache(params: Params, cfg: LlamaConfig, cache: KVCache, first_logits_BxV: jax.Array,
                        next_positions_B: jax.Array, key: jax.Array, *, max_new_tokens: int,
                        eos_id: int | jax.Array, pad_id: int | jax.Array, temperature: float = 0.0,
                        top_k: int = 0, attn_backend: str = "xla"):
    """Generate up to max_new_tokens per row after a prefill; returns (tokens [B, N], lengths [B]).

    `first_logits_BxV` are the logits at each prompt's last token, `next_positions_B` the
    prompt lengths. The cache needs max_new_tokens - 1 free slots from its cursor. A row
    stops after emitting `eos_id` (kept in its output; later entries are `pad_id`);
    the loop exits once every row has stopped. Static: cfg, max_new_tokens, temperature,
    top_k, attn_backend.
    """
    B = first_logits_BxV.shape[0]
    keys = jax.random.split(key, max_new_tokens)
    first = sample_tokens(first_logits_BxV, keys[0], temperature, top_k)
    out = jnp.full((B, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = first == eos_id
    lengths = jnp.ones((B,), jnp.int32)
    positions = next_positions_B.astype(jnp.int32)

    def cond(carry):
        step, _, _, done, _, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, cache, out, done, lengths, positions = carry
        prev = jax.lax.dynamic_index_in_dim(out, step - 1, axis=1, keepdims=False)
        # Finished rows still run (static shapes) but as padding, so they write nothing visible.
        seg = jnp.where(done, 0, 1).astype(jnp.int32)[:, None]
        logits, cache = forward(params, cfg, prev[:, None], positions[:, None], seg, cache,
                                attn_backend=attn_backend)
        token = sample_tokens(logits[:, 0], keys[step], temperature, top_k)
        token = jnp.where(done, pad_id, token)
        out = jax.lax.dynamic_update_slice(out, token[:, None], (0, step))
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | (token == eos_id)
        return step + 1, cache, out, done, lengths, positions + 1

    init = (jnp.ones((), jnp.int32), cache, out, done, lengths, positions)
    _, _, out, _, lengths, _ = jax.lax.while_loop(cond, body, init)
    return out, lengths


def right_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0, length: Optional[int] = None):
    """Tokens [B, T], positions [B, T] and segment ids [B, T] (1 = prompt, 0 = pad) as numpy."""
    if not prompts:
        raise ValueError("no prompts given")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise ValueError(f"prompt {lengths.index(0)} is empty")
    T = length or max(lengths)
    if max(lengths) > T:
        raise ValueError(f"prompt of {max(lengths)} tokens does not fit length {T}")
    tokens = np.full((len(prompts), T), pad_id, np.int32)
    segment_ids = np.zeros((len(prompts), T), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, :len(p)] = p
        segment_ids[i, :len(p)] = 1
    positions = np.where(segment_ids > 0, np.arange(T, dtype=np.int32)[None], 0).astype(np.int32)
    return tokens, positions, segment_ids


@functools.partial(jax.jit, static_argnames=("cfg", "attn_backend"))
def _prefill_padded(params, cfg, tokens, positions, segment_ids, attn_backend="xla"):
    logits, cache = forward(params, cfg, tokens, positions, segment_ids, attn_backend=attn_backend)
    last = jnp.sum(segment_ids > 0, axis=1) - 1
    return jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0], cache


def generate(params: Params, cfg: LlamaConfig, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             *, eos_id: int, pad_id: Optional[int] = None, temperature: float = 0.0, top_k: int = 0,
             key: Optional[jax.Array] = None, attn_backend: str = "xla") -> list[list[int]]:
    """Continuations of token-id prompts (padded prefill, then cached decode), EOS kept."""
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be > 0, got {max_new_tokens}")
    for i, p in enumerate(prompts):
        if len(p) + max_new_tokens > cfg.max_seq_len:
            raise ValueError(f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} "
                             f"it exceeds max_seq_len={cfg.max_seq_len}")
        if len(p) and (min(p) < 0 or max(p) >= cfg.vocab_size):
            raise ValueError(f"prompt {i} has token ids outside [0, {cfg.vocab_size})")
    pad_id = eos_id if pad_id is None else pad_id
    tokens, positions, segment_ids = right_pad(prompts, pad_id)
    first_logits, cache = _prefill_padded(params, cfg, tokens, positions, segment_ids, attn_backend)
    cache = grow_cache(cache, tokens.shape[1] + max_new_tokens - 1)
    key = jax.random.PRNGKey(0) if key is None else key
    out, lengths = generate_from_cache(
        params, cfg, cache, first_logits, jnp.asarray(segment_ids.sum(1)), key,
        max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, temperature=temperature,
        top_k=top_k, attn_backend=attn_backend)
    out, lengths = np.asarray(out), np.asarray(lengths)
    return [out[i, :lengths[i]].tolist() for i in range(len(prompts))]
