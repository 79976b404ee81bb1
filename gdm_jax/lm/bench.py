"""Prepacking benchmark (not a test): prefill time, TTFT and memory of padded vs packed prefill.

For each model and batch size, a pool of real MMLU prompts is prefilled as batches by
every strategy: ``padded`` (random batches, right padding), ``sorted`` (length-ordered
batches), ``binpacking``/``bfd``/``ffd`` (each random batch prepacked) and ``dataset``
(the whole pool prepacked once by FFD, rows cut into as many batches). Programs are
compiled ahead (compile time excluded, memory read from ``memory_analysis()``), then each
batch is timed from token ids to first tokens on the host.
"""
from __future__ import annotations

import json
import math
import os
import resource
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gdm_jax.data import packing
from gdm_jax.lm import bucketing
from gdm_jax.lm.config import LlamaConfig
from gdm_jax.lm.prefill import (device_inputs, greedy_first_tokens, layout_batch,
                                prefill_and_unpack)

PROMPTS_FILE = os.path.join(os.path.dirname(__file__), "..", "assets", "prompts", "mmlu.jsonl")
BATCH_STRATEGIES = ("padded", "sorted", "binpacking", "bfd", "ffd", "dataset")


def load_prompt_texts(path: str = "") -> list[str]:
    """Prompt texts of a JSONL file with a ``text`` field (default: the shared MMLU prompts)."""
    with open(path or PROMPTS_FILE) as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def rss_bytes() -> dict:
    """Current and peak resident set size of this process."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, kb = line.split()[:2]
                fields[name[:-1]] = int(kb) * 1024
    return {"rss": fields.get("VmRSS", 0),
            "peak_rss": max(fields.get("VmHWM", 0), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}


def program_memory(compiled) -> dict:
    """Bytes a compiled program needs: arguments, outputs, temporaries, and their peak sum."""
    m = compiled.memory_analysis()
    peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return {"argument": int(m.argument_size_in_bytes), "output": int(m.output_size_in_bytes),
            "temp": int(m.temp_size_in_bytes), "peak": int(peak)}


class Programs:
    """Ahead-of-time compiled prefill+unpack programs, one per input shape."""

    def __init__(self, params: dict, cfg: LlamaConfig, attn_backend: str = "xla"):
        self.params, self.cfg, self.attn_backend = params, cfg, attn_backend
        self.compiled: dict = {}
        self.memory: dict = {}
        self.warmed: set = set()

    def get(self, inputs: dict, warm: bool = True):
        """The compiled program for these input shapes and its memory; warm: run it once."""
        key = tuple(sorted((k, v.shape) for k, v in inputs.items()))
        if key not in self.compiled:
            C = inputs["tokens"].shape[1]
            lowered = prefill_and_unpack.lower(self.params, inputs, cfg=self.cfg, num_slots=C,
                                               attn_backend=self.attn_backend)
            self.compiled[key] = lowered.compile()
            self.memory[key] = program_memory(self.compiled[key])
            # The first-token argmax is its own tiny program: compile it here, not in TTFT.
            N = inputs["prompt_length"].shape[0]
            greedy_first_tokens(jnp.zeros((N, self.cfg.vocab_size), jnp.float32)).block_until_ready()
        if warm and key not in self.warmed:
            # One untimed run: a program's first execution may pay one-off allocation costs.
            jax.block_until_ready(self.compiled[key](self.params, inputs))
            self.warmed.add(key)
        return self.compiled[key], self.memory[key]


def _batches_for(strategy: str, pool: list[np.ndarray], batch_size: int) -> list:
    """Per-batch prompt groups (lists of pool indices), or packed batches for ``dataset``."""
    n = len(pool)
    if strategy == "sorted":
        return [list(b) for b in packing.sorted_batches([len(p) for p in pool], batch_size)]
    if strategy == "dataset":
        rows = packing.assign_rows([len(p) for p in pool], max(len(p) for p in pool), "ffd")
        num_batches = math.ceil(n / batch_size)
        return packing.pack_dataset(pool, rows_per_batch=math.ceil(len(rows) / num_batches))
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def _layout(strategy: str, pool: list[np.ndarray], group, pad_id: int) -> packing.PackedBatch:
    if strategy == "dataset":
        return group
    prompts = [pool[i] for i in group]
    return layout_batch(prompts, "padded" if strategy == "sorted" else strategy, pad_id=pad_id)


def _time_batch(programs: Programs, pool, strategy: str, group, pad_id: int):
    """(prefill s, TTFT s, layout s, first tokens) of one batch, from token ids to host."""
    t0 = time.perf_counter()
    batch = _layout(strategy, pool, group, pad_id)
    t1 = time.perf_counter()
    inputs = device_inputs(batch, pad_id=pad_id)
    compiled, _ = programs.get(inputs, warm=False)
    out = jax.block_until_ready(compiled(programs.params, inputs))
    t2 = time.perf_counter()
    first = np.asarray(greedy_first_tokens(out.next_logits_NxV))
    t3 = time.perf_counter()
    return t2 - t1, t3 - t0, t1 - t0, first


def time_strategies(programs: Programs, pool: list[np.ndarray], strategies: Sequence[str],
                    batch_size: int, *, repeats: int = 1, pad_id: int = 0,
                    warmup: bool = True) -> dict:
    """Prefill the pool by each strategy; per batch the min over repeats, summed over batches.

    Every shape is compiled (and with ``warmup`` run once) first; the timed passes then
    interleave the strategies, rotating their order each repeat, so drift in machine load
    does not favour whichever strategy happens to run first.
    """
    plans = {}
    for s in strategies:
        groups = _batches_for(s, pool, batch_size)
        pack_s = 0.0
        if s == "dataset":  # packed once, ahead of serving: reported, not in TTFT
            t = time.perf_counter()
            _batches_for(s, pool, batch_size)
            pack_s = time.perf_counter() - t
        layouts = [_layout(s, pool, g, pad_id) for g in groups]
        for b in layouts:  # compile every shape first: compile time is not prefill time
            programs.get(device_inputs(b, pad_id=pad_id), warm=warmup)
        plans[s] = (groups, layouts, pack_s)
    best = {s: [(math.inf,) * 3] * len(plans[s][0]) for s in strategies}
    first_tokens = {s: {} for s in strategies}
    for r in range(repeats):
        for s in list(strategies)[r % len(strategies):] + list(strategies)[:r % len(strategies)]:
            groups, layouts, _ = plans[s]
            for i, (group, b) in enumerate(zip(groups, layouts)):
                *times, first = _time_batch(programs, pool, s, group, pad_id)
                best[s][i] = min(best[s][i], tuple(times))
                for j, g in enumerate(b.prompt_index if s == "dataset" else group):
                    first_tokens[s][int(g)] = int(first[j])
    results = {}
    for s in strategies:
        groups, layouts, pack_s = plans[s]
        prefill_s, ttft_s, layout_s = (np.array(x) for x in zip(*best[s]))
        mems = [programs.get(device_inputs(b, pad_id=pad_id), warm=False)[1] for b in layouts]
        results[s] = {
            "batches": len(layouts), "rows": sum(b.num_rows for b in layouts),
            "slot_tokens": sum(b.slot_tokens for b in layouts),
            "real_tokens": sum(b.real_tokens for b in layouts),
            "lower_bound_rows": sum(packing.lower_bound_rows(b.prompt_length, b.capacity)
                                    for b in layouts),
            "prefill_s": float(prefill_s.sum()), "ttft_s_mean": float(ttft_s.mean()),
            "prefill_s_first_batch": float(prefill_s[0]),
            "layout_s": float(layout_s.sum()), "dataset_pack_s": pack_s,
            "program_peak_bytes": max(m["peak"] for m in mems),
            "program_temp_bytes": max(m["temp"] for m in mems),
            "first_tokens": [first_tokens[s][i] for i in range(len(pool))], **rss_bytes()}
    return results


def add_speedups(results: dict) -> dict:
    """Speedup over padded next to the ideal (padded slot tokens / strategy slot tokens)."""
    base = results["padded"]
    for r in results.values():
        r["speedup"] = base["prefill_s"] / r["prefill_s"]
        r["ttft_speedup"] = base["ttft_s_mean"] / r["ttft_s_mean"]
        r["ideal_speedup"] = base["slot_tokens"] / r["slot_tokens"]
        r["fraction_of_ideal"] = r["speedup"] / r["ideal_speedup"]
        r["first_tokens_agree_with_padded"] = float(np.mean(
            np.asarray(r["first_tokens"]) == np.asarray(base["first_tokens"])))
    return results


def hf_padded_prefill(hf_model, pool: list[np.ndarray], batch_size: int, pad_id: int,
                      repeats: int = 1) -> dict:
    """Hugging Face transformers (torch CPU) padded prefill of the first batch, as HF generate does it.

    Left padding with explicit positions and ``logits_to_keep=1`` (the LM head only at the
    last token), like ``generate``'s own prefill and like ours, so neither side pays for
    logits the other skips; the KV cache is built (``use_cache``) as ours is.
    """
    import torch

    prompts = pool[:batch_size]
    T = max(len(p) for p in prompts)
    ids = np.full((len(prompts), T), pad_id, np.int64)
    mask = np.zeros((len(prompts), T), np.int64)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):], mask[i, T - len(p):] = p, 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    best = math.inf
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = hf_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                           position_ids=torch.from_numpy(positions), use_cache=True, logits_to_keep=1)
            first = out.logits[:, -1].argmax(-1).numpy()
            best = min(best, time.perf_counter() - t0)
            del out
    return {"batch_size": len(prompts), "slot_tokens": int(ids.size),
            "real_tokens": int(mask.sum()), "prefill_s": best, "threads": torch.get_num_threads(),
            "first_tokens": first.tolist(), **rss_bytes()}


def serving_view(programs: Programs, pool: list[np.ndarray], candidates: Sequence[int],
                 budget_bytes: int, pad_id: int = 0) -> dict:
    """Largest batch whose compiled prefill fits the memory budget, padded vs prepacked (FFD)."""
    table = {"budget_bytes": int(budget_bytes), "candidates": {}, "largest_fitting": {}}
    for strategy in ("padded", "ffd"):
        fits = 0
        for B in sorted(candidates):
            if B > len(pool):
                break
            batch = layout_batch(pool[:B], strategy, pad_id=pad_id)
            _, mem = programs.get(device_inputs(batch, pad_id=pad_id), warm=False)
            table["candidates"].setdefault(str(B), {})[strategy] = mem["peak"]
            if mem["peak"] <= budget_bytes:
                fits = B
        table["largest_fitting"][strategy] = fits
    return table


def spread_batches(lengths: Sequence[int], batch_size: int, widths: Sequence[float],
                   rng: np.random.Generator) -> list[np.ndarray]:
    """One batch per width w: prompts drawn from the longest fraction w of prompts by length.

    Small w gives long prompts of similar length (nothing to pack); growing w mixes in
    shorter prompts, so the length spread, and the room for packing, grows.
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    n, out = len(order), []
    for w in widths:
        window = order[n - max(batch_size, int(w * n)):]
        out.append(rng.choice(window, size=batch_size, replace=False))
    return out


