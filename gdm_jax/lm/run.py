"""``python -m gdm_jax.launch --config=configs/prepack.py[:preset]``: the prepacking benchmark."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Any

import jax
import numpy as np

from gdm_jax.core import config_utils
from gdm_jax.lm import bench
from gdm_jax.lm.config import DTYPES, LlamaConfig
from gdm_jax.nn.attention import BACKENDS

MODELS = ("smollm2", "random", "small")


def _positive_ints(name: str, values: Any, allow_empty: bool = False) -> None:
    values = tuple(values)
    if not values and not allow_empty:
        raise ValueError(f"config.{name} must not be empty")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"config.{name} must hold positive ints, got {v!r}")


def validate(config) -> None:
    """Raise ValueError naming the first bad key, before anything is loaded or compiled."""
    strategies = tuple(config.strategies)
    for s in strategies:
        if s not in bench.BATCH_STRATEGIES:
            raise ValueError(f"config.strategies has unknown strategy {s!r}; "
                             f"choose from {bench.BATCH_STRATEGIES}")
    if "padded" not in strategies:
        raise ValueError("config.strategies must include 'padded' (the baseline of every speedup)")
    for key in ("pool_batches", "repeats", "max_seq_len"):
        _positive_ints(key, [config[key]])
    for key in ("max_prompt_tokens", "min_pool_prompts"):
        if not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] < 0:
            raise ValueError(f"config.{key} must be an int >= 0, got {config[key]!r}")
    if not isinstance(config.warmup, bool):
        raise ValueError(f"config.warmup must be a bool, got {config.warmup!r}")
    if config.attn_backend not in BACKENDS:
        raise ValueError(f"config.attn_backend={config.attn_backend!r}; choose from {BACKENDS}")
    if config.dtype not in DTYPES:
        raise ValueError(f"config.dtype={config.dtype!r}; choose from {DTYPES}")
    if config.prompts_path and not os.path.isfile(config.prompts_path):
        raise ValueError(f"config.prompts_path={config.prompts_path!r} does not exist")
    _positive_ints("smollm2.batch_sizes", config.smollm2.batch_sizes, allow_empty=True)
    for name in ("random_model", "small_model"):
        m = config[name]
        _positive_ints(f"{name}.batch_sizes", m.batch_sizes, allow_empty=True)
        try:
            _llama_config(m, 8, config.max_seq_len, config.dtype)
        except ValueError as e:
            raise ValueError(f"config.{name}: {e}") from None
    enabled = {"smollm2": config.smollm2.enabled, "random": config.random_model.enabled,
               "small": config.small_model.enabled}
    for section in ("serving", "spread", "stream"):
        sub = config[section]
        if sub.enabled and sub.model not in MODELS:
            raise ValueError(f"config.{section}.model={sub.model!r}; choose from {MODELS}")
        if sub.enabled and not enabled[sub.model]:
            raise ValueError(f"config.{section}.model={sub.model!r} but that model is disabled")
    if config.hf.enabled and not config.smollm2.enabled:
        raise ValueError("config.hf.enabled needs config.smollm2.enabled (HF runs the same weights)")
    if config.hf.enabled:
        _positive_ints("hf.batch_sizes", config.hf.batch_sizes)
        for b in config.hf.batch_sizes:
            if b not in tuple(config.smollm2.batch_sizes):
                raise ValueError(f"config.hf.batch_sizes has {b}, which is not one of "
                                 f"config.smollm2.batch_sizes={tuple(config.smollm2.batch_sizes)}")
    if not config.serving.budget_gib > 0:
        raise ValueError(f"config.serving.budget_gib must be > 0, got {config.serving.budget_gib!r}")
    _positive_ints("serving.candidates", config.serving.candidates)
    _positive_ints("spread.batch_size", [config.spread.batch_size, config.spread.repeats])
    for w in config.spread.widths:
        if not 0 < w <= 1:
            raise ValueError(f"config.spread.widths must lie in (0, 1], got {w!r}")
    _positive_ints("stream.batch_size", [config.stream.batch_size, config.stream.batches])


def pool_size(config, batch_size: int) -> int:
    """Prompts in a batch size's pool: pool_batches batches, at least min_pool_prompts (whole batches)."""
    batches = max(config.pool_batches, -(-config.min_pool_prompts // batch_size))
    return batches * batch_size


def strategies_for_pool(strategies, pool_prompts: int, batch_size: int) -> tuple:
    """The strategies worth timing: with a one-batch pool, sorted is padded and dataset is ffd."""
    if pool_prompts > batch_size:
        return tuple(strategies)
    return tuple(s for s in strategies if s not in ("sorted", "dataset"))


def _llama_config(m, vocab_size: int, max_seq_len: int, dtype: str) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, dim=m.dim, n_layers=m.n_layers, n_heads=m.n_heads,
                       n_kv_heads=m.n_kv_heads, hidden_dim=m.hidden_dim, rope_theta=10000.0,
                       norm_eps=1e-5, max_seq_len=max_seq_len, tie_embeddings=True, dtype=dtype)


def _log(msg: str) -> None:
    print(f"[prepack {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(config, workdir: str) -> dict:
    """Run the benchmark; write bench.json, README.md and the spread plot into ``workdir``."""
    from gdm_jax.lm.model import init_params
    from gdm_jax.lm.tokenizer import load_gguf_tokenizer
    from gdm_jax.lm.weights import load_gguf, smollm2_path

    validate(config)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config_utils.to_dict(config), f, indent=2)
    t_start = time.perf_counter()
    gguf = smollm2_path()
    tokenizer = load_gguf_tokenizer(gguf)
    texts = bench.load_prompt_texts(config.prompts_path)
    all_tokens = [np.asarray(t, np.int32) for t in tokenizer.encode_batch(texts)]
    limit = min(config.max_prompt_tokens or config.max_seq_len, config.max_seq_len)
    prompts = [t for t in all_tokens if 0 < len(t) <= limit]
    lengths = np.array([len(t) for t in all_tokens])
    _log(f"{len(prompts)}/{len(texts)} prompts kept (<= {limit} tokens)")
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id

    models: dict = {}
    vocab = tokenizer.vocab_size
    if config.smollm2.enabled:
        cfg, params = load_gguf(gguf, max_seq_len=config.max_seq_len, dtype=config.dtype)
        models["smollm2"] = (cfg, jax.device_put(params), tuple(config.smollm2.batch_sizes))
    for name, key in (("random", "random_model"), ("small", "small_model")):
        m = config[key]
        if m.enabled:
            cfg = _llama_config(m, vocab, config.max_seq_len, config.dtype)
            params = init_params(cfg, jax.random.PRNGKey(config.seed))
            models[name] = (cfg, params, tuple(m.batch_sizes))
    programs = {name: bench.Programs(p, c, config.attn_backend) for name, (c, p, _) in models.items()}

    results: dict = {}
    hf_model = None
    for name, (cfg, params, batch_sizes) in models.items():
        for B in batch_sizes:
            rng = np.random.default_rng([config.seed, B])
            pool = [prompts[i] for i in rng.choice(len(prompts), pool_size(config, B), replace=False)]
            strategies = strategies_for_pool(config.strategies, len(pool), B)
            _log(f"{name} batch {B}, pool {len(pool)}: {', '.join(strategies)}")
            by_strategy = bench.add_speedups(bench.time_strategies(
                programs[name], pool, strategies, B, repeats=config.repeats, pad_id=pad_id,
                warmup=config.warmup))
            if name == "smollm2" and config.hf.enabled and B in tuple(config.hf.batch_sizes):
                if hf_model is None:
                    hf_model = _load_hf(gguf, config.hf.threads)
                _log(f"{name} batch {B}: HF transformers padded")
                hf = bench.hf_padded_prefill(hf_model, pool, B, pad_id, config.hf.repeats)
                for s in ("padded", "ffd"):
                    if s in by_strategy:
                        hf[f"speedup_of_{s}_over_hf"] = hf["prefill_s"] / by_strategy[s]["prefill_s_first_batch"]
                hf["first_tokens_agree_with_ours"] = float(np.mean(
                    np.asarray(hf["first_tokens"]) == np.asarray(by_strategy["padded"]["first_tokens"][:B])))
                by_strategy["hf_padded"] = hf
            results.setdefault(name, {})[str(B)] = by_strategy
    del hf_model

    extras: dict = {}
    if config.serving.enabled:
        _log(f"serving view on {config.serving.model}")
        rng = np.random.default_rng([config.seed, 7])
        pool = [prompts[i] for i in rng.choice(len(prompts), min(len(prompts), max(config.serving.candidates)),
                                              replace=False)]
        extras["serving"] = bench.serving_view(programs[config.serving.model], pool,
                                               config.serving.candidates,
                                               int(config.serving.budget_gib * 2**30), pad_id)
        extras["serving"]["model"] = config.serving.model
    if config.spread.enabled:
        _log(f"speedup vs length spread on {config.spread.model}")
        extras["spread"] = {config.spread.model: bench.speedup_vs_spread(
            programs[config.spread.model], prompts, config.spread.batch_size, config.spread.widths,
            config.seed, repeats=config.spread.repeats, pad_id=pad_id)}
        bench.plot_spread(extras["spread"], os.path.join(workdir, "speedup_vs_spread.png"))
    if config.stream.enabled:
        _log(f"bucketed stream on {config.stream.model}")
        cfg, params, _ = models[config.stream.model]
        extras["stream_compiles"] = bench.bucketed_stream_compiles(
            params, cfg, prompts, config.stream.batch_size, config.stream.batches, config.seed,
            config.attn_backend, pad_id)
        extras["stream_compiles"]["model"] = config.stream.model

    summary = _write_outputs(config, workdir, results, extras, lengths, len(prompts),
                             time.perf_counter() - t_start)
    print(bench.format_table(results))
    return summary


def _load_hf(gguf: str, threads: int):
    import torch
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                                 dtype=torch.float32)
    return model.eval()


