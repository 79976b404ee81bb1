"""Shape buckets for prefill: round rows/lengths up so a stream of batches reuses few programs.

Every distinct (rows, row length, prompts) shape is a fresh XLA compile; packing makes
the number of rows vary batch to batch, so without buckets a serving loop would
recompile almost every batch. Buckets are 2^k and 1.5 * 2^k, so rounding up wastes
at most a third of a dimension.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Optional, Sequence

import jax
import numpy as np

from gdm_jax.data.packing import PackedBatch

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def geometric_buckets(minimum: int, maximum: int) -> tuple[int, ...]:
    """Sizes 2^k and 3 * 2^(k-1) from ``minimum`` up to and including ``maximum``."""
    if minimum <= 0 or maximum < minimum:
        raise ValueError(f"need 0 < minimum <= maximum, got minimum={minimum}, maximum={maximum}")
    sizes, k = set(), 1
    while k < maximum:
        sizes.update({k, (3 * k) // 2})
        k *= 2
    sizes = sorted(s for s in sizes if minimum <= s < maximum)
    return tuple(sizes) + (maximum,)


def round_up(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= n."""
    for b in sorted(buckets):
        if b >= n:
            return int(b)
    raise ValueError(f"size {n} exceeds the largest bucket {max(buckets)}")


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Allowed values of the three dynamic dimensions of a prefill call."""
    rows: tuple[int, ...]
    length: tuple[int, ...]
    prompts: tuple[int, ...]

    @classmethod
    def for_limits(cls, max_rows: int, max_length: int, max_prompts: int,
                   min_length: int = 16) -> "Buckets":
        """Geometric buckets up to the given maxima."""
        return cls(rows=geometric_buckets(1, max_rows),
                   length=geometric_buckets(min(min_length, max_length), max_length),
                   prompts=geometric_buckets(1, max_prompts))


def pad_to_buckets(batch: PackedBatch, buckets: Optional[Buckets], *,
                   pad_id: int = 0) -> dict[str, np.ndarray]:
    """Prefill inputs as numpy arrays, padded up to the buckets (None: exact shapes).

    Extra rows/columns are padding (segment 0); extra prompt entries have length 0,
    so they unpack into empty caches and their logits are dropped by the caller.
    """
    R, C, N = batch.num_rows, batch.capacity, batch.num_prompts
    if buckets is not None:
        R, C, N = (round_up(R, buckets.rows), round_up(C, buckets.length),
                   round_up(N, buckets.prompts))

    def grow(a, shape, fill=0):
        out = np.full(shape, fill, dtype=np.int32)
        out[tuple(slice(0, s) for s in a.shape)] = a
        return out

    return {"tokens": grow(batch.tokens_RxC, (R, C), pad_id),
            "positions": grow(batch.positions_RxC, (R, C)),
            "segment_ids": grow(batch.segment_ids_RxC, (R, C)),
            "prompt_row": grow(batch.prompt_row, (N,)),
            "prompt_offset": grow(batch.prompt_offset, (N,)),
            "prompt_length": grow(batch.prompt_length, (N,))}


class CompileCounter:
    """Counts XLA backend compiles (all functions) while active, via jax.monitoring."""

    def __init__(self):
        self.count = 0
        self.seconds = 0.0
        self.functions: list[str] = []

    def _listener(self, event: str, duration: float, **kwargs) -> None:
        if event == _COMPILE_EVENT:
            self.count += 1
            self.seconds += duration
            self.functions.append(str(kwargs.get("fun_name", "?")))


@contextlib.contextmanager
def count_compiles() -> Iterator[CompileCounter]:
    """Context manager yielding a CompileCounter that counts compiles inside the block."""
    counter = CompileCounter()
    jax.monitoring.register_event_duration_secs_listener(counter._listener)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(counter._listener)
