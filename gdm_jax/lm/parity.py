"""Parity of our SmolLM2 with Hugging Face transformers on the same GGUF file.

    python -m gdm_jax.lm.parity --num_prompts=32 --new_tokens=20 --out=results/lm/parity.json

Compares next-token logits on MMLU prompts (max abs difference, fp32) and greedy
continuations (token-identical), using transformers' own GGUF loader as the oracle.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.lm.config import LlamaConfig
from gdm_jax.lm.generate import generate, right_pad
from gdm_jax.lm.model import Params, forward

PROMPTS_FILE = os.path.join(os.path.dirname(__file__), "..", "assets", "prompts", "mmlu.jsonl")

_forward = jax.jit(forward, static_argnames=("cfg", "attn_backend"))


def load_prompt_texts(n: int, path: str = PROMPTS_FILE) -> list[str]:
    """The first n prompt texts of a JSONL prompt file."""
    with open(path) as f:
        texts = [json.loads(line)["text"] for line in f]
    if n > len(texts):
        raise ValueError(f"asked for {n} prompts but {path} has {len(texts)}")
    return texts[:n]


def logits_gap(params: Params, cfg: LlamaConfig, hf_model, prompts: Sequence[Sequence[int]],
               batch: int = 8) -> list[float]:
    """Per prompt, max |ours - HF| over all positions and vocab (ours right-padded in batches)."""
    import torch

    gaps = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        tokens, positions, segment_ids = right_pad(chunk)
        ours = np.asarray(_forward(params, cfg, jnp.asarray(tokens), jnp.asarray(positions),
                                   jnp.asarray(segment_ids))[0])
        for i, p in enumerate(chunk):
            with torch.no_grad():
                ref = hf_model(torch.tensor([list(p)], dtype=torch.long)).logits[0].numpy()
            gaps.append(float(np.abs(ours[i, :len(p)] - ref).max()))
    return gaps


def hf_greedy(hf_model, prompts: Sequence[Sequence[int]], new_tokens: int, eos_id: int) -> list[list[int]]:
    """HF greedy continuations, one prompt at a time (no padding effects), EOS kept."""
    import torch

    outs = []
    for p in prompts:
        with torch.no_grad():
            input_ids = torch.tensor([list(p)], dtype=torch.long)
            seq = hf_model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                    do_sample=False, max_new_tokens=new_tokens,
                                    eos_token_id=eos_id, pad_token_id=eos_id)
        outs.append(seq[0, len(p):].tolist())
    return outs


def compare(params: Params, cfg: LlamaConfig, hf_model, prompts: Sequence[Sequence[int]],
            new_tokens: int, eos_id: int) -> dict:
    """Logit gaps and greedy agreement of ours vs HF on token-id prompts, with timings."""
    t0 = time.perf_counter()
    gaps = logits_gap(params, cfg, hf_model, prompts)
    t1 = time.perf_counter()
    ours = generate(params, cfg, prompts, new_tokens, eos_id=eos_id)
    t2 = time.perf_counter()
    theirs = hf_greedy(hf_model, prompts, new_tokens, eos_id)
    t3 = time.perf_counter()
    same = [a == b for a, b in zip(ours, theirs)]
    seconds = {"logits_both": t1 - t0, "ours_generate_incl_compile": t2 - t1, "hf_generate": t3 - t2}
    return {"num_prompts": len(prompts), "new_tokens": new_tokens,
            "prompt_lengths": [len(p) for p in prompts],
            "max_abs_logit_diff": max(gaps), "max_abs_logit_diff_per_prompt": gaps,
            "greedy_identical": int(sum(same)),
            "greedy_mismatch_indices": [i for i, s in enumerate(same) if not s],
            "ours_greedy": ours, "hf_greedy": theirs,
            "seconds": seconds}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_prompts", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=20)
    parser.add_argument("--out", default="results/lm/parity.json")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM

    from gdm_jax.lm.tokenizer import load_gguf_tokenizer
    from gdm_jax.lm.weights import load_gguf, smollm2_path

    path = smollm2_path()
    t0 = time.perf_counter()
    cfg, params = load_gguf(path)
    tokenizer = load_gguf_tokenizer(path)
    t1 = time.perf_counter()
    hf_model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                    dtype=torch.float32).eval()
    t2 = time.perf_counter()
    prompts = tokenizer.encode_batch(load_prompt_texts(args.num_prompts))
    result = compare(params, cfg, hf_model, prompts, args.new_tokens, tokenizer.eos_id)
    result["seconds"].update({"ours_load": t1 - t0, "hf_load": t2 - t1})
    result["model"] = os.path.basename(path)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"max |logit diff| {result['max_abs_logit_diff']:.3g}; greedy identical "
          f"{result['greedy_identical']}/{result['num_prompts']}; seconds {result['seconds']}")
    return result


if __name__ == "__main__":
    main()
