"""The shared attention: equals a naive per-query reference, segment isolation, backends agree."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdm_jax.nn.attention import attention, segment_positions


def naive_attention(q, k, v, seg_q, seg_k, pos_q, pos_k):
    """Per-query loop in numpy: softmax over keys of the same segment with kv_pos <= q_pos."""
    q, k, v = map(np.asarray, (q, k, v))
    B, T, H, D = q.shape
    K = k.shape[2]
    out = np.zeros_like(q)
    for b in range(B):
        for t in range(T):
            for h in range(H):
                kh = h // (H // K)
                keys = [s for s in range(k.shape[1])
                        if seg_k[b, s] == seg_q[b, t] and seg_q[b, t] > 0 and pos_k[b, s] <= pos_q[b, t]]
                if not keys:
                    continue
                logits = np.array([q[b, t, h] @ k[b, s, kh] for s in keys]) / np.sqrt(D)
                p = np.exp(logits - logits.max())
                p /= p.sum()
                out[b, t, h] = sum(pi * v[b, s, kh] for pi, s in zip(p, keys))
    return out


@pytest.fixture(scope="module")
def packed():
    seg = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 2, 2, 2]], jnp.int32)
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (2, 8, 4, 16))
    k = jax.random.normal(kk, (2, 8, 2, 16))  # grouped-query: 2 kv heads for 4 query heads
    v = jax.random.normal(kv, (2, 8, 2, 16))
    return q, k, v, seg


def test_segment_positions_restart_per_segment(packed):
    *_, seg = packed
    np.testing.assert_array_equal(segment_positions(seg),
                                  [[0, 1, 2, 0, 1, 0, 0, 0], [0, 1, 2, 3, 4, 0, 1, 2]])


@pytest.mark.parametrize("backend", ["xla", "cudnn_or_xla"])
def test_matches_naive_reference_with_gqa_and_padding(packed, backend):
    q, k, v, seg = packed
    pos = segment_positions(seg)
    out = attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, backend=backend)
    ref = naive_attention(q, k, v, np.asarray(seg), np.asarray(seg), np.asarray(pos), np.asarray(pos))
    np.testing.assert_allclose(np.asarray(out), ref, atol=2e-5)
    assert np.all(np.asarray(out)[0, 6:] == 0.0), "padding queries must give zeros, not NaN"


def test_no_gradient_crosses_segments(packed):
    q, k, v, seg = packed

    def seg2_output(k, v):  # row 0, segment 2 lives at slots 3..4
        return attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg)[0, 3:5].sum()

    gk, gv = jax.grad(seg2_output, argnums=(0, 1))(k, v)
    outside = np.ones(8, bool)
    outside[3:5] = False
    assert np.all(np.asarray(gk)[0, outside] == 0) and np.all(np.asarray(gv)[0, outside] == 0)
    assert np.all(np.asarray(gk)[1] == 0)
    assert np.abs(np.asarray(gv)[0, 3:5]).sum() > 0


def test_decode_against_cache_equals_full_causal(packed):
    """A query at position p over a cache of keys gives the same row as full causal attention."""
    q, k, v, _ = packed
    full = attention(q, k, v)
    seg = jnp.ones((2, 8), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(8), (2, 8))
    last = attention(q[:, 5:6], k, v, q_segment_ids=seg[:, :1], kv_segment_ids=seg,
                     q_positions=pos[:, 5:6], kv_positions=pos)
    np.testing.assert_allclose(np.asarray(last[:, 0]), np.asarray(full[:, 5]), atol=1e-5)


def test_bad_head_counts_and_backend_are_named(packed):
    q, k, v, _ = packed
    with pytest.raises(ValueError, match="multiple of kv heads"):
        attention(q[:, :, :3], k, v)
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        attention(q, k, v, backend="flash")