def _write_outputs(config, workdir, results, extras, lengths, kept, seconds) -> dict:
    env = {"jax": jax.__version__, "backend": jax.default_backend(),
           "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
           "load_average": os.getloadavg(), "python": platform.python_version()}
    stats = {"prompts": int(len(lengths)), "kept": int(kept),
             "tokens_min": int(lengths.min()), "tokens_median": float(np.median(lengths)),
             "tokens_mean": float(lengths.mean()), "tokens_max": int(lengths.max())}
    payload = {"results": results, **extras, "prompt_tokens": stats, "env": env,
               "wall_s": seconds, **bench.rss_bytes()}
    with open(os.path.join(workdir, "bench.json"), "w") as f:
        json.dump(payload, f, indent=1)
    with open(os.path.join(workdir, "README.md"), "w") as f:
        f.write(_readme(config, results, extras, stats, env, seconds, payload["peak_rss"]))
    headline = {}
    for name, by_bs in results.items():
        for bs, r in by_bs.items():
            if "ffd" in r:
                headline[f"{name}/{bs}/ffd"] = {k: round(r["ffd"][k], 3) for k in
                                                ("speedup", "ideal_speedup", "fraction_of_ideal")}
    return {"workdir": workdir, "wall_s": round(seconds, 1), "ffd": headline}


