"""Known answers for the MATLAB-semantics signal helpers (actsort_reference.md section 0)."""

import numpy as np
import pytest

from actsort_gpu.signal import (
    findpeaks,
    findpeaks_many,
    local_maxima,
    medfilt3_zeropad,
    peak_prominences,
    peak_widths,
    quantile_hazen,
)


def test_plateau_reported_at_first_sample_and_edges_never_peaks():
    y = np.array([5, 1, 3, 3, 3, 1, 2, 2, 0, 4], dtype=float)
    locs, heights = findpeaks(y)
    assert locs.tolist() == [2, 6]  # plateau 2..4 -> 2; plateau 6..7 -> 6; ends excluded
    assert heights.tolist() == [3.0, 2.0]
    # a plateau running into the end is not a peak; rising into a plateau then rising is not
    assert findpeaks(np.array([0, 1, 2, 2, 2.0]))[0].tolist() == []
    assert findpeaks(np.array([0, 2, 2, 3, 1.0]))[0].tolist() == [3]


def test_prominence_known_values_and_filter():
    y = np.array([0, 4, 1, 2, 1, 6, 0, 3, 0], dtype=float)
    locs, _ = findpeaks(y)
    assert locs.tolist() == [1, 3, 5, 7]
    prom, lb, rb = peak_prominences(y, locs)
    # peak 4 at 1: higher sample to the right is 6 at 5; min between = 1 -> bases 0 (left end) / 1
    np.testing.assert_allclose(prom, [4 - 1, 2 - 1, 6 - 0, 3 - 0])
    assert lb.tolist() == [0, 2, 0, 6] and rb.tolist() == [2, 4, 6, 8]
    locs, _ = findpeaks(y, min_prominence=3.0)
    assert locs.tolist() == [1, 5, 7]


def test_distance_is_inclusive_and_height_ordered_with_index_tiebreak():
    y = np.zeros(20)
    y[[2, 5, 8, 11]] = [3, 5, 3, 1]
    # distance 3: peak 5 (height 5) deletes 2 and 8 (|dx| = 3 <= 3); 11 survives (|dx| = 6)
    assert findpeaks(y, min_distance=3)[0].tolist() == [5, 11]
    # fractional distance 2.9 deletes nothing at |dx| = 3
    assert findpeaks(y, min_distance=2.9)[0].tolist() == [2, 5, 8, 11]
    # ties: two equal heights 3 apart -> the lower index wins
    z = np.zeros(12)
    z[[3, 6]] = 2.0
    assert findpeaks(z, min_distance=3)[0].tolist() == [3]


def test_sort_and_npeaks():
    y = np.zeros(30)
    y[[3, 9, 15, 21, 27]] = [1, 5, 2, 5, 4]
    locs, h = findpeaks(y, sort_descend=True, n_peaks=3)
    assert locs.tolist() == [9, 21, 27] and h.tolist() == [5, 5, 4]
    assert findpeaks(y, n_peaks=2)[0].tolist() == [3, 9]


def test_many_equals_one_by_one():
    rng = np.random.default_rng(0)
    y = np.round(rng.normal(size=(40, 200)), 1)  # rounding makes plateaus
    thr = y.std(axis=1, ddof=1)
    rows, locs, heights = findpeaks_many(y, thr, 4.5, 5, True)
    for i in range(len(y)):
        l1, h1 = findpeaks(y[i], thr[i], 4.5, 5, True)
        assert locs[rows == i].tolist() == l1.tolist()
        np.testing.assert_array_equal(heights[rows == i], h1)
    # brute-force reference of MATLAB's distance rule on one row
    r, locs = local_maxima(y[0])
    prom, _, _ = peak_prominences(y[0], locs)
    locs = locs[prom >= thr[0]]
    order = sorted(range(len(locs)), key=lambda k: (-y[0, locs[k]], locs[k]))
    deleted = np.zeros(len(locs), bool)
    for k in order:
        if not deleted[k]:
            near = np.abs(locs - locs[k]) <= 4.5
            near[k] = False
            deleted |= near
    kept = sorted(locs[~deleted], key=lambda p: (-y[0, p], p))[:5]
    assert findpeaks(y[0], thr[0], 4.5, 5, True)[0].tolist() == kept


def test_half_height_widths():
    y = np.array([0, 0, 2, 4, 2, 0, 0], dtype=float)
    w, left, right = peak_widths(y, np.array([3]))
    np.testing.assert_allclose([left[0], right[0], w[0]], [2.0, 4.0, 2.0])
    y = np.array([0, 1, 4, 3, 0], dtype=float)  # line at 2: left 1 + 1/3, right 3 + 1/3
    w, left, right = peak_widths(y, np.array([2]))
    np.testing.assert_allclose([left[0], right[0]], [1 + 1 / 3, 3 + 1 / 3])
    # no crossing before the base: a higher neighbour stops the search, base index is used
    y = np.array([3, 2.5, 4, 2.8, 6, 0], dtype=float)
    w, left, right = peak_widths(y, np.array([2]))  # peak 4 at index 2, bases 1 and 3
    np.testing.assert_allclose([left[0], right[0], w[0]], [1.0, 3.0, 2.0])


def test_medfilt_and_quantile():
    x = np.array([3.0, 1, 2, 9, 4])
    np.testing.assert_array_equal(medfilt3_zeropad(x), [1, 2, 2, 4, 4])
    m = np.vstack([x, x[::-1]])
    np.testing.assert_array_equal(medfilt3_zeropad(m, axis=1)[1], [4, 4, 2, 2, 1])
    # hazen: sorted sample i (1-based) at (i - 0.5) / n
    np.testing.assert_allclose(quantile_hazen([1, 2, 3, 4], 0.5), 2.5)
    np.testing.assert_allclose(quantile_hazen([1, 2, 3, 4], 0.125), 1.0)
    np.testing.assert_allclose(quantile_hazen([1, 2, 3, 4], 0.25), 1.5)
    np.testing.assert_allclose(quantile_hazen([1, 2, 3, 4], 0.05), 1.0)


def test_findpeaks_rejects_2d():
    with pytest.raises(ValueError, match="1-D"):
        findpeaks(np.zeros((2, 3)))
