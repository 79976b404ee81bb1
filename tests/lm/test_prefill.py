"""Packed prefill equals per-prompt prefill; unpacked caches generate like padded ones."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.data import packing
from gdm_jax.lm import bucketing, generate, prefill
from gdm_jax.lm.config import tiny_config
from gdm_jax.lm.model import forward, init_params

LENGTHS = [7, 3, 5, 7, 2, 5, 3]  # few distinct lengths -> few reference compiles
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def model():
    cfg = tiny_config(max_seq_len=32)
    params = init_params(cfg, jax.random.PRNGKey(0), scale=0.2)
    return cfg, params


@pytest.fixture(scope="module")
def prompts(model):
    cfg, _ = model
    rng = np.random.default_rng(0)
    return [rng.integers(1, cfg.vocab_size, size=n).astype(np.int32) for n in LENGTHS]


@pytest.fixture(scope="module")
def reference(model, prompts):
    """Each prompt prefilled alone: next-token logits and its k/v [L, len, K, D]."""
    cfg, params = model
    fwd = jax.jit(forward, static_argnums=1)
    out = []
    for p in prompts:
        n = len(p)
        logits, cache = fwd(params, cfg, jnp.asarray(p)[None], jnp.arange(n)[None],
                            jnp.ones((1, n), jnp.int32))
        out.append((np.asarray(logits[0, -1]), np.asarray(cache.k[:, 0]), np.asarray(cache.v[:, 0])))
    return out


def _assert_matches_reference(result: prefill.Prefilled, reference, num_prompts):
    logits = np.asarray(result.next_logits_NxV)
    k, v = np.asarray(result.cache.k), np.asarray(result.cache.v)
    seg, pos = np.asarray(result.cache.segment_ids), np.asarray(result.cache.positions)
    for i, (ref_logits, ref_k, ref_v) in enumerate(reference):
        n = ref_k.shape[1]
        np.testing.assert_allclose(logits[i], ref_logits, **TOL)
        np.testing.assert_allclose(k[:, i, :n], ref_k, **TOL)
        np.testing.assert_allclose(v[:, i, :n], ref_v, **TOL)
        assert np.all(k[:, i, n:] == 0) and np.all(v[:, i, n:] == 0)
        np.testing.assert_array_equal(seg[i], (np.arange(seg.shape[1]) < n).astype(np.int32))
        np.testing.assert_array_equal(pos[i], np.where(np.arange(seg.shape[1]) < n,
                                                       np.arange(seg.shape[1]), 0))
    assert int(result.cache.cursor) == max(LENGTHS)
    np.testing.assert_array_equal(np.asarray(result.lengths_N)[:num_prompts], LENGTHS)


@pytest.mark.parametrize("strategy", prefill.STRATEGIES)
def test_prefill_matches_per_prompt(model, prompts, reference, strategy):
    cfg, params = model
    result = prefill.prefill_prompts(params, cfg, prompts, strategy, extra_slots=4)
    if strategy != "padded":
        batch = prefill.layout_batch(prompts, strategy)
        assert batch.num_rows < len(prompts)  # packing actually merged prompts
    assert result.cache.k.shape[2] == max(LENGTHS) + 4
    _assert_matches_reference(result, reference, len(prompts))


def test_bucketed_prefill_matches_and_reuses_programs(model, prompts, reference):
    cfg, params = model
    buckets = bucketing.Buckets.for_limits(max_rows=16, max_length=16, max_prompts=16, min_length=4)
    result = prefill.prefill_prompts(params, cfg, prompts, "ffd", buckets=buckets)
    assert result.next_logits_NxV.shape[0] == bucketing.round_up(len(prompts), buckets.prompts)
    _assert_matches_reference(result, reference, len(prompts))
    # A stream of differently-shaped batches inside the same buckets triggers no new compile.
    rng = np.random.default_rng(1)
    shape = lambda b: {k: v.shape for k, v in bucketing.pad_to_buckets(b, buckets).items()}
    first = shape(prefill.layout_batch(prompts, "ffd"))
    with bucketing.count_compiles() as counter:
        for lens in ([7, 6, 5, 6, 2, 4, 3], [6, 6, 3, 7, 5, 5, 3, 2], [8, 4, 7, 3, 2, 6, 5]):
            stream = [rng.integers(1, cfg.vocab_size, size=n) for n in lens]
            assert shape(prefill.layout_batch(stream, "ffd")) == first
            jax.block_until_ready(prefill.prefill_prompts(params, cfg, stream, "ffd", buckets=buckets))
    assert counter.count == 0, counter.functions
    with bucketing.count_compiles() as counter:
        jax.block_until_ready(prefill.prefill_prompts(params, cfg, prompts[:3], "ffd"))
    assert counter.count >= 1  # an unbucketed new shape does compile, and is counted


def test_buckets_round_up():
    assert bucketing.geometric_buckets(1, 20) == (1, 2, 3, 4, 6, 8, 12, 16, 20)
    assert bucketing.round_up(13, (4, 8, 16)) == 16
    with pytest.raises(ValueError, match="size 17 exceeds the largest bucket 16"):
        bucketing.round_up(17, (4, 8, 16))


def test_dataset_level_batches_match_reference(model, prompts, reference):
    cfg, params = model
    batches = packing.pack_dataset(prompts, rows_per_batch=2)
    assert len(batches) >= 2
    seen = 0
    for b in batches:
        result = prefill.prefill_batch(params, cfg, b)
        logits = np.asarray(result.next_logits_NxV)
        for j, g in enumerate(b.prompt_index):
            np.testing.assert_allclose(logits[j], reference[g][0], **TOL)
            seen += 1
    assert seen == len(prompts)


def test_packed_row_longer_than_max_seq_len_is_accepted(model, prompts, reference):
    cfg, params = model
    # All 32 prompt tokens in one 40-slot row: longer than max_seq_len=32, positions stay < 8.
    batch = packing.pack_prompts(prompts, cfg.max_seq_len + 8, method="ffd")
    assert batch.num_rows == 1 and batch.capacity > cfg.max_seq_len
    result = prefill.prefill_batch(params, cfg, batch)
    logits = np.asarray(result.next_logits_NxV)
    for i, (ref_logits, _, _) in enumerate(reference):
        np.testing.assert_allclose(logits[i], ref_logits, **TOL)


def test_bad_input_errors(model, prompts):
    cfg, params = model
    too_long = [np.ones(cfg.max_seq_len + 1, np.int32)]
    with pytest.raises(ValueError, match="prompt 0 has 33 tokens, more than the model's max_seq_len=32"):
        prefill.prefill_prompts(params, cfg, too_long)
    with pytest.raises(ValueError, match="prompt 1 has 30 tokens plus 4 new tokens"):
        prefill.prefill_prompts(params, cfg, [[1], np.ones(30)], extra_slots=4)
    with pytest.raises(ValueError, match="unknown prefill strategy='sorted-ish'"):
        prefill.prefill_prompts(params, cfg, prompts, "sorted-ish")
    with pytest.raises(ValueError, match="empty list"):
        prefill.prefill_prompts(params, cfg, [])
    with pytest.raises(ValueError, match="token id 64 .* outside the model's vocabulary \\[0, 64\\)"):
        prefill.prefill_prompts(params, cfg, [[1, 2], [3, 64]])
    with pytest.raises(ValueError, match="prompt 2 is empty"):
        prefill.prefill_prompts(params, cfg, [[1], [2], []])


@pytest.fixture(scope="module")
def padded_generations(model, prompts):
    """The model engineer's padded-prefill generation: the reference continuations."""
    cfg, params = model
    greedy = generate.generate(params, cfg, prompts, 6, eos_id=0)
    sampled = generate.generate(params, cfg, prompts, 6, eos_id=0, temperature=1.0,
                                key=jax.random.PRNGKey(3))
    return greedy, sampled


