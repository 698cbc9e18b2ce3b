"""1-D signal helpers with MATLAB semantics (actsort_reference.md section 0).

ActSort's events and several features call MATLAB built-ins whose details differ from the
obvious NumPy/SciPy equivalents; these functions reproduce the MATLAB behaviour:

- :func:`findpeaks` / :func:`findpeaks_many`: ``findpeaks`` with ``MinPeakProminence``,
  ``MinPeakDistance``, ``SortStr 'descend'`` and ``NPeaks``. A flat-topped peak is reported at
  the **first** sample of the plateau (SciPy reports the middle); the first and last samples
  are never peaks; the distance rule walks the peaks by height (ties: lower index first) and
  deletes every other peak with ``|dx| <= distance``.
- :func:`peak_prominences`: MATLAB/SciPy prominence (bases = minimum between the peak and the
  nearest strictly higher sample on each side, or the signal end).
- :func:`peak_widths`: ``'WidthReference','halfheight'`` widths (line at y_pk / 2, searched
  between the peak and its prominence bases, linear interpolation, base index when no crossing).
- :func:`medfilt3_zeropad`: ``medfilt1(x, 3)`` (zero padding at both ends).
- :func:`quantile_hazen`: ``quantile`` / ``prctile`` (= NumPy ``method='hazen'``).

Everything works on many traces at once: :func:`findpeaks_many` runs on an (N, T) matrix with
one SciPy call for all prominences and one for the distance rule (traces are laid end to end,
separated by a barrier), so N = 100,000 traces need no Python loop per trace.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.signal._peak_finding_utils import _peak_prominences, _select_by_peak_distance

log = logging.getLogger(__name__)

__all__ = [
    "findpeaks",
    "findpeaks_many",
    "local_maxima",
    "peak_prominences",
    "peak_widths",
    "medfilt3_zeropad",
    "quantile_hazen",
]


def local_maxima(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB findpeaks' candidate peaks of every row of ``y`` (N, T) (or one 1-D signal).

    Runs of equal consecutive values are collapsed to their first sample; a peak is a collapsed
    sample higher than both collapsed neighbours; the first and last samples are never peaks.

    Returns (rows, locs): int64 arrays of equal length, sorted by row then location; for a 1-D
    input ``rows`` is all 0.
    """
    y = np.atleast_2d(np.asarray(y))
    n, t = y.shape
    if t < 3:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    s = np.sign(np.diff(y, axis=1)).astype(np.int8)  # (N, T-1): step k is y[k+1] - y[k]
    if (s == 0).any():
        # a flat step takes the sign of the next non-flat step in its row (0 at the row end)
        m = s.shape[1]
        idx = np.where(s != 0, np.arange(m, dtype=np.int32), np.int32(m))
        idx = np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]
        padded = np.concatenate([s, np.zeros((n, 1), np.int8)], axis=1)
        s_next = np.take_along_axis(padded, idx, axis=1)
    else:
        s_next = s
    # a peak (first sample of a plateau) follows a rising step and precedes a falling run
    rows, locs = np.nonzero((s[:, :-1] > 0) & (s_next[:, 1:] < 0))
    rows = rows.astype(np.int64)
    locs = locs.astype(np.int64) + 1
    return rows, locs


def _concat_with_barrier(y: np.ndarray, rows: np.ndarray, locs: np.ndarray):
    """Lay the rows of y end to end, separated by one sample higher than any value."""
    n, t = y.shape
    finite = y[np.isfinite(y)]
    top = float(finite.max()) if finite.size else 0.0
    barrier = top + abs(top) + 1.0
    flat = np.full((n, t + 1), barrier, dtype=np.float64)
    flat[:, :t] = y
    return flat.ravel(), rows * (t + 1) + locs


