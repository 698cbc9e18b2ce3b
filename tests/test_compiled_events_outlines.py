"""The compiled event finder and outline tracer against the code they replace.

``compiled.top_peaks`` against MATLAB-semantics ``findpeaks_many``: the same events, bit for bit,
on traces built to hit every rule (plateaus, ties, thresholds equal to a prominence, distances,
NPeaks, constant and short traces). ``compiled.outlines`` against ``geometry.outline_from_mask``:
the same points on masks with holes, nested and touching components, lines and single pixels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from actsort_gpu.preprocess import compiled, events, geometry
from actsort_gpu.signal import findpeaks_many, local_maxima, peak_prominences

pytestmark = pytest.mark.skipif(not compiled.available(), reason="Numba does not import")


def _reference(y, thr, min_distance, n_peaks):
    """(N, n_peaks) int32 locations from findpeaks_many, -1 padded, and the counts."""
    rows, locs, _ = findpeaks_many(y, thr, min_distance, n_peaks, sort_descend=True)
    out = np.full((len(y), n_peaks), -1, np.int32)
    starts = np.searchsorted(rows, rows, side="left")
    out[rows, np.arange(len(rows)) - starts] = locs
    return out, np.bincount(rows, minlength=len(y))


def _compiled(y, thr, min_distance, n_peaks):
    out = np.zeros((len(y), n_peaks), np.int32)  # not -1: top_peaks must write every slot
    distance = np.floor(min_distance) + 1.0 if min_distance > 0 else 1.0
    counts = compiled.top_peaks(np.ascontiguousarray(y, np.float64), thr, distance, n_peaks, out)
    return out, counts


def _traces(rng, n, t):
    """Noise with transients, integer-valued noise (runs of equal values everywhere), steps
    into plateaus, constant rows."""
    kinds = []
    for i in range(n):
        k = i % 4
        if k == 0:
            y = rng.normal(0, 1, t)
            for e in rng.integers(0, t, 4):
                y[e:] += 6 * np.exp(-np.arange(t - e) / 8.0)
        elif k == 1:
            y = rng.integers(0, 4, t).astype(float)
        elif k == 2:
            y = np.repeat(rng.integers(0, 6, t // 3 + 1), 3)[:t].astype(float)
        else:
            y = np.full(t, float(rng.integers(-3, 3)))
        kinds.append(y)
    return np.array(kinds)


@pytest.mark.parametrize("t", [1, 2, 3, 4, 7, 50, 400])
@pytest.mark.parametrize("min_distance", [0.0, 0.5, 2.0, 3.0, 40.0])
@pytest.mark.parametrize("n_peaks", [1, 5, 30])
def test_top_peaks_equals_findpeaks_many(t, min_distance, n_peaks):
    rng = np.random.default_rng(t * 1000 + int(min_distance * 10) + n_peaks)
    y = _traces(rng, 24, t)
    thr = np.where(rng.random(24) < 0.3, 0.0, y.std(axis=1) if t > 1 else 0.0)
    ref, ref_counts = _reference(y, thr, min_distance, n_peaks)
    got, counts = _compiled(y, thr, min_distance, n_peaks)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(counts, ref_counts)


def test_threshold_equal_to_a_prominence_keeps_the_peak():
    """thr set to the exact prominence of one of each row's peaks (and one ulp above it):
    the >= boundary and the early-stopping scans decide as the full prominence does."""
    rng = np.random.default_rng(7)
    y = _traces(rng, 40, 120)
    rows, locs = local_maxima(y)
    prom, _, _ = peak_prominences(y, locs, rows)
    thr = np.zeros(len(y))
    for r in range(len(y)):
        mine = prom[rows == r]
        if len(mine):
            thr[r] = mine[rng.integers(len(mine))]
    for t in (thr, np.nextafter(thr, np.inf)):
        ref, _ = _reference(y, t, 3.0, 50)
        got, _ = _compiled(y, t, 3.0, 50)
        np.testing.assert_array_equal(got, ref)
    # the boundary matters: some row loses a peak one ulp above
    assert (
        _compiled(y, thr, 3.0, 50)[1] > _compiled(y, np.nextafter(thr, np.inf), 3.0, 50)[1]
    ).any()


def test_known_answers():
    y = np.array([[0, 4, 1, 2, 1, 6, 0, 3, 0], [5, 1, 3, 3, 3, 1, 2, 2, 0]], float)
    # prominences 3, 1, 6, 3 (row 0); plateaus reported at their first sample (row 1)
    got, counts = _compiled(y, np.array([3.0, 0.0]), 0.0, 5)
    assert got.tolist() == [[5, 1, 7, -1, -1], [2, 6, -1, -1, -1]] and counts.tolist() == [3, 2]
    # distance 3: the peak at 5 deletes 7 (|dx| = 2) but not 1 (|dx| = 4)
    assert _compiled(y[:1], np.zeros(1), 3.0, 5)[0].tolist() == [[5, 1, -1, -1, -1]]
    # equal heights: the lower location first, and it deletes the other within the distance
    z = np.zeros((1, 12))
    z[0, [3, 6]] = 2.0
    assert _compiled(z, np.zeros(1), 0.0, 3)[0].tolist() == [[3, 6, -1]]
    assert _compiled(z, np.zeros(1), 3.0, 3)[0].tolist() == [[3, -1, -1]]


def test_find_events_same_with_and_without_the_compiled_finder(monkeypatch):
    rng = np.random.default_rng(3)
    traces = _traces(rng, 200, 300).astype(np.float32)
    fast = events.find_events(traces, n_events=5)
    monkeypatch.setattr(compiled, "peaks_unusable", lambda: "switched off")
    np.testing.assert_array_equal(events.find_events(traces, n_events=5), fast)
    assert (fast[:, 0] >= 0).all()  # rows without a peak get their arg-max frame


# ------------------------------------------------------------------ outlines
def _masks(rng, n):
    """Random masks in random boxes of a 64 x 80 field: blobs with holes, scattered pixels
    (many components, diagonal contacts), rings with a component inside, lines, one pixel."""
    height, width = 64, 80
    dense = np.zeros((n, height, width), np.float32)
    for i in range(n):
        h, w = rng.integers(1, 14, 2)
        r0, c0 = rng.integers(0, height - h), rng.integers(0, width - w)
        kind = i % 5
        if kind == 0:
            m = rng.random((h, w)) < 0.7
        elif kind == 1:
            m = rng.random((h, w)) < 0.25
        elif kind == 2:
            m = np.zeros((h, w), bool)
            m[[0, -1], :] = m[:, [0, -1]] = True  # a ring
            if h > 4 and w > 4:
                m[h // 2, w // 2] = True  # a component in its hole
        elif kind == 3:
            m = np.eye(h, w, k=int(rng.integers(-2, 3)), dtype=bool) | (rng.random((h, w)) < 0.05)
        else:
            m = np.zeros((h, w), bool)
            m[rng.integers(h), rng.integers(w)] = True
        dense[i, r0 : r0 + h, c0 : c0 + w] = m * rng.uniform(0.01, 1.0, (h, w))
    return dense, height, width


@pytest.mark.parametrize("capacity", [None, 1])  # 1: the buffer grows many times
def test_outlines_equal_outline_from_mask(capacity):
    rng = np.random.default_rng(11)
    dense, height, width = _masks(rng, 400)
    dense[7] = 0  # an empty footprint
    fp = sp.csr_matrix(dense.reshape(len(dense), -1))
    keep = fp.data >= 0.05
    got = compiled.outlines(fp.indptr, fp.indices, keep, width, capacity=capacity)
    assert len(got) == len(dense)
    for i, pts in enumerate(got):
        rows, cols = np.nonzero(dense[i] >= 0.05)
        if not len(rows):
            assert pts.shape == (0, 2)
            continue
        r0, c0 = rows.min(), cols.min()
        mask = np.zeros((rows.max() - r0 + 1, cols.max() - c0 + 1), bool)
        mask[rows - r0, cols - c0] = True
        expected = geometry.outline_from_mask(mask, (int(r0), int(c0)))
        assert pts.dtype == np.float32
        np.testing.assert_array_equal(pts, expected, err_msg=f"candidate {i}")
    assert sum(np.isnan(p[:, 0]).sum() for p in got) > 50  # many multi-component candidates


def test_geometry_same_with_and_without_the_compiled_tracer(monkeypatch):
    rng = np.random.default_rng(5)
    dense, height, width = _masks(rng, 150)
    fp = sp.csr_matrix(dense.reshape(len(dense), -1))
    fast = geometry.compute_geometry(fp, height, width)
    monkeypatch.setattr(compiled, "outlines_unusable", lambda: "switched off")
    slow = geometry.compute_geometry(fp, height, width)
    for a, b in zip(fast.outlines, slow.outlines):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.crops, slow.crops)
