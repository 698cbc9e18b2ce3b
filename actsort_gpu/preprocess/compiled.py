"""The preprocess stage's CPU loops compiled with Numba: the movie pass's accumulator (one
loop over each pixel per frame), the snapshot quantiser (one candidate at a time), the event
finder (one trace at a time) and the outline tracer (one footprint at a time). Each has a
NumPy / SciPy / Python twin that gives the same result where Numba does not run; all four run
on the host whichever device the movie pass uses.

:func:`accumulate_rows` does exactly the arithmetic of the NumPy ``blocked`` method of
:class:`~actsort_gpu.preprocess.kernels.ProjectionAccumulator` (the same float32 products and
sums in the same order, no fused multiply-add, flushed to the float64 totals every ``flush``
frames), so the two agree bit for bit (tested); it only avoids the 12 passes over each row
block that the NumPy version makes per frame (about 4x fewer CPU seconds per GB). It releases
the GIL, so the accumulator's thread pool runs disjoint row blocks in parallel.

The snapshot quantiser (:func:`quantise_snapshots`) computes each candidate's colour limits
(``run._clims``: min, max and two order statistics, by a histogram of the integer values) and
its codes (``store.quantise_ranges``) in two passes over the candidate's values (three for
values wider than 16 bits), where the NumPy version makes about twelve over 64 MB blocks and
expands every per-candidate number to every value (``np.repeat``); the results are the same
bit for bit (tested). It takes integer scratch values only (every integer movie dtype); float
movies keep the NumPy path.

The event finder (:func:`top_peaks`) is MATLAB ``findpeaks`` as ``events.find_events`` calls it
(MinPeakProminence, MinPeakDistance, SortStr 'descend', NPeaks) in one pass per trace, where
``signal.findpeaks_many`` makes about fifteen passes over the whole block and measures every
candidate peak's full prominence. Here the candidate peaks come off a heap by priority and
only those the distance rule has not already excluded get a prominence test, until ``NPeaks``
are kept (a few per trace instead of a third of its samples); each test's scans stop as soon
as the drop reaches the threshold (the decision ``prominence >= threshold`` is the same, see
:func:`top_peaks`). Same events (tested).

The outline tracer (:func:`outlines`) is ``geometry.outline_from_mask`` for every candidate in
one call: the same 8-connected labelling (components in column-major order of their first
pixel), hole filling (background not 4-connected to the border), Moore trace, span-3 smoothing
and rounding, without the three SciPy calls and the Python trace loop per candidate (about
150 us each). Same points (tested).

Numba is imported on first use (``actsort_gpu.jit``): :func:`available` says whether it can be.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ..jit import available
from ..jit import jitted as _jitted
from ..jit import why as _why

__all__ = [
    "available",
    "unusable",
    "accumulate_rows",
    "quantise_unusable",
    "quantise_snapshots",
    "peaks_unusable",
    "top_peaks",
    "outlines_unusable",
    "outlines",
]


@cache
def unusable(dtype) -> str | None:
    """None when the kernel runs for frames of ``dtype`` (compiling it for that dtype, once per
    process, on a 1 x 2 x 2 dummy), else why not: the caller then uses the NumPy method before
    any total was touched, so a Numba failure never corrupts or stops a pass."""
    dtype = np.dtype(dtype)
    try:
        f64 = [np.zeros((2, 2)) for _ in range(7)]
        accumulate_rows(np.zeros((1, 2, 2), dtype), np.zeros((2, 2), np.float32), 0, 2, 64, *f64)
    except Exception as exc:  # a Numba typing / lowering error, or a broken llvmlite
        return _why(exc)
    return None


@cache
def quantise_unusable(src_dtype, code_dtype) -> str | None:
    """None when :func:`quantise_snapshots` runs for scratch values of ``src_dtype`` and codes of
    ``code_dtype`` (compiled once per process on a one-candidate dummy), else why not (the
    caller then quantises with NumPy)."""
    src_dtype, code_dtype = np.dtype(src_dtype), np.dtype(code_dtype)
    if not available():
        return "Numba does not import"
    if src_dtype.kind not in "ui" or code_dtype.kind != "u":
        return f"compiled only for integer values and codes, not {src_dtype} -> {code_dtype}"
    try:
        quantise_snapshots(
            np.zeros(2, src_dtype),
            np.array([0, 2]),
            np.ones((1, 1), bool),
            np.zeros(2, code_dtype),
            np.zeros((1, 4), np.float32),
            np.zeros((1, 2), np.float32),
        )
    except Exception as exc:  # a Numba typing / lowering error, or a broken llvmlite
        return _why(exc)
    return None


@cache
def peaks_unusable() -> str | None:
    """None when :func:`top_peaks` runs (compiled once per process on a one-trace dummy), else
    why not (the caller then uses ``signal.findpeaks_many``)."""
    if not available():
        return "Numba does not import"
    try:
        top_peaks(np.zeros((1, 3)), np.zeros(1), 1.0, 1, np.zeros((1, 1), np.int32))
    except Exception as exc:  # a Numba typing / lowering error, or a broken llvmlite
        return _why(exc)
    return None


def top_peaks(y, thr, distance: float, n_peaks: int, out) -> np.ndarray:
    """MATLAB ``findpeaks(y_r, 'MinPeakProminence', thr_r, 'MinPeakDistance', d, 'SortStr',
    'descend', 'NPeaks', n_peaks)`` of every row r of ``y``, as ``signal.findpeaks_many``.

    y : (N, T) float64, finite, C order
    thr : (N,) float64 minimum prominences
    distance : ``floor(MinPeakDistance) + 1``: a kept peak deletes the lower peaks at
        ``|dx| < distance`` (1 deletes none)
    n_peaks : peaks kept per row
    out : (N, >= n_peaks) int32, out: each row's peak locations by height descending (ties:
        lower location first), then -1

    Returns counts (N,) int64, the peaks found per row. Candidate peaks are the first samples of
    runs higher than both neighbouring runs (never the first or last sample). MATLAB filters
    them by prominence, then walks the survivors by priority, each kept peak deleting the
    others within the distance; so a peak is kept exactly when it is prominent and no kept
    (higher-priority) peak lies within the distance, which is what this tests, by priority,
    stopping at ``n_peaks``. The prominence test ``h - max(left_min, right_min) >= thr`` is
    decided side by side, each scan stopping at a strictly higher sample, the row's end, or as
    soon as ``h - min >= thr``: rounding is monotonic, so ``h - max(a, b) == min(h - a, h - b)``
    in floating point and the decision agrees bit for bit with SciPy's full prominence.
    """
    counts = np.zeros(len(y), np.int64)
    _jitted(_top_peaks_py)(
        y, np.asarray(thr, np.float64), float(distance), int(n_peaks), out, counts
    )
    return counts


def _top_peaks_py(y, thr, distance, n_peaks, out, counts):  # pragma: no cover
    n, t = y.shape
    locs = np.empty(t, np.int64)
    heights = np.empty(t, np.float64)
    heap = np.empty(t, np.int64)

    def sift_down(heap, pos, size, heights, locs):
        """Restore the max-heap below ``pos``: first = highest, ties to the lower location."""
        while True:
            top, left = pos, 2 * pos + 1
            for child in (left, left + 1):
                if child < size:
                    a, b = heap[child], heap[top]
                    if heights[a] > heights[b] or (heights[a] == heights[b] and locs[a] < locs[b]):
                        top = child
            if top == pos:
                return
            heap[pos], heap[top] = heap[top], heap[pos]
            pos = top

    for r in range(n):
        for c in range(out.shape[1]):
            out[r, c] = -1
        # candidate peaks: first samples of runs higher than both neighbouring runs; strict
        # local maxima without a branch per sample (noise would mispredict half of them)
        m = 0
        plateau = False
        for i in range(1, t - 1):
            h = y[r, i]
            rising = h > y[r, i - 1]
            locs[m] = i
            heights[m] = h
            m += rising & (h > y[r, i + 1])
            plateau |= rising & (h == y[r, i + 1])
        if plateau:  # a rise into a run of equal values: walk the runs (integer-valued traces)
            m = 0
            i = 1
            while i < t - 1:
                h = y[r, i]
                if not h > y[r, i - 1]:
                    i += 1
                    continue
                j = i + 1
                while j < t and y[r, j] == h:
                    j += 1
                if j < t and y[r, j] < h:
                    locs[m] = i
                    heights[m] = h
                    m += 1
                i = j
        # by priority (height descending, ties to the lower location): a peak is kept when no
        # kept peak lies within the distance and it is prominent enough, until n_peaks are kept
        for q in range(m):
            heap[q] = q
        for q in range(m // 2 - 1, -1, -1):
            sift_down(heap, q, m, heights, locs)
        size = m
        c = 0
        while size > 0 and c < n_peaks:
            p = heap[0]
            size -= 1
            heap[0] = heap[size]
            sift_down(heap, 0, size, heights, locs)
            near = False
            for q in range(c):
                if abs(locs[p] - out[r, q]) < distance:
                    near = True
                    break
            if near:
                continue
            h = heights[p]
            prominent = True
            for step in (-1, 1):  # does the signal drop by thr on this side (see top_peaks)?
                if not prominent:
                    break
                low = h
                prominent = h - low >= thr[r]
                k = locs[p] + step
                while not prominent and 0 <= k < t and y[r, k] <= h:
                    if y[r, k] < low:
                        low = y[r, k]
                        prominent = h - low >= thr[r]
                    k += step
            if prominent:
                out[r, c] = locs[p]
                c += 1
        counts[r] = c


@cache
def outlines_unusable() -> str | None:
    """None when :func:`outlines` runs (compiled once per process on a one-pixel dummy), else
    why not (the caller then traces with ``geometry.outline_from_mask``)."""
    if not available():
        return "Numba does not import"
    try:
        one = np.ones(1, bool)
        outlines(np.array([0, 1]), np.zeros(1, np.int32), one, 1)
    except Exception as exc:  # a Numba typing / lowering error, or a broken llvmlite
        return _why(exc)
    return None


def outlines(indptr, indices, keep, width: int, capacity: int | None = None) -> list:
    """Outlines of N candidates as ``geometry.outline_from_mask`` draws them.

    indptr : (N + 1,) CSR row pointers; indices : (nnz,) pixel index = row * width + col
    keep : (nnz,) bool, the footprint values at or above the outline threshold
    width : the field of view's width
    capacity : the points buffer's first size (default 8 per kept pixel, which a trace does not
        exceed in practice); it doubles whenever a candidate does not fit

    Returns a list of N (M_i, 2) float32 (row, col) arrays (NaN rows between the boundaries
    of a candidate's components), views of one buffer.
    """
    from .geometry import MOORE_BACK, MOORE_DIRECTIONS

    n = len(indptr) - 1
    indptr = np.asarray(indptr, np.int64)
    kernel = _jitted(_outlines_py)
    dirs = np.asarray(MOORE_DIRECTIONS, np.int64)
    back = np.asarray(MOORE_BACK, np.int64)
    if capacity is None:
        capacity = max(16, 8 * int(np.count_nonzero(keep)))
    points = np.empty((max(int(capacity), 1), 2), np.float32)
    ends = np.zeros(n, np.int64)
    done, used = 0, 0
    while done < n:  # the kernel stops at the first candidate that does not fit: grow, go on
        done, used = kernel(
            indptr,
            indices,
            keep,
            int(width),
            dirs,
            back,
            points,
            ends,
            done,
            used,
        )
        if done < n:
            grown = np.empty((2 * len(points), 2), np.float32)
            grown[:used] = points[:used]
            points = grown
    points = points[:used].copy()
    starts = np.concatenate([[0], ends[:-1]])
    return [points[a:b] for a, b in zip(starts.tolist(), ends.tolist())]


def _outlines_py(
    indptr, indices, keep, width, dirs, back, points, ends, first, used
):  # pragma: no cover
    n = len(indptr) - 1
    for i in range(first, n):
        lo, hi = indptr[i], indptr[i + 1]
        r0, r1, c0, c1, count = 1 << 60, -1, 1 << 60, -1, 0
        for q in range(lo, hi):
            if keep[q]:
                r, c = indices[q] // width, indices[q] % width
                r0, r1, c0, c1 = min(r0, r), max(r1, r), min(c0, c), max(c1, c)
                count += 1
        if count == 0:
            ends[i] = used
            continue
        h, w = r1 - r0 + 1, c1 - c0 + 1
        # padded grid: 0 background, -1 object, then the 8-connected component's label
        grid = np.zeros((h + 2, w + 2), np.int64)
        for q in range(lo, hi):
            if keep[q]:
                grid[indices[q] // width - r0 + 1, indices[q] % width - c0 + 1] = -1
        stack = np.empty((count, 2), np.int64)
        first_r = np.empty(count + 1, np.int64)
        first_c = np.empty(count + 1, np.int64)
        n_labels = 0
        # column-major scan: labels in bwlabel's order (features.shapes has the same loop:
        # see there why it is not a shared helper)
        for cc in range(1, w + 1):
            for rr in range(1, h + 1):
                if grid[rr, cc] != -1:
                    continue
                n_labels += 1
                first_r[n_labels], first_c[n_labels] = rr, cc
                grid[rr, cc] = n_labels
                stack[0, 0], stack[0, 1] = rr, cc
                top = 1
                while top > 0:
                    top -= 1
                    pr, pc = stack[top, 0], stack[top, 1]
                    for d in range(8):
                        qr, qc = pr + dirs[d, 0], pc + dirs[d, 1]
                        if grid[qr, qc] == -1:
                            grid[qr, qc] = n_labels
                            stack[top, 0], stack[top, 1] = qr, qc
                            top += 1
        # each component: fill its holes, trace it, smooth and round; NaN rows between
        n_cells = (h + 2) * (w + 2)
        outside = np.empty((h + 2, w + 2), np.bool_)
        queue = np.empty((n_cells, 2), np.int64)
        cap = 4 * h * w + 10
        trace = np.empty((cap, 2), np.int64)
        need = 0
        for lab in range(1, n_labels + 1):
            # background 4-connected to the border (the padded frame), from its corner
            outside[:, :] = False
            outside[0, 0] = True
            queue[0, 0], queue[0, 1] = 0, 0
            head, tail = 0, 1
            while head < tail:
                pr, pc = queue[head, 0], queue[head, 1]
                head += 1
                for d in range(0, 8, 2):  # west, north, east, south
                    qr, qc = pr + dirs[d, 0], pc + dirs[d, 1]
                    inside = 0 <= qr < h + 2 and 0 <= qc < w + 2
                    if inside and not outside[qr, qc] and grid[qr, qc] != lab:
                        outside[qr, qc] = True
                        queue[tail, 0], queue[tail, 1] = qr, qc
                        tail += 1
            # Moore trace of the filled component (not outside), clockwise from its first pixel
            sr, sc = first_r[lab], first_c[lab]
            m = 0
            trace[m, 0], trace[m, 1] = sr, sc
            m += 1
            cr, cc = sr, sc
            bk = 0
            has_second = False
            nr, nc = -1, -1
            for _ in range(4 * h * w + 8):
                fd = -1
                for k in range(1, 9):
                    d = (bk + k) & 7
                    if not outside[cr + dirs[d, 0], cc + dirs[d, 1]]:
                        fd = d
                        break
                if fd < 0:  # an isolated pixel
                    trace[m, 0], trace[m, 1] = cr, cc
                    m += 1
                    break
                fr, fc = cr + dirs[fd, 0], cc + dirs[fd, 1]
                if cr == sr and cc == sc and has_second and fr == nr and fc == nc:
                    break
                if not has_second:
                    has_second = True
                    nr, nc = fr, fc
                bk = back[fd]
                cr, cc = fr, fc
                trace[m, 0], trace[m, 1] = cr, cc
                m += 1
            need += m + (1 if lab > 1 else 0)
            if used + need > len(points):
                return i, used  # this candidate does not fit: the caller grows points
            at = used + need - m
            if lab > 1:
                points[at - 1, 0] = np.nan
                points[at - 1, 1] = np.nan
            for axis in range(2):  # geometry._smooth3 of the box coordinates, then shifted
                offset = r0 if axis == 0 else c0
                for k in range(m):
                    if 0 < k < m - 1:
                        a, b, c = trace[k - 1, axis] - 1, trace[k, axis] - 1, trace[k + 1, axis] - 1
                        v = (a + b + c) / 3.0
                    else:
                        v = np.float64(trace[k, axis] - 1)
                    points[at + k, axis] = np.floor(v + 0.5) + offset
        used += need
        ends[i] = used
    return n, used


def quantise_snapshots(values, bounds, valid, codes, clims, scale) -> None:
    """Colour limits, codes and ranges of the snapshots of g consecutive candidates, in place.

    values : (L,) integer scratch values, the g candidates' blocks one after the other, each
        (slots, height x width) in C order (slots = events x frames per event)
    bounds : (g + 1,) int64, candidate k's values are ``values[bounds[k]:bounds[k + 1]]``
    valid : (g, slots) bool, False = a slot with no movie frame (its codes are 0)
    codes : (L,) uint8 or uint16, out: code = floor((v - lo) * q_max / (hi - lo) + 0.5) in
        float32, clipped to [0, q_max] (``store.quantise_ranges``)
    clims : (g, 4) float32, out: min, max, and the sorted valid values at the 1-based positions
        max(1, round(0.1 n)) and min(n, round(0.999 n)) (``run._clims``); zeros when a
        candidate has no valid value
    scale : (g, 2) float32, out: (lo, hi) stored with the codes (hi = lo for a constant block)
    """
    q_max = int(np.iinfo(codes.dtype).max)
    info = np.iinfo(values.dtype)
    # values of at most 16 bits: one histogram indexed by the value itself (plus an offset for
    # signed types) gives min, max and both order statistics in one pass over the values
    small = info.bits <= 16
    hist = np.zeros((info.max - info.min + 1) if small else 0, np.int64)
    _jitted(_quantise_snapshots_py)(
        values, np.asarray(bounds, np.int64), valid, q_max, codes, clims, scale, hist, -info.min
    )


def _quantise_snapshots_py(
    values, bounds, valid, q_max, codes, clims, scale, hist, offset
):  # pragma: no cover
    g, slots = valid.shape
    half = np.float32(0.5)
    top = np.float32(q_max)
    for k in range(g):
        b0, b1 = bounds[k], bounds[k + 1]
        if b1 <= b0:  # no values: zero limits and range
            for c in range(4):
                clims[k, c] = 0.0
            scale[k, 0] = scale[k, 1] = 0.0
            continue
        per_slot = (b1 - b0) // slots
        n = 0
        lo = np.int64(0)
        hi = np.int64(0)
        if hist.size:  # one pass: the histogram by value, and the range it spans
            lo, hi = np.int64(hist.size), np.int64(-1)
            for s in range(slots):
                if not valid[k, s]:
                    continue
                for i in range(b0 + s * per_slot, b0 + (s + 1) * per_slot):
                    v = np.int64(values[i]) + offset
                    hist[v] += 1
                    lo = min(lo, v)
                    hi = max(hi, v)
                n += per_slot
            lo, hi = lo - offset, hi - offset  # back to values
        else:
            for s in range(slots):
                if not valid[k, s]:
                    continue
                for i in range(b0 + s * per_slot, b0 + (s + 1) * per_slot):
                    v = np.int64(values[i])
                    if n == 0 or v < lo:
                        lo = v
                    if n == 0 or v > hi:
                        hi = v
                    n += 1
        if n == 0:
            for c in range(4):
                clims[k, c] = 0.0
        else:
            k10 = max(1, int(np.floor(0.1 * n + 0.5))) - 1
            k999 = min(n, int(np.floor(0.999 * n + 0.5))) - 1
            if hist.size or hi - lo < 2**20:
                h = hist
                base = lo + offset  # the bin of value lo in hist
                if not hist.size:
                    h = np.zeros(hi - lo + 1, np.int64)
                    base = 0
                    for s in range(slots):
                        if valid[k, s]:
                            for i in range(b0 + s * per_slot, b0 + (s + 1) * per_slot):
                                h[np.int64(values[i]) - lo] += 1
                q10, q999, cum = -1, -1, 0
                for b in range(hi - lo + 1):
                    cum += h[base + b]
                    if q10 < 0 and cum > k10:
                        q10 = b
                    if cum > k999:
                        q999 = b
                        break
                if hist.size:  # clear the bins used, for the next candidate
                    for b in range(hi - lo + 1):
                        hist[base + b] = 0
                v10, v999 = lo + q10, lo + q999
            else:
                vals = np.empty(n, np.float32)
                m = 0
                for s in range(slots):
                    if valid[k, s]:
                        for i in range(b0 + s * per_slot, b0 + (s + 1) * per_slot):
                            vals[m] = np.float32(values[i])
                            m += 1
                vals.sort()
                v10, v999 = vals[k10], vals[k999]
            clims[k, 0] = np.float32(lo)
            clims[k, 1] = np.float32(hi)
            clims[k, 2] = np.float32(v10)
            clims[k, 3] = np.float32(v999)
        lo32 = clims[k, 0]
        hi32 = clims[k, 1]
        span = np.float64(hi32) - np.float64(lo32)
        factor = np.float32(q_max / span) if span > 0 else np.float32(0.0)
        scale[k, 0] = lo32
        scale[k, 1] = hi32 if span > 0 else lo32
        for s in range(slots):
            i0 = b0 + s * per_slot
            if not valid[k, s]:
                for i in range(i0, i0 + per_slot):
                    codes[i] = 0
                continue
            for i in range(i0, i0 + per_slot):
                x = np.floor((np.float32(values[i]) - lo32) * factor + half)
                if x < 0:
                    x = np.float32(0.0)
                elif x > top:
                    x = top
                codes[i] = x


def accumulate_rows(frames, ref, r0: int, r1: int, flush: int, mx, s1, s2, p0, p1, p2, p3):
    """Add the rows ``r0:r1`` of a chunk to the accumulator's totals, in place.

    frames (t, H, W) any real dtype; ref (H, W) float32; mx, s1, s2 and p0..p3 (H, W) float64
    (the running max, the sums of x and x^2 and the sums of products with the right, down,
    down-right and down-left neighbour, x = frame - ref, products stored at the first pixel of
    each pair). Row r1 (when it exists) is read as the down neighbour but not accumulated.
    """
    _jitted(_accumulate_rows_py)(frames, ref, r0, r1, flush, mx, s1, s2, p0, p1, p2, p3)


def _accumulate_rows_py(frames, ref, r0, r1, flush, mx, s1, s2, p0, p1, p2, p3):  # pragma: no cover
    h, w = ref.shape
    n = r1 - r0
    re = min(r1 + 1, h)
    m = re - r0 - 1  # rows of the block that have a down neighbour
    t_all = frames.shape[0]
    x = np.empty((re - r0, w), np.float32)
    acc = np.zeros((6, n, w), np.float32)
    for t0 in range(0, t_all, flush):
        for t in range(t0, min(t_all, t0 + flush)):
            for i in range(re - r0):
                for j in range(w):
                    x[i, j] = np.float32(frames[t, r0 + i, j]) - ref[r0 + i, j]
            for i in range(n):
                for j in range(w):
                    v = frames[t, r0 + i, j]
                    if v > mx[r0 + i, j] or v != v:  # NaN propagates, as np.maximum
                        mx[r0 + i, j] = v
                for j in range(w):
                    acc[0, i, j] += x[i, j]
                    acc[1, i, j] += x[i, j] * x[i, j]
                for j in range(w - 1):
                    acc[2, i, j] += x[i, j] * x[i, j + 1]
                if i < m:
                    for j in range(w):
                        acc[3, i, j] += x[i, j] * x[i + 1, j]
                    for j in range(w - 1):
                        acc[4, i, j] += x[i, j] * x[i + 1, j + 1]
                    for j in range(1, w):
                        acc[5, i, j] += x[i, j] * x[i + 1, j - 1]
        for i in range(n):
            for j in range(w):
                s1[r0 + i, j] += acc[0, i, j]
                s2[r0 + i, j] += acc[1, i, j]
                p0[r0 + i, j] += acc[2, i, j]
                p1[r0 + i, j] += acc[3, i, j]
                p2[r0 + i, j] += acc[4, i, j]
                p3[r0 + i, j] += acc[5, i, j]
        acc[:] = 0.0