def speedup_vs_spread(programs: Programs, prompts: list[np.ndarray], batch_size: int,
                      widths: Sequence[float], seed: int, repeats: int = 1,
                      pad_id: int = 0) -> list[dict]:
    """Measured and ideal FFD speedup over padded for batches of increasing length spread."""
    rng = np.random.default_rng(seed)
    points = []
    for w, idx in zip(widths, spread_batches([len(p) for p in prompts], batch_size, widths, rng)):
        pool = [prompts[i] for i in idx]
        res = add_speedups(time_strategies(programs, pool, ("padded", "ffd"), batch_size,
                                           repeats=repeats, pad_id=pad_id))
        lens = np.array([len(p) for p in pool])
        points.append({"width": w, "length_std": float(lens.std()), "length_mean": float(lens.mean()),
                       "speedup": res["ffd"]["speedup"], "ideal_speedup": res["ffd"]["ideal_speedup"]})
    return points


def bucketed_stream_compiles(params: dict, cfg: LlamaConfig, prompts: list[np.ndarray],
                             batch_size: int, num_batches: int, seed: int,
                             attn_backend: str = "xla", pad_id: int = 0) -> dict:
    """Compiles triggered by a stream of random FFD batches, exact shapes vs shape buckets."""
    from gdm_jax.lm.prefill import prefill_batch

    rng = np.random.default_rng(seed)
    stream = [layout_batch([prompts[i] for i in rng.choice(len(prompts), batch_size, replace=False)],
                           "ffd", pad_id=pad_id) for _ in range(num_batches)]
    max_len = min(cfg.max_seq_len, max(len(p) for p in prompts))
    buckets = bucketing.Buckets.for_limits(max_rows=batch_size, max_length=max_len,
                                           max_prompts=batch_size)
    counts = {}
    for name, b in (("exact", None), ("bucketed", buckets)):
        jax.clear_caches()
        with bucketing.count_compiles() as counter:
            for batch in stream:
                jax.block_until_ready(prefill_batch(params, cfg, batch, buckets=b,
                                                    attn_backend=attn_backend, pad_id=pad_id))
        counts[name] = counter.count
    counts["distinct_exact_shapes"] = len({(b.num_rows, b.capacity, b.num_prompts) for b in stream})
    counts["batches"] = num_batches
    return counts


