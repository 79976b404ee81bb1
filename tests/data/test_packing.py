"""Packing invariants (property tests) and bad-input errors."""
import math

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from gdm_jax.data import packing

lengths_st = st.lists(st.integers(1, 40), min_size=1, max_size=30)


def _prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 1000, size=n).astype(np.int32) for n in lengths]


def _check_layout(batch: packing.PackedBatch, prompts):
    """Every token placed exactly once, rows within capacity, ids/positions match the map."""
    covered = np.zeros(batch.tokens_RxC.shape, dtype=np.int32)
    for i, p in enumerate(prompts):
        r, o, n = batch.prompt_row[i], batch.prompt_offset[i], batch.prompt_length[i]
        assert n == len(p)
        assert 0 <= o and o + n <= batch.capacity
        np.testing.assert_array_equal(batch.tokens_RxC[r, o:o + n], p)
        np.testing.assert_array_equal(batch.positions_RxC[r, o:o + n], np.arange(n))
        seg = batch.segment_ids_RxC[r, o:o + n]
        assert seg[0] > 0 and np.all(seg == seg[0])
        covered[r, o:o + n] += 1
    assert covered.max() <= 1, "two prompts overlap"
    # Slots not covered by any prompt are padding, and padding covers nothing else.
    np.testing.assert_array_equal(covered == 0, batch.segment_ids_RxC == 0)
    assert np.all(batch.positions_RxC[covered == 0] == 0)
    assert covered.sum() == sum(len(p) for p in prompts)
    # Segment ids are 1..n within each row, distinct per prompt.
    for r in range(batch.num_rows):
        members = np.flatnonzero(batch.prompt_row == r)
        ids = sorted(int(batch.segment_ids_RxC[r, batch.prompt_offset[i]]) for i in members)
        assert ids == list(range(1, len(members) + 1))


@pytest.mark.parametrize("method", packing.METHODS)
@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, extra=st.integers(0, 20))
def test_pack_invariants(method, lengths, extra):
    prompts = _prompts(lengths)
    capacity = max(lengths) + extra
    batch = packing.pack_prompts(prompts, capacity, method=method)
    _check_layout(batch, prompts)
    assert batch.capacity == capacity
    bound = math.ceil(sum(lengths) / capacity)
    assert batch.num_rows >= bound
    # Decreasing-order heuristics never leave two rows that could be merged.
    fill = np.bincount(batch.prompt_row, weights=batch.prompt_length, minlength=batch.num_rows)
    assert np.sort(fill)[:2].sum() > capacity or batch.num_rows == 1


def _optimal_rows(lengths, capacity):
    """Exact minimum rows by exhaustive search (small instances only)."""
    best = [len(lengths)]

    def place(i, rooms):
        if len(rooms) >= best[0]:
            return
        if i == len(lengths):
            best[0] = len(rooms)
            return
        for b in range(len(rooms)):
            if rooms[b] >= lengths[i]:
                rooms[b] -= lengths[i]
                place(i + 1, rooms)
                rooms[b] += lengths[i]
        place(i + 1, rooms + [capacity - lengths[i]])

    place(0, [])
    return best[0]


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=8))
def test_rows_between_lower_bound_and_ffd_guarantee(lengths):
    """Every method uses >= ceil(total/capacity) rows; FFD/BFD <= 11/9 OPT + 6/9 (Dosa 2007)."""
    capacity = max(lengths)
    bound = math.ceil(sum(lengths) / capacity)
    opt = _optimal_rows(sorted(lengths, reverse=True), capacity)
    assert bound <= opt
    for method in packing.METHODS:
        rows = len(packing.assign_rows(lengths, capacity, method))
        assert opt <= rows
        if method != "binpacking":
            assert rows <= 11 / 9 * opt + 6 / 9


def test_known_instance_and_methods_differ():
    """A hand-checked instance: FFD, true BFD and binpacking's least-loaded fit place differently."""
    lengths = [6, 5, 4, 3, 2]
    assert packing.first_fit_decreasing(lengths, 10) == [[0, 2], [1, 3, 4]]
    assert packing.best_fit_decreasing(lengths, 10) == [[0, 2], [1, 3, 4]]
    lengths = [5, 4, 3, 3]  # capacity 8: BFD puts the first 3 on the 5 (tight), WFD on the 4
    assert packing.best_fit_decreasing(lengths, 8) == [[0, 2], [1, 3]]
    assert packing.first_fit_decreasing(lengths, 8) == [[0, 2], [1, 3]]
    assert packing.binpacking_reference(lengths, 8) == [[0, 3], [1, 2]]


def test_bins_vs_lower_bound_report_on_skewed_lengths():
    rng = np.random.default_rng(1)
    lengths = np.clip(rng.lognormal(4.5, 0.6, size=64).astype(int), 1, 700)
    prompts = _prompts(lengths)
    report = {}
    for method in packing.METHODS:
        stats = packing.packing_stats(packing.pack_prompts(prompts, method=method))
        report[method] = (stats["rows"], stats["lower_bound_rows"])
        assert stats["rows"] >= stats["lower_bound_rows"]
        assert stats["rows"] <= stats["lower_bound_rows"] + 2, report
    print("rows vs lower bound:", report)
    padded = packing.pad_prompts(prompts)
    assert padded.num_rows == 64 and padded.capacity == lengths.max()
    _check_layout(padded, prompts)


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=40),
       rows_per_batch=st.integers(1, 5))
def test_dataset_level_packing_covers_every_prompt_once(lengths, rows_per_batch):
    prompts = _prompts(lengths)
    batches = packing.pack_dataset(prompts, rows_per_batch)
    seen = np.concatenate([b.prompt_index for b in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(prompts)))
    for b in batches:
        assert b.num_rows <= rows_per_batch and b.capacity == max(lengths)
        _check_layout(b, [prompts[g] for g in b.prompt_index])


def test_sorted_batches_are_length_ordered():
    lengths = [5, 1, 9, 3, 7]
    batches = packing.sorted_batches(lengths, 2)
    assert [list(b) for b in batches] == [[1, 3], [0, 4], [2]]


@pytest.mark.parametrize("call, match", [
    (lambda: packing.pack_prompts([]), "empty list"),
    (lambda: packing.pack_prompts([[1, 2], []]), "prompt 1 is empty"),
    (lambda: packing.pack_prompts([[1, 2, 3], [4]], capacity=2), "prompt 0 has 3 tokens.*capacity=2"),
    (lambda: packing.pack_prompts([[1]], method="nfd"), "unknown packing method='nfd'"),
    (lambda: packing.pack_prompts([[1]], capacity=0), "capacity=0"),
    (lambda: packing.pad_prompts([[1, 2, 3]], length=2), "prompt 0 has 3 tokens"),
    (lambda: packing.pack_dataset([[1]], rows_per_batch=0), "rows_per_batch=0"),
    (lambda: packing.pack_dataset([], rows_per_batch=2), "empty list"),
])
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
