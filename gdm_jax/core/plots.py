"""Learning-curve PNGs from metrics.jsonl."""
from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gdm_jax.core.metrics import read_jsonl  # noqa: E402


def plot_curves(metrics_path: str, keys: Sequence[str], out_png: str, title: str = "",
                x_key: str = "step", x_label: str = "env steps") -> str | None:
    """One panel per key (value vs ``x_key``); returns the PNG path or None if no data."""
    records = read_jsonl(metrics_path)
    series = {k: [(r[x_key], r[k]) for r in records if r.get(k) is not None] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    n = len(series)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (k, pts) in zip(axes[0], series.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="." if len(xs) < 40 else None)
        ax.set_title(k, fontsize=10)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out_png) or ".", exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