def plot_spread(points_by_model: dict, path: str) -> None:
    """PNG of measured and ideal speedup against the length spread of a batch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in points_by_model.items():
        points = sorted(points, key=lambda p: p["length_std"])
        x = [p["length_std"] for p in points]
        ax.plot(x, [p["speedup"] for p in points], "o-", label=f"{name}: measured (FFD)")
        ax.plot(x, [p["ideal_speedup"] for p in points], "k--", alpha=0.5,
                label=f"{name}: ideal (padded/packed tokens)")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("std of prompt length in the batch (tokens)")
    ax.set_ylabel("prefill speedup over padded")
    ax.set_title("Prepacking speedup vs length spread")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(results: dict) -> str:
    """Markdown table of one results dict (model -> batch size -> strategy -> numbers)."""
    lines = ["| model | batch | strategy | rows | padded/packed tokens | prefill s | TTFT s | speedup | ideal | % of ideal | program peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, by_bs in results.items():
        for bs, strategies in by_bs.items():
            for s, r in strategies.items():
                if s == "hf_padded":
                    lines.append(f"| {model} | {bs} | HF transformers padded (torch, {r['threads']} threads) | "
                                 f"{r['batch_size']} | {r['slot_tokens']}/{r['real_tokens']} | "
                                 f"{r['prefill_s']:.3f} | | | | | |")
                    continue
                lines.append(
                    f"| {model} | {bs} | {s} | {r['rows']} | {r['slot_tokens']}/{r['real_tokens']} | "
                    f"{r['prefill_s']:.3f} | {r['ttft_s_mean']:.3f} | {r['speedup']:.2f}x | "
                    f"{r['ideal_speedup']:.2f}x | {100 * r['fraction_of_ideal']:.0f}% | "
                    f"{r['program_peak_bytes'] / 2**20:.0f} |")
    return "\n".join(lines)
