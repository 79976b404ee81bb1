"""Prepacking benchmark: padded vs length-sorted vs prepacked prefill on real MMLU prompts.

Presets: "tiny" (launch smoke test, seconds: a tiny random model), "cpu" (SmolLM2-135M
and a wider random model on 2 CPU cores in ~10 minutes, small batches), "" (the full
benchmark for an accelerator: batch sizes 16/32/64, a 1B-class random model).
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

    c.hf = ml_collections.ConfigDict(dict(enabled=True, batch_size=16, repeats=2, threads=0))
    c.serving = ml_collections.ConfigDict(dict(
        enabled=True, model="smollm2", budget_gib=16.0, candidates=(16, 32, 64, 128, 256)))
    c.spread = ml_collections.ConfigDict(dict(
        enabled=True, model="smollm2", batch_size=32, widths=(0.05, 0.25, 0.5, 0.75, 1.0), repeats=3))
    c.stream = ml_collections.ConfigDict(dict(enabled=True, model="small", batch_size=16, batches=12))

    if preset == "tiny":
        c.max_prompt_tokens = 96
        c.pool_batches = 1
        c.repeats = 1
        c.smollm2.enabled = False
        c.random_model = _model(32, 2, 4, 2, 64, (4,))
        c.small_model = _model(32, 2, 4, 2, 64, ())
        c.hf.enabled = False
        c.serving.update(model="small", budget_gib=0.05, candidates=(2, 4))
        c.spread.update(model="small", batch_size=4, widths=(0.1, 1.0), repeats=1)
        c.stream.update(batch_size=4, batches=3)
    elif preset == "cpu":
        c.max_prompt_tokens = 400
        c.pool_batches = 2
        c.repeats = 2
        c.smollm2.batch_sizes = (8, 16)
        c.random_model = _model(960, 6, 15, 5, 2560, (8,))
        c.hf.update(batch_size=8, repeats=1)
        c.serving.update(budget_gib=2.0, candidates=(8, 16, 32, 64))
        c.spread.update(model="small", batch_size=16)
        c.stream.update(batch_size=16, batches=16)
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for configs/prepack.py; choose tiny, cpu or ''")
    return c