@pytest.mark.parametrize("strategy", ["ffd", "binpacking"])
def test_generation_after_unpacking_matches_padded(model, prompts, padded_generations, strategy):
    cfg, params = model
    greedy, sampled = padded_generations
    assert prefill.generate_prompts(params, cfg, prompts, 6, eos_id=0, strategy=strategy) == greedy
    assert len(set(map(tuple, greedy))) > 1  # prompts really continue differently
    assert prefill.generate_prompts(params, cfg, prompts, 6, eos_id=0, strategy=strategy,
                                    temperature=1.0, key=jax.random.PRNGKey(3)) == sampled


def test_generation_rejects_overlong_continuation(model):
    cfg, params = model
    with pytest.raises(ValueError, match="prompt 0 has 30 tokens plus 5 new tokens"):
        prefill.generate_prompts(params, cfg, [np.ones(30)], 5, eos_id=0)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        prefill.generate_prompts(params, cfg, [np.ones(3)], 0, eos_id=0)


def test_smollm2_packed_generation_matches_padded(smollm2, smollm2_tokenizer, mmlu_texts):
    """Real weights, real prompts: packed prefill + unpack generates what padded prefill does."""
    cfg, params = smollm2
    texts = [mmlu_texts[i] for i in (0, 3, 200, 611)]
    prompts = [smollm2_tokenizer.encode(t) for t in texts]
    prompts = [p[-n:] for p, n in zip(prompts, (40, 22, 30, 16))]  # short: keep the test fast
    assert prefill.layout_batch(prompts, "ffd").num_rows == 3  # 22 + 16 share a row
    eos = smollm2_tokenizer.eos_id
    want = generate.generate(params, cfg, prompts, 4, eos_id=eos)
    got = prefill.generate_prompts(params, cfg, prompts, 4, eos_id=eos, strategy="ffd")
    assert got == want


def _bench_config(preset="tiny"):
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "prepack.py")
    spec = importlib.util.spec_from_file_location("prepack_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


@pytest.mark.parametrize("key, value, match", [
    ("strategies", ("padded", "zigzag"), "unknown strategy 'zigzag'"),
    ("strategies", ("ffd",), "must include 'padded'"),
    ("pool_batches", 0, "config.pool_batches must hold positive ints, got 0"),
    ("attn_backend", "flash", "config.attn_backend='flash'"),
    ("random_model.n_kv_heads", 3, "config.random_model: LlamaConfig.n_heads"),
    ("spread.widths", (0.5, 1.5), "config.spread.widths must lie in \\(0, 1\\], got 1.5"),
    ("serving.model", "smollm2", "config.serving.model='smollm2' but that model is disabled"),
])
def test_benchmark_config_errors_name_the_key(key, value, match):
    from gdm_jax.lm import run
    config = _bench_config()
    run.validate(config)  # the shipped presets are valid
    run.validate(_bench_config("cpu"))
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=match):
        run.validate(config)