def peak_prominences(
    y: np.ndarray, locs: np.ndarray, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prominence of each peak, with its left and right base indices (MATLAB = SciPy wlen=None).

    y : (T,) signal, or (N, T) with ``rows`` giving each peak's row.
    locs : peak sample indices (int).

    Returns (prominences float64, left_bases int64, right_bases int64); bases are sample
    indices within the peak's own row.
    """
    y = np.asarray(y, dtype=np.float64)
    locs = np.asarray(locs, dtype=np.int64)
    if y.ndim == 1:
        y2, r = y[None], np.zeros(len(locs), np.int64)
    else:
        y2, r = y, np.asarray(rows, dtype=np.int64)
    if len(locs) == 0:
        e = np.zeros(0, np.int64)
        return np.zeros(0), e, e.copy()
    t = y2.shape[1]
    flat, pos = _concat_with_barrier(y2, r, locs)
    prom, lb, rb = _peak_prominences(flat, pos.astype(np.intp), np.intp(-1))
    off = r * (t + 1)
    return (
        np.asarray(prom, np.float64),
        np.asarray(lb, np.int64) - off,
        np.asarray(rb, np.int64) - off,
    )


def findpeaks_many(
    y: np.ndarray,
    min_prominence=None,
    min_distance: float | None = None,
    n_peaks: int | None = None,
    sort_descend: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MATLAB ``findpeaks`` on every row of ``y`` (N, T).

    min_prominence : None, a scalar, or (N,) per-row values (``MinPeakProminence``).
    min_distance : ``MinPeakDistance`` in samples (may be fractional; peaks with
        ``|dx| <= min_distance`` of a higher kept peak are deleted).
    n_peaks : ``NPeaks``: keep at most this many per row (after sorting, if sorted).
    sort_descend : ``SortStr 'descend'``: per row, order by height descending (ties: lower
        index first); otherwise by index.

    Returns (rows, locs, heights): flat arrays, grouped by row (ascending) and, within a row, in
    the output order of MATLAB. ``heights`` are ``y[row, loc]`` (float64).
    """
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    n, t = y.shape
    rows, locs = local_maxima(y)
    if min_prominence is not None and len(locs):
        prom, _, _ = peak_prominences(y, locs, rows)
        thr = np.broadcast_to(np.asarray(min_prominence, dtype=np.float64), (n,))[rows]
        keep = prom >= thr
        rows, locs = rows[keep], locs[keep]
    heights = y[rows, locs]
    if min_distance is not None and min_distance > 0 and len(locs) > 1:
        dist = float(np.floor(min_distance)) + 1.0  # scipy removes |dx| < dist
        stride = t + int(dist) + 1  # rows never interact
        pos = (rows * stride + locs).astype(np.intp)
        # priority: height, ties broken in favour of the lower index (MATLAB's stable sort)
        order = np.lexsort((-pos, heights))  # ascending priority
        priority = np.empty(len(pos), dtype=np.float64)
        priority[order] = np.arange(len(pos), dtype=np.float64)
        keep = np.asarray(_select_by_peak_distance(pos, priority, np.float64(dist)), bool)
        rows, locs, heights = rows[keep], locs[keep], heights[keep]
    if sort_descend and len(locs):
        order = np.lexsort((locs, -heights, rows))
        rows, locs, heights = rows[order], locs[order], heights[order]
    if n_peaks is not None and len(locs):
        starts = np.searchsorted(rows, rows, side="left")
        rank = np.arange(len(rows)) - starts
        keep = rank < int(n_peaks)
        rows, locs, heights = rows[keep], locs[keep], heights[keep]
    return rows, locs, heights


def findpeaks(
    y: np.ndarray,
    min_prominence: float | None = None,
    min_distance: float | None = None,
    n_peaks: int | None = None,
    sort_descend: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``findpeaks`` on one signal ``y`` (T,): returns (locs int64, heights float64).

    See :func:`findpeaks_many` for the options; locs are 0-based sample indices.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"findpeaks: expected a 1-D signal, got shape {y.shape}")
    _, locs, heights = findpeaks_many(y[None], min_prominence, min_distance, n_peaks, sort_descend)
    return locs, heights


def peak_widths(y: np.ndarray, locs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MATLAB half-height peak widths (``'WidthReference','halfheight'``) of peaks of ``y`` (T,).

    The line is at y_pk / 2 (half the height measured from zero). On each side the crossing is
    searched from the peak towards that side's prominence base; the crossing is linearly
    interpolated between the bracketing samples; if the signal stays above the line up to the
    base, the base index is used.

    Returns (widths, left_x, right_x) in samples (float64; x are 0-based fractional positions).
    """
    y = np.asarray(y, dtype=np.float64)
    locs = np.asarray(locs, dtype=np.int64)
    _, lbs, rbs = peak_prominences(y, locs)
    left = np.empty(len(locs))
    right = np.empty(len(locs))
    for k, (p, lb, rb) in enumerate(zip(locs, lbs, rbs)):
        ref = y[p] / 2.0
        # left: last index in [lb, p] with y <= ref (MATLAB walks down from p)
        seg = y[lb : p + 1]
        below = np.flatnonzero(seg <= ref)
        if below.size == 0:
            left[k] = lb
        else:
            i = lb + below[-1]
            left[k] = i + (ref - y[i]) / (y[i + 1] - y[i])
        seg = y[p : rb + 1]
        below = np.flatnonzero(seg <= ref)
        if below.size == 0:
            right[k] = rb
        else:
            i = p + below[0]
            right[k] = i + (ref - y[i]) / (y[i - 1] - y[i]) * -1.0
    return right - left, left, right


def medfilt3_zeropad(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """MATLAB ``medfilt1(x, 3)`` along ``axis``: 3-point running median, zero padding."""
    x = np.moveaxis(np.asarray(x), axis, -1)
    pad = np.zeros(x.shape[:-1] + (1,), dtype=x.dtype)
    xp = np.concatenate([pad, x, pad], axis=-1)
    a, b, c = xp[..., :-2], xp[..., 1:-1], xp[..., 2:]
    med = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
    return np.moveaxis(med, -1, axis)


def quantile_hazen(x: np.ndarray, q, axis=None) -> np.ndarray:
    """MATLAB ``quantile(x, q)`` (= ``prctile(x, 100 q)``): NumPy ``method='hazen'``."""
    return np.quantile(np.asarray(x, dtype=np.float64), q, axis=axis, method="hazen")
