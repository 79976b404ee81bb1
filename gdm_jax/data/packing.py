"""Sequence packing: place variable-length prompts into few fixed-length rows (prepacking).

Packing runs on the host (numpy) before anything is sent to the device: it decides the
shapes of the jitted prefill, so it cannot be traced. The result carries everything the
segment-aware attention needs (segment ids 1..n per row, 0 = padding; positions that
restart at 0 for every prompt) and the map back to prompts (row, offset, length).

Bin-assignment methods (items = prompt lengths, bins = rows of ``capacity`` tokens):

- ``"ffd"`` first-fit decreasing (ours, the default): each prompt, longest first, goes
  into the lowest-numbered row with room. Written here because it returns the placement
  map directly and runs vectorised over rows in numpy, so it is cheap enough to sit on
  the time-to-first-token path.
- ``"bfd"`` best-fit decreasing (ours): each prompt goes into the row it fills most
  tightly (least room left after placing it).
- ``"binpacking"``: ``binpacking.to_constant_volume``, the call the Prepacking reference
  code uses and names "best-fit decreasing". In binpacking 2.x it is in fact a
  least-loaded (worst-fit) decreasing heuristic: each item goes into the *emptiest* bin
  where it fits. It is kept to reproduce the reference's packing; it loops over all
  bins in pure Python per item, hence slower than ours on large prompt sets.

All three sort by decreasing length and open a new row only when no row has room, so
they use at least ``ceil(total_tokens / capacity)`` rows and at most ~11/9 of the optimum
(FFD/BFD bound) plus a constant.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

METHODS = ("ffd", "bfd", "binpacking")


@dataclasses.dataclass(frozen=True)
class PackedBatch:
    """Prompts laid out in rows, and where each prompt went."""
    tokens_RxC: np.ndarray        # int32 token ids, padding = pad_id
    segment_ids_RxC: np.ndarray   # int32, 1..n per row in placement order, 0 = padding
    positions_RxC: np.ndarray     # int32, restart at 0 per prompt, 0 on padding
    prompt_row: np.ndarray        # [N] int32: row holding prompt i
    prompt_offset: np.ndarray     # [N] int32: first column of prompt i in its row
    prompt_length: np.ndarray     # [N] int32: tokens of prompt i
    prompt_index: np.ndarray      # [N] int32: index of prompt i in the caller's full prompt list

    @property
    def num_rows(self) -> int:
        return int(self.tokens_RxC.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.tokens_RxC.shape[1])

    @property
    def num_prompts(self) -> int:
        return int(self.prompt_length.shape[0])

    @property
    def real_tokens(self) -> int:
        return int(self.prompt_length.sum())

    @property
    def slot_tokens(self) -> int:
        """Tokens the prefill computes on, padding included."""
        return int(self.tokens_RxC.size)


def _check_lengths(lengths: Sequence[int], capacity: int) -> np.ndarray:
    if len(lengths) == 0:
        raise ValueError("cannot pack an empty list of prompts")
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, got capacity={capacity}")
    lengths = np.asarray(lengths, dtype=np.int64)
    empty = np.flatnonzero(lengths <= 0)
    if empty.size:
        raise ValueError(f"prompt {int(empty[0])} is empty (length {int(lengths[empty[0]])}); "
                         "every prompt needs at least one token")
    too_long = np.flatnonzero(lengths > capacity)
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(f"prompt {i} has {int(lengths[i])} tokens, more than the row "
                         f"capacity={capacity}")
    return lengths


def _decreasing_order(lengths: np.ndarray) -> np.ndarray:
    # Stable, so equal lengths keep caller order and packing is deterministic.
    return np.argsort(-lengths, kind="stable")


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Prompt indices per row, in placement order, by first-fit decreasing."""
    lengths = _check_lengths(lengths, capacity)
    room = np.empty(len(lengths), dtype=np.int64)  # at most one row per prompt
    bins: list[list[int]] = []
    for i in _decreasing_order(lengths):
        fits = np.flatnonzero(room[:len(bins)] >= lengths[i])
        if fits.size:
            b = int(fits[0])
        else:
            b = len(bins)
            bins.append([])
            room[b] = capacity
        bins[b].append(int(i))
        room[b] -= lengths[i]
    return bins


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Prompt indices per row, in placement order, by best-fit decreasing (tightest row)."""
    lengths = _check_lengths(lengths, capacity)
    room = np.empty(len(lengths), dtype=np.int64)
    bins: list[list[int]] = []
    for i in _decreasing_order(lengths):
        r = room[:len(bins)]
        slack = np.where(r >= lengths[i], r - lengths[i], np.iinfo(np.int64).max)
        if bins and slack.min() != np.iinfo(np.int64).max:
            b = int(slack.argmin())
        else:
            b = len(bins)
            bins.append([])
            room[b] = capacity
        bins[b].append(int(i))
        room[b] -= lengths[i]
    return bins


def binpacking_reference(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Prompt indices per row from ``binpacking.to_constant_volume`` (the reference's call)."""
    import binpacking  # host-only dependency, imported where used

    lengths = _check_lengths(lengths, capacity)
    bins = binpacking.to_constant_volume(
        {i: int(n) for i, n in enumerate(lengths)}, capacity)
    return [list(b.keys()) for b in bins if b]


_ASSIGNERS = {"ffd": first_fit_decreasing, "bfd": best_fit_decreasing,
              "binpacking": binpacking_reference}


def assign_rows(lengths: Sequence[int], capacity: int, method: str = "ffd") -> list[list[int]]:
    """Prompt indices per row, in placement order, by the named method."""
    if method not in _ASSIGNERS:
        raise ValueError(f"unknown packing method={method!r}; choose from {METHODS}")
    return _ASSIGNERS[method](lengths, capacity)


