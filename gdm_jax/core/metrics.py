"""Metrics sinks: JSONL (the source of truth for plots) and TensorBoard."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np


def to_python(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Host floats from a dict of scalars (jax/numpy arrays or numbers)."""
    out = {}
    for k, v in metrics.items():
        a = np.asarray(v)
        if a.size == 1:
            out[k] = float(a.reshape(()))
    return out


class MetricsWriter:
    """Appends one JSON line per record and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float], **extra: Any) -> None:
        """Record ``metrics`` at ``step`` (e.g. env steps); ``extra`` goes to JSONL only."""
        if not self.enabled:
            return
        record = {"step": int(step), **extra,
                  **{k: (None if not math.isfinite(v) else v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in metrics.items():
            if math.isfinite(v):
                self._tb.add_scalar(k, v, int(step))

    def truncate_after(self, chunk: int) -> None:
        """Drop records past ``chunk`` (lines written after the checkpoint we resume from)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        keep = [l for l in open(self.path) if l.strip() and json.loads(l).get("chunk", 0) <= chunk]
        with open(self.path, "w") as f:
            f.writelines(keep)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str) -> list[dict]:
    """All records of a metrics file (empty if absent)."""
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]