def _readme(config, results, extras, stats, env, seconds, peak_rss) -> str:
    lines = ["# Prepacking benchmark", "",
             "Prefill of real MMLU prompts (`gdm_jax/assets/prompts/mmlu.jsonl`, tokenised with "
             "SmolLM2's tokenizer) by padded, length-sorted and prepacked batches. "
             "Speedup is over padded prefill of the same prompt pool; *ideal* is padded slot "
             "tokens / the strategy's slot tokens. TTFT runs from token ids to first tokens on the host "
             "(layout + transfer + prefill + unpack + argmax). Compile time is excluded; "
             "program peak = arguments + outputs + temporaries from `memory_analysis()`.", "",
             "Command: `python -m gdm_jax.launch --config=configs/prepack.py"
             f"{':' + config.preset if config.preset else ''} --workdir=results/prepack`", "",
             f"Pools: {config.pool_batches} batch(es) per batch size, at least {config.min_pool_prompts} "
             f"prompts; prompts longer than {config.max_prompt_tokens or config.max_seq_len} tokens dropped; "
             f"{config.repeats} timed run(s) per batch (min kept)"
             + (", after one untimed run per shape" if config.warmup else
                ", no untimed warm-up run (on CPU a program's first run costs the same as later ones)")
             + ". Where a pool is a single batch, *sorted* would equal *padded* and *dataset* would equal "
             "*ffd*, so those rows are left out. The LM head runs only at each prompt's last token in "
             "every strategy (padded included) and in HF (`logits_to_keep=1`).", "",
             f"Environment: {json.dumps(env)}; wall time {seconds:.0f} s. A load average above the "
             "core count means other processes shared the CPUs: identical shapes then time differently "
             "by tens of percent, so read single-batch speedups with that noise in mind.", "",
             f"Prompt tokens (before the length cap): {json.dumps(stats)}", "",
             f"Models ({config.dtype}): smollm2 = SmolLM2-135M-Instruct, real weights (Q4_1 GGUF "
             "dequantised); random = random weights, SmolLM2's vocabulary, " + ", ".join(
                 f"{k} {config.random_model[k]}" for k in ("dim", "n_layers", "n_heads", "n_kv_heads",
                                                           "hidden_dim")) + ".", "",
             bench.format_table(results), "",
             f"Process peak RSS over the whole run (all models, HF included): {peak_rss / 2**30:.2f} GiB; "
             "per-strategy RSS after each strategy is in bench.json.", ""]
    for name, by_bs in results.items():
        for bs, r in by_bs.items():
            if "hf_padded" in r:
                hf = r["hf_padded"]
                lines.append(f"- {name} batch {bs}: HF transformers padded prefill {hf['prefill_s']:.3f} s on "
                             f"the first batch; ours padded is {hf.get('speedup_of_padded_over_hf', 0):.2f}x and "
                             f"prepacked FFD {hf.get('speedup_of_ffd_over_hf', 0):.2f}x faster; first tokens "
                             f"agree with ours on {100 * hf['first_tokens_agree_with_ours']:.0f}% of prompts.")
    lines += ["", "Goal check (prepacked prefill >= 80% of the ideal speedup; faster than HF padded "
              "prefill of the same first batch):", ""]
    for name, by_bs in results.items():
        for bs, r in by_bs.items():
            parts = [f"{s} {100 * r[s]['fraction_of_ideal']:.0f}% of ideal "
                     f"({'meets' if r[s]['fraction_of_ideal'] >= 0.8 else 'misses'} 80%)"
                     for s in ("bfd", "ffd", "dataset") if s in r]
            if "hf_padded" in r:
                hf = r["hf_padded"]
                parts.append(f"vs HF: ours padded {hf.get('speedup_of_padded_over_hf', 0):.2f}x, "
                             f"FFD {hf.get('speedup_of_ffd_over_hf', 0):.2f}x "
                             f"({'beats' if hf.get('speedup_of_ffd_over_hf', 0) > 1 else 'does not beat'} HF)")
            lines.append(f"- {name} batch {bs}: " + "; ".join(parts))
    if "serving" in extras:
        s = extras["serving"]
        lines += ["", f"Serving view ({s['model']}, budget {s['budget_bytes'] / 2**30:.2f} GiB of program "
                  f"memory): largest batch padded = {s['largest_fitting']['padded']}, prepacked FFD = "
                  f"{s['largest_fitting']['ffd']}. Program peak MiB per batch size: " + ", ".join(
                      f"{b}: padded {v.get('padded', 0) / 2**20:.0f} / ffd {v.get('ffd', 0) / 2**20:.0f}"
                      for b, v in s["candidates"].items())]
    if "spread" in extras:
        lines += ["", "Speedup vs length spread:", "", "![speedup vs spread](speedup_vs_spread.png)", "",
                  "| model | width | length std | measured | ideal |", "|---|---|---|---|---|"]
        for name, points in extras["spread"].items():
            for p in points:
                lines.append(f"| {name} | {p['width']} | {p['length_std']:.1f} | {p['speedup']:.2f}x | "
                             f"{p['ideal_speedup']:.2f}x |")
    if "stream_compiles" in extras:
        s = extras["stream_compiles"]
        lines += ["", f"Compiles for a stream of {s['batches']} random FFD batches ({s['model']}): "
                  f"exact shapes {s['exact']} (distinct shapes {s['distinct_exact_shapes']}), "
                  f"with shape buckets {s['bucketed']}."]
    return "\n".join(lines) + "\n"
