"""Prepacking benchmark: padded vs length-sorted vs prepacked prefill on real MMLU prompts.

Presets: "tiny" (launch smoke test, seconds: a tiny random model), "cpu" (SmolLM2-135M
and a wider random model at batch sizes 16/32/64 on 2 CPU cores in ~15 minutes), "" (the
full benchmark for an accelerator: batch sizes 16/32/64, a 1B-class random model).
"""
import ml_collections


def _model(dim, n_layers, n_heads, n_kv_heads, hidden_dim, batch_sizes):
    return ml_collections.ConfigDict(dict(
        enabled=True, dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
        hidden_dim=hidden_dim, batch_sizes=batch_sizes))


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    """Config for ``python -m gdm_jax.launch --config=configs/prepack.py[:preset]``."""
    c = ml_collections.ConfigDict()
    c.experiment = "prepack"
    c.preset = preset  # recorded so the results README can show the command
    c.seed = 0
    c.prompts_path = ""  # JSONL with a "text" field; "" = gdm_jax/assets/prompts/mmlu.jsonl
    c.max_prompt_tokens = 0  # drop longer prompts (reported); 0 = keep all up to max context
    c.pool_batches = 2  # each batch size prefills a random pool of pool_batches * batch_size prompts
    c.min_pool_prompts = 0  # ... but at least this many prompts (rounded up to whole batches)
    c.warmup = True  # one untimed run per program shape before the timed runs
    c.strategies = ("padded", "sorted", "binpacking", "bfd", "ffd", "dataset")
    c.repeats = 2  # timed runs per batch (min kept), after an untimed compile
    c.attn_backend = "xla"
    c.dtype = "float32"
    c.max_seq_len = 2048  # context of the model (SmolLM2's own is 8192; MMLU prompts are < 1k)

    # Real weights: SmolLM2-135M-Instruct (Q4_1 GGUF dequantised), its own tokenizer.
    c.smollm2 = ml_collections.ConfigDict(dict(enabled=True, batch_sizes=(16, 32, 64)))
    # Random weights, SmolLM2's vocabulary, a larger body.
    c.random_model = _model(2048, 16, 32, 8, 8192, (16, 32, 64))
    # Small random model for the speedup-vs-spread sweep and the bucketed-stream compile count.
    c.small_model = _model(256, 4, 4, 2, 768, ())

    # HF transformers padded prefill of the first batch of each listed smollm2 batch size.
    c.hf = ml_collections.ConfigDict(dict(enabled=True, batch_sizes=(16, 32, 64), repeats=2, threads=0))
    c.serving = ml_collections.ConfigDict(dict(
        enabled=True, model="smollm2", budget_gib=16.0, candidates=(16, 32, 64, 128, 256)))
    c.spread = ml_collections.ConfigDict(dict(
        enabled=True, model="smollm2", batch_size=32, widths=(0.05, 0.25, 0.5, 0.75, 1.0), repeats=3))
    c.stream = ml_collections.ConfigDict(dict(enabled=True, model="small", batch_size=16, batches=12))

    if preset == "tiny":
        c.max_prompt_tokens = 96
        c.pool_batches = 1
        c.min_pool_prompts = 8  # two batches of 4: sorted and dataset differ from padded and ffd
        c.repeats = 1
        c.smollm2.enabled = False
        c.random_model = _model(32, 2, 4, 2, 64, (4,))
        c.small_model = _model(32, 2, 4, 2, 64, ())
        c.hf.enabled = False
        c.serving.update(model="small", budget_gib=0.05, candidates=(2, 4))
        c.spread.update(model="small", batch_size=4, widths=(0.1, 1.0), repeats=1)
        c.stream.update(batch_size=4, batches=3)
    elif preset == "cpu":
        # Sized to ~15 min on 2 shared cores: one-batch pools (two batches at 16, so sorted
        # and dataset-level packing have something to reorder), one timed run, no warm-up,
        # and the binpacking-library layout (same rows as bfd/ffd) left to the full preset.
        c.max_prompt_tokens = 400
        c.pool_batches = 1
        c.min_pool_prompts = 32
        c.repeats = 1
        c.warmup = False
        c.strategies = ("padded", "sorted", "bfd", "ffd", "dataset")
        c.smollm2.batch_sizes = (16, 32, 64)
        # SmolLM2-360M's width (960, 15 heads, 5 KV heads, MLP 2560) at 6 layers.
        c.random_model = _model(960, 6, 15, 5, 2560, (16, 32, 64))
        c.hf.update(batch_sizes=(16, 32, 64), repeats=1)
        c.serving.update(budget_gib=1.5, candidates=(16, 32, 64, 128))
        c.spread.update(model="small", batch_size=16, repeats=2)
        c.stream.update(batch_size=16, batches=12)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for configs/prepack.py; choose tiny, cpu or ''")
    return c
