"""The preprocess stage's CPU loops compiled with Numba: the movie pass's accumulator (one
loop over each pixel per frame) and the snapshot quantiser (one candidate at a time).

:func:`accumulate_rows` does exactly the arithmetic of the NumPy ``blocked`` method of
:class:`~actsort_gpu.preprocess.kernels.ProjectionAccumulator` (the same float32 products and
sums in the same order, no fused multiply-add, flushed to the float64 totals every ``flush``
frames), so the two agree bit for bit (tested); it only avoids the 12 passes over each row
block that the NumPy version makes per frame (about 4x fewer CPU seconds per GB). It releases
the GIL, so the accumulator's thread pool runs disjoint row blocks in parallel.

The snapshot quantiser (:func:`quantise_snapshots`) computes each candidate's colour limits
(``run._clims``: min, max and two order statistics, by a histogram of the integer values) and
its codes (``store.quantise_ranges``) in three passes over the candidate's values, where the
NumPy version makes about twelve over 64 MB blocks and expands every per-candidate number to
every value (``np.repeat``); the results are the same bit for bit (tested). It takes integer
scratch values only (every integer movie dtype); float movies keep the NumPy path.

Numba is imported on first use: :func:`available` says whether it can be.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np

__all__ = [
    "available",
    "unusable",
    "accumulate_rows",
    "quantise_unusable",
    "quantise_snapshots",
]


@lru_cache(maxsize=1)
def available() -> bool:
    """True when Numba imports (the compiled accumulator can run)."""
    try:
        import numba  # noqa: F401
    except Exception:  # ImportError, or a Numba that does not support this NumPy
        return False
    return True


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


def _why(exc: Exception) -> str:
    """One line saying why a kernel could not run: the exception's type and first line."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


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
    _jitted(_quantise_snapshots_py)(
        values, np.asarray(bounds, np.int64), valid, q_max, codes, clims, scale
    )


def _quantise_snapshots_py(values, bounds, valid, q_max, codes, clims, scale):  # pragma: no cover
    g, slots = valid.shape
    half = np.float32(0.5)
    top = np.float32(q_max)
    for k in range(g):
        b0, b1 = bounds[k], bounds[k + 1]
        if b1 <= b0:
            continue
        per_slot = (b1 - b0) // slots
        n = 0
        lo = np.int64(0)
        hi = np.int64(0)
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
            if hi - lo < 2**20:
                hist = np.zeros(hi - lo + 1, np.int64)
                for s in range(slots):
                    if valid[k, s]:
                        for i in range(b0 + s * per_slot, b0 + (s + 1) * per_slot):
                            hist[np.int64(values[i]) - lo] += 1
                q10, q999, cum = -1, -1, 0
                for b in range(hi - lo + 1):
                    cum += hist[b]
                    if q10 < 0 and cum > k10:
                        q10 = b
                    if cum > k999:
                        q999 = b
                        break
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


@cache
def _jitted(py_func):
    """``py_func`` jitted: compiled once per argument types (~1.6 s for the accumulator) and
    cached on disk by Numba (beside this module, else in the user's cache directory), so later
    runs load it in milliseconds; where no cache directory is writable it is compiled in every
    process."""
    from numba import njit

    try:
        return njit(nogil=True, cache=True)(py_func)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(nogil=True)(py_func)


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