def _check_prompts(prompts: Sequence[Sequence[int]]) -> list[np.ndarray]:
    if len(prompts) == 0:
        raise ValueError("cannot pack an empty list of prompts")
    arrays = [np.asarray(p, dtype=np.int32).reshape(-1) for p in prompts]
    for i, a in enumerate(arrays):
        if a.size == 0:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
    return arrays


def layout_rows(prompts: Sequence[Sequence[int]], rows: Sequence[Sequence[int]],
                capacity: int, *, pad_id: int = 0,
                prompt_index: Optional[Sequence[int]] = None) -> PackedBatch:
    """Write prompts into rows (given as prompt indices per row, in order) of ``capacity``."""
    arrays = _check_prompts(prompts)
    n = len(arrays)
    tokens = np.full((len(rows), capacity), pad_id, dtype=np.int32)
    segments = np.zeros((len(rows), capacity), dtype=np.int32)
    positions = np.zeros((len(rows), capacity), dtype=np.int32)
    row_of = np.full(n, -1, dtype=np.int32)
    offset_of = np.zeros(n, dtype=np.int32)
    for r, members in enumerate(rows):
        col = 0
        for s, i in enumerate(members):
            a = arrays[i]
            if row_of[i] >= 0:
                raise ValueError(f"prompt {i} is placed twice (rows {row_of[i]} and {r})")
            if col + a.size > capacity:
                raise ValueError(f"row {r} overflows capacity={capacity} at prompt {i}")
            tokens[r, col:col + a.size] = a
            segments[r, col:col + a.size] = s + 1
            positions[r, col:col + a.size] = np.arange(a.size, dtype=np.int32)
            row_of[i], offset_of[i] = r, col
            col += a.size
    missing = np.flatnonzero(row_of < 0)
    if missing.size:
        raise ValueError(f"prompt {int(missing[0])} is not placed in any row")
    index = np.arange(n, dtype=np.int32) if prompt_index is None else np.asarray(
        prompt_index, dtype=np.int32)
    return PackedBatch(tokens, segments, positions, row_of, offset_of,
                       np.array([a.size for a in arrays], dtype=np.int32), index)


def pack_prompts(prompts: Sequence[Sequence[int]], capacity: Optional[int] = None, *,
                 method: str = "ffd", pad_id: int = 0,
                 prompt_index: Optional[Sequence[int]] = None) -> PackedBatch:
    """Pack token-id prompts into rows of ``capacity`` (default: the longest prompt)."""
    arrays = _check_prompts(prompts)
    lengths = [a.size for a in arrays]
    capacity = max(lengths) if capacity is None else int(capacity)
    rows = assign_rows(lengths, capacity, method)
    return layout_rows(arrays, rows, capacity, pad_id=pad_id, prompt_index=prompt_index)


def pad_prompts(prompts: Sequence[Sequence[int]], length: Optional[int] = None, *,
                pad_id: int = 0, prompt_index: Optional[Sequence[int]] = None) -> PackedBatch:
    """One prompt per row, right-padded to ``length`` (default: the longest prompt)."""
    arrays = _check_prompts(prompts)
    length = max(a.size for a in arrays) if length is None else int(length)
    _check_lengths([a.size for a in arrays], length)
    return layout_rows(arrays, [[i] for i in range(len(arrays))], length, pad_id=pad_id,
                       prompt_index=prompt_index)


def pack_dataset(prompts: Sequence[Sequence[int]], rows_per_batch: int,
                 capacity: Optional[int] = None, *, method: str = "ffd",
                 pad_id: int = 0) -> list[PackedBatch]:
    """Dataset-level prepacking: pack every prompt once, then cut the rows into batches.

    Each batch's ``prompt_index`` points into ``prompts``; its offsets are within its rows.
    """
    if rows_per_batch <= 0:
        raise ValueError(f"rows_per_batch must be positive, got rows_per_batch={rows_per_batch}")
    arrays = _check_prompts(prompts)
    lengths = [a.size for a in arrays]
    capacity = max(lengths) if capacity is None else int(capacity)
    rows = assign_rows(lengths, capacity, method)
    batches = []
    for start in range(0, len(rows), rows_per_batch):
        chunk = rows[start:start + rows_per_batch]
        members = [i for row in chunk for i in row]
        local = {g: j for j, g in enumerate(members)}
        batches.append(layout_rows([arrays[g] for g in members],
                                   [[local[g] for g in row] for row in chunk], capacity,
                                   pad_id=pad_id, prompt_index=members))
    return batches


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Length-ordered batching: prompt indices sorted by length, cut into batches."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got batch_size={batch_size}")
    if len(lengths) == 0:
        raise ValueError("cannot batch an empty list of prompts")
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def lower_bound_rows(lengths: Sequence[int], capacity: int) -> int:
    """The trivial lower bound on rows: ceil(total tokens / capacity)."""
    return math.ceil(int(np.sum(lengths)) / capacity)


def packing_stats(batch: PackedBatch) -> dict:
    """Rows used vs the lower bound, and how much of the computed slots are real tokens."""
    bound = lower_bound_rows(batch.prompt_length, batch.capacity)
    return {"rows": batch.num_rows, "lower_bound_rows": bound, "capacity": batch.capacity,
            "prompts": batch.num_prompts, "real_tokens": batch.real_tokens,
            "slot_tokens": batch.slot_tokens,
            "fill": batch.real_tokens / batch.slot_tokens}
