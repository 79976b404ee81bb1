"""SmolLM2-135M-Instruct: our loader, model and tokenizer against HF transformers on the same GGUF."""
import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.lm.model import forward
from gdm_jax.lm.parity import compare


def test_tokenizer_ids_match_hf(smollm2_tokenizer, hf_tokenizer, mmlu_texts):
    tricky = ["héllo wörld 日本語 🙂  two  spaces\n\n\ttab", "<|im_start|>user\nx<|im_end|>",
              "don't 12345 x=y+1;", "", " leading space", "trailing\n"]
    for text in mmlu_texts[:300] + tricky:
        ids = smollm2_tokenizer.encode(text)
        assert ids == hf_tokenizer(text)["input_ids"], text
        assert smollm2_tokenizer.decode(ids) == text
    assert (smollm2_tokenizer.bos_id, smollm2_tokenizer.eos_id) == (
        hf_tokenizer.convert_tokens_to_ids(hf_tokenizer.bos_token),
        hf_tokenizer.convert_tokens_to_ids(hf_tokenizer.eos_token))


def test_chat_template_matches_hf(smollm2_tokenizer, hf_tokenizer):
    messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
                {"role": "user", "content": "And 3+3?"}]
    text = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert smollm2_tokenizer.render_chat(messages) == text
    assert smollm2_tokenizer.apply_chat_template(messages) == hf_tokenizer(text)["input_ids"]
    assert text.endswith("<|im_start|>assistant\n")


def test_logits_and_greedy_continuations_match_hf(smollm2, hf_model, smollm2_tokenizer, mmlu_texts):
    cfg, params = smollm2
    # The four shortest of the first 40 prompts keep the test fast; the script checks 32+.
    texts = sorted(mmlu_texts[:40], key=len)[:4]
    prompts = smollm2_tokenizer.encode_batch(texts)
    result = compare(params, cfg, hf_model, prompts, new_tokens=20, eos_id=smollm2_tokenizer.eos_id)
    print("max abs logit diff", result["max_abs_logit_diff"], result["seconds"])
    assert result["max_abs_logit_diff"] < 2e-3
    assert result["greedy_identical"] == len(prompts), result["greedy_mismatch_indices"]


def test_cached_decode_matches_full_forward_on_smollm2(smollm2, smollm2_tokenizer):
    from gdm_jax.lm.kv_cache import empty_cache

    cfg, params = smollm2
    ids = jnp.asarray([smollm2_tokenizer.encode("The capital of France is Paris, and")])
    T = ids.shape[1]
    pos, seg = jnp.arange(T)[None], jnp.ones_like(ids)
    fwd = jax.jit(forward, static_argnames=("cfg", "attn_backend"))
    full, _ = fwd(params, cfg, ids, pos, seg)
    cache = empty_cache(cfg, 1, T)
    _, cache = fwd(params, cfg, ids[:, :T - 2], pos[:, :T - 2], seg[:, :T - 2], cache)
    last = []
    for t in (T - 2, T - 1):
        logits, cache = fwd(params, cfg, ids[:, t:t + 1], pos[:, t:t + 1], seg[:, t:t + 1], cache)
        last.append(logits[0, 0])
    np.testing.assert_allclose(jnp.stack(last), full[0, T - 2:], atol=2e-4, rtol=1e-4)
