"""The host run loop shared by every training experiment.

The device does the work in jitted chunks (collection + K updates); this loop only
dispatches chunks, reads their metrics one chunk late, evaluates, checkpoints,
handles SIGTERM, and writes plots and a summary.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
from tqdm import tqdm

from gdm_jax.core import config_utils
from gdm_jax.core.checkpoint import Checkpointer
from gdm_jax.core.metrics import MetricsWriter, to_python
from gdm_jax.core.plots import plot_curves

State = Any


class ConfigMismatchError(ValueError):
    """The workdir holds a run with a different config."""


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN/inf; the run stops and keeps its last good checkpoint."""


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of identical jitted chunks, e.g. offline pretraining or online fine-tuning."""
    name: str
    chunk_fn: Callable[[State], tuple[State, Mapping[str, jax.Array]]]
    num_chunks: int
    env_steps_per_chunk: int = 0
    updates_per_chunk: int = 0


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What a system hands to the run loop."""
    name: str
    init_state: Callable[[jax.Array], State]
    phases: Sequence[Phase]
    evaluate: Callable[[State], Mapping[str, float]] | None = None
    plots: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    plot_x: str = "step"  # "step" (env steps), "updates" or "chunk"


def check_workdir(config: Any, workdir: str) -> None:
    """Refuse to reuse a workdir whose checkpoints came from a different config."""
    path = os.path.join(workdir, "config.json")
    has_ckpt = os.path.isdir(os.path.join(workdir, "checkpoints")) and any(
        n.isdigit() for n in os.listdir(os.path.join(workdir, "checkpoints")))
    if not (has_ckpt and os.path.exists(path)):
        return
    saved = json.load(open(path))
    current = config_utils.to_dict(config)
    keys = config_utils.diff(saved, current)
    if keys:
        flat_s, flat_c = config_utils.flatten(saved), config_utils.flatten(current)
        detail = "; ".join(f"{k}: saved {flat_s.get(k, '<absent>')!r} vs now {flat_c.get(k, '<absent>')!r}"
                           for k in keys[:8])
        raise ConfigMismatchError(
            f"workdir {workdir!r} holds checkpoints of a different config ({detail}). "
            "Nothing was overwritten; use another --workdir or the original config.")


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop checks between chunks."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _phase_at(phases: Sequence[Phase], chunk: int) -> Phase:
    start = 0
    for phase in phases:
        if chunk < start + phase.num_chunks:
            return phase
        start += phase.num_chunks
    raise IndexError(chunk)


def _postfix(metrics: Mapping[str, float]) -> dict[str, str]:
    """The few numbers worth watching: eval scores first, then returns, then losses."""
    def rank(k: str) -> int:
        for i, pat in enumerate(("eval/", "score", "return", "loss")):
            if pat in k:
                return i
        return 99
    keys = sorted((k for k in metrics if rank(k) < 99 and "/imag" not in k), key=rank)[:4]
    short = lambda k: (k.replace("eval/", "").replace("normalized_score", "score")
                       .replace("episode_return", "return"))
    return {short(k): f"{metrics[k]:.3g}" for k in keys}


