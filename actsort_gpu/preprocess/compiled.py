"""The movie pass's CPU accumulator compiled with Numba: one loop over each pixel per frame.

:func:`accumulate_rows` does exactly the arithmetic of the NumPy ``blocked`` method of
:class:`~actsort_gpu.preprocess.kernels.ProjectionAccumulator` (the same float32 products and
sums in the same order, no fused multiply-add, flushed to the float64 totals every ``flush``
frames), so the two agree bit for bit (tested); it only avoids the 12 passes over each row
block that the NumPy version makes per frame (about 4x fewer CPU seconds per GB). It releases
the GIL, so the accumulator's thread pool runs disjoint row blocks in parallel.

Numba is imported on first use: :func:`available` says whether it can be.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np

__all__ = ["available", "unusable", "accumulate_rows"]


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
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def accumulate_rows(frames, ref, r0: int, r1: int, flush: int, mx, s1, s2, p0, p1, p2, p3):
    """Add the rows ``r0:r1`` of a chunk to the accumulator's totals, in place.

    frames (t, H, W) any real dtype; ref (H, W) float32; mx, s1, s2 and p0..p3 (H, W) float64
    (the running max, the sums of x and x^2 and the sums of products with the right, down,
    down-right and down-left neighbour, x = frame - ref, products stored at the first pixel of
    each pair). Row r1 (when it exists) is read as the down neighbour but not accumulated.
    """
    _kernel()(frames, ref, r0, r1, flush, mx, s1, s2, p0, p1, p2, p3)


@lru_cache(maxsize=1)
def _kernel():
    """The jitted kernel: compiled once per movie dtype (~1.6 s) and cached on disk by Numba
    (beside this module, else in the user's cache directory), so later runs load it in
    milliseconds; where no cache directory is writable it is compiled in every process."""
    from numba import njit

    try:
        return njit(nogil=True, cache=True)(_accumulate_rows_py)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(nogil=True)(_accumulate_rows_py)


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
