"""Llama forward on random weights: cache equivalence, packing isolation, generation, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.lm.config import LlamaConfig, tiny_config
from gdm_jax.lm.generate import generate, sample_tokens
from gdm_jax.lm.kv_cache import empty_cache, grow_cache
from gdm_jax.lm.model import forward, init_params

CFG = tiny_config()
fwd = jax.jit(forward, static_argnames=("cfg", "attn_backend"))


@pytest.fixture(scope="module")
def params():
    # A large init scale makes logits sharp, so argmax comparisons are not near-ties.
    return init_params(CFG, jax.random.PRNGKey(0), scale=0.5)


def _full(params, tokens_1d):
    t = jnp.asarray(tokens_1d, jnp.int32)[None]
    return fwd(params, CFG, t, jnp.arange(t.shape[1])[None], jnp.ones_like(t))[0][0]


def test_cached_decode_equals_full_forward(params):
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 9), 0, CFG.vocab_size)
    pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
    seg = jnp.ones((2, 9), jnp.int32)
    full, _ = fwd(params, CFG, tokens, pos, seg)
    cache = empty_cache(CFG, 2, 12)
    logits, cache = fwd(params, CFG, tokens[:, :6], pos[:, :6], seg[:, :6], cache)
    steps = [logits]
    for t in range(6, 9):
        logits, cache = fwd(params, CFG, tokens[:, t:t + 1], pos[:, t:t + 1], seg[:, t:t + 1], cache)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5, rtol=1e-5)
    assert int(cache.cursor) == 9
    np.testing.assert_array_equal(cache.segment_ids, np.r_[np.ones(9), np.zeros(3)][None].repeat(2, 0))


def test_packed_prefill_matches_separate_prompts(params):
    a, b = [5, 7, 11, 13, 17], [19, 23, 29]
    # Row: prompt a (segment 1), prompt b (segment 2), 2 padding slots; positions restart.
    tokens = jnp.asarray([a + b + [0, 0]])
    seg = jnp.asarray([[1] * 5 + [2] * 3 + [0, 0]])
    pos = jnp.asarray([list(range(5)) + list(range(3)) + [0, 0]])
    logits, cache = fwd(params, CFG, tokens, pos, seg)
    np.testing.assert_allclose(logits[0, :5], _full(params, a), atol=1e-5)
    np.testing.assert_allclose(logits[0, 5:8], _full(params, b), atol=1e-5)
    _, cache_b = fwd(params, CFG, jnp.asarray([b]), jnp.arange(3)[None], jnp.ones((1, 3), jnp.int32))
    np.testing.assert_allclose(cache.k[:, 0, 5:8], cache_b.k[:, 0], atol=1e-5)
    np.testing.assert_allclose(cache.v[:, 0, 5:8], cache_b.v[:, 0], atol=1e-5)
    assert cache.k.shape == (CFG.n_layers, 1, 10, CFG.n_kv_heads, CFG.head_dim)
    np.testing.assert_array_equal(cache.positions, pos)


def test_decode_after_padded_prefill_ignores_gap_slots(params):
    # Prompt of 3 in a 6-slot prefill row: slots 3..5 are padding, decode continues at slot 6.
    prompt = [2, 4, 6]
    tokens = jnp.asarray([prompt + [0, 0, 0]])
    seg = jnp.asarray([[1, 1, 1, 0, 0, 0]])
    pos = jnp.asarray([[0, 1, 2, 0, 0, 0]])
    _, cache = fwd(params, CFG, tokens, pos, seg)
    cache = grow_cache(cache, 8)
    one = jnp.ones((1, 1), jnp.int32)
    logits, cache = fwd(params, CFG, jnp.asarray([[8]]), jnp.asarray([[3]]), one, cache)
    np.testing.assert_allclose(logits[0, 0], _full(params, prompt + [8])[-1], atol=1e-5)
    assert int(cache.cursor) == 7


def test_greedy_generation_matches_step_by_step_argmax(params):
    prompts = [[3, 4, 5, 6, 7], [9, 10]]
    out = generate(params, CFG, prompts, 6, eos_id=CFG.vocab_size - 1)
    for prompt, got in zip(prompts, out):
        seq = list(prompt)
        for _ in range(6):
            seq.append(int(jnp.argmax(_full(params, seq)[-1])))
        assert got == seq[len(prompt):]


def test_generation_stops_each_row_at_eos(params):
    prompts = [[3, 4, 5, 6, 7], [9, 10]]
    free = generate(params, CFG, prompts, 6, eos_id=CFG.vocab_size - 1)
    eos = free[0][2]  # row 0 emits this at step 2: use it as EOS
    out = generate(params, CFG, prompts, 6, eos_id=eos)
    assert out[0] == free[0][:3]
    cut = free[1].index(eos) + 1 if eos in free[1] else 6
    assert out[1] == free[1][:cut]


def test_sampling_respects_top_k_and_top1_is_greedy(params):
    prompts = [[3, 4, 5], [9, 10, 11]]
    greedy = generate(params, CFG, prompts, 5, eos_id=-1)
    assert generate(params, CFG, prompts, 5, eos_id=-1, temperature=0.7, top_k=1,
                    key=jax.random.PRNGKey(4)) == greedy
    sampled = generate(params, CFG, prompts, 5, eos_id=-1, temperature=2.0, top_k=3,
                       key=jax.random.PRNGKey(5))
    for prompt, got in zip(prompts, sampled):
        for t, token in enumerate(got):
            top3 = np.argsort(np.asarray(_full(params, prompt + got[:t])[-1]))[-3:]
            assert token in top3
    # Temperature 2 over 3 candidates must not collapse onto greedy every time.
    draws = sample_tokens(jnp.tile(jnp.asarray([[0.0, 0.1, 0.2, -5.0]]), (256, 1)),
                          jax.random.PRNGKey(6), temperature=2.0, top_k=3)
    assert set(np.unique(draws).tolist()) == {0, 1, 2}


def test_bfloat16_logits_close_to_float32(params):
    cfg16 = CFG.replace(dtype="bfloat16")
    p16 = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
    tokens = jnp.asarray([[1, 2, 3, 4, 5, 6]])
    pos, seg = jnp.arange(6)[None], jnp.ones((1, 6), jnp.int32)
    l32, _ = fwd(params, CFG, tokens, pos, seg)
    l16, c16 = fwd(p16, cfg16, tokens, pos, seg)
    assert l16.dtype == jnp.float32 and c16.k.dtype == jnp.bfloat16
    scale = float(jnp.abs(l32).max())
    assert float(jnp.abs(l16 - l32).max()) < 0.1 * scale


def test_logits_at_selected_tokens_equal_rows_of_full_logits(params):
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 9), 0, CFG.vocab_size)
    pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
    seg = jnp.ones((2, 9), jnp.int32)
    full, full_cache = fwd(params, CFG, tokens, pos, seg)
    at = jnp.asarray([[8, 3, 3], [0, 5, 8]], jnp.int32)
    picked, cache = fwd(params, CFG, tokens, pos, seg, logits_at_BxN=at)
    assert picked.shape == (2, 3, CFG.vocab_size) and picked.dtype == jnp.float32
    np.testing.assert_allclose(picked, np.take_along_axis(np.asarray(full), np.asarray(at)[..., None], 1),
                               atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(cache.k, full_cache.k, atol=1e-6)
    with pytest.raises(ValueError, match="logits_at_BxN must be \\[B=2, N\\]"):
        forward(params, CFG, tokens, pos, seg, logits_at_BxN=jnp.zeros((3,), jnp.int32))


def test_length_bound_is_on_positions_not_row_length(params):
    # A packed row longer than max_seq_len is fine while each prompt's positions stay below it.
    T = CFG.max_seq_len + 8
    half = T // 2
    pos = jnp.asarray([list(range(half)) + list(range(T - half))])
    seg = jnp.asarray([[1] * half + [2] * (T - half)])
    tokens = jax.random.randint(jax.random.PRNGKey(3), (1, T), 0, CFG.vocab_size)
    logits, _ = forward(params, CFG, tokens, pos, seg)
    np.testing.assert_allclose(logits[0, half:], _full(params, tokens[0, half:]), atol=1e-4, rtol=1e-4)
    bad = jnp.arange(T)[None]
    with pytest.raises(ValueError, match=f"position {T - 1} .* beyond the model's max_seq_len={CFG.max_seq_len}"):
        forward(params, CFG, tokens, bad, seg)


def test_bad_inputs_raise_clear_errors(params):
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(params, CFG, [[1] * 60], 10, eos_id=0)
    with pytest.raises(ValueError, match="max_seq_len"):
        t = jnp.ones((1, CFG.max_seq_len + 1), jnp.int32)
        forward(params, CFG, t, jnp.arange(CFG.max_seq_len + 1)[None], t)
    with pytest.raises(ValueError, match="cache batch"):
        t = jnp.ones((1, 2), jnp.int32)
        forward(params, CFG, t, t, t, empty_cache(CFG, 3, 8))
    with pytest.raises(ValueError, match="empty"):
        generate(params, CFG, [[1, 2], []], 3, eos_id=0)
    with pytest.raises(ValueError, match="n_kv_heads"):
        tiny_config(n_kv_heads=3)
    with pytest.raises(ValueError, match="dtype"):
        tiny_config(dtype="float16x")
    assert isinstance(CFG, LlamaConfig)