def run_experiment(exp: Experiment, config: Any, workdir: str) -> dict:
    """Run (or resume) ``exp`` in ``workdir``; returns the summary also written to summary.json."""
    os.makedirs(workdir, exist_ok=True)
    check_workdir(config, workdir)
    is_main = jax.process_index() == 0
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config_utils.to_dict(config), f, indent=2, sort_keys=True)
    ckpt = Checkpointer(workdir, keep=int(config.run.keep_checkpoints))
    writer = MetricsWriter(workdir, enabled=is_main)
    total = sum(p.num_chunks for p in exp.phases)
    state = exp.init_state(jax.random.key(int(config.seed)))
    counters = {"chunk": 0, "step": 0, "updates": 0, "wall_seconds": 0.0}
    if ckpt.latest() is not None:
        state, meta = ckpt.restore(state)
        counters.update({k: meta[k] for k in counters})
        writer.truncate_after(counters["chunk"])  # lines written after that checkpoint
        print(f"[{exp.name}] resumed from chunk {counters['chunk']} ({ckpt.latest()})", file=sys.stderr)

    eval_every = int(config.run.eval_every)
    ckpt_every = int(config.run.checkpoint_every)
    last_metrics: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    stopped = None
    bar = tqdm(total=total, initial=counters["chunk"], desc=exp.name, unit="chunk",
               dynamic_ncols=True, file=sys.stderr, disable=not is_main, mininterval=1.0)

    def flush(pending) -> None:
        nonlocal last_metrics
        host = to_python(pending["metrics"])
        for k, v in host.items():
            if "loss" in k and not math.isfinite(v):
                raise NonFiniteLossError(
                    f"[{exp.name}] {k}={v} at chunk {pending['chunk']} (phase {pending['phase']}); "
                    f"stopping. The last good checkpoint (chunk {ckpt.latest()}) is kept in "
                    f"{ckpt.directory}.")
        last_metrics = host
        writer.write(pending["step"], host, chunk=pending["chunk"], updates=pending["updates"],
                     phase=pending["phase"], wall_seconds=round(pending["wall"], 3))
        bar.set_postfix(_postfix({**host, **last_eval}), refresh=False)

    pending = None
    t0 = time.perf_counter() - counters["wall_seconds"]
    with _SigtermFlag() as sigterm:
        try:
            while counters["chunk"] < total:
                phase = _phase_at(exp.phases, counters["chunk"])
                state, metrics = phase.chunk_fn(state)
                counters["chunk"] += 1
                counters["step"] += phase.env_steps_per_chunk
                counters["updates"] += phase.updates_per_chunk
                if pending is not None:  # one chunk late: the device is busy with this one
                    flush(pending)
                pending = {"metrics": metrics, "chunk": counters["chunk"], "phase": phase.name,
                           "step": counters["step"], "updates": counters["updates"],
                           "wall": time.perf_counter() - t0}
                bar.update(1)
                c = counters["chunk"]
                do_eval = exp.evaluate is not None and ((eval_every and c % eval_every == 0) or c == total)
                do_ckpt = (ckpt_every and c % ckpt_every == 0) or c == total or sigterm.raised
                if do_eval or do_ckpt:
                    flush(pending)  # never evaluate or save a state whose losses we have not checked
                    pending = None
                if do_eval:
                    last_eval = {f"eval/{k}": float(v) for k, v in exp.evaluate(state).items()}
                    writer.write(counters["step"], last_eval, chunk=c, updates=counters["updates"],
                                 phase=phase.name)
                    bar.set_postfix(_postfix({**last_metrics, **last_eval}), refresh=False)
                    if is_main:  # curves to look at while the run goes on
                        _write_plots(exp, workdir)
                if do_ckpt:
                    counters["wall_seconds"] = time.perf_counter() - t0
                    ckpt.save(c, state, dict(counters))
                if sigterm.raised:
                    stopped = "SIGTERM"
                    print(f"\n[{exp.name}] SIGTERM: saved checkpoint at chunk {c}; exiting.", file=sys.stderr)
                    break
            if pending is not None:
                flush(pending)
        finally:
            bar.close()
            writer.close()
            ckpt.close()

    counters["wall_seconds"] = time.perf_counter() - t0
    summary = {"experiment": exp.name, **counters, "train": last_metrics, "eval": last_eval,
               "stopped": stopped}
    if is_main:
        _write_plots(exp, workdir)
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def run_finished(workdir: str) -> bool:
    """Whether ``workdir`` holds a run that ended normally (summary.json, not stopped early)."""
    path = os.path.join(workdir, "summary.json")
    return os.path.exists(path) and json.load(open(path)).get("stopped") is None


def _write_plots(exp: Experiment, workdir: str) -> None:
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    labels = {"step": "env steps", "updates": "updates", "chunk": "chunk"}
    for name, keys in exp.plots.items():
        plot_curves(metrics_path, keys, os.path.join(workdir, "plots", f"{name}.png"),
                    title=f"{exp.name}: {name}", x_key=exp.plot_x, x_label=labels[exp.plot_x])
