"""Extra features from the field (after the 76 ActSort columns; registry.EXTRA_COMPUTED_NAMES).

Computed by us for any source, so they exist for EXTRACT, Suite2p, CaImAn or synthetic stores:

- ``skew``: skewness of the trace (Suite2p's ``skew`` is that of F - 0.7 Fneu; the store keeps
  one trace per candidate, so we take the skewness of that trace).
- ``compact``, ``npix_norm``, ``aspect_ratio``: Suite2p's ROI statistics
  (``suite2p/detection/stats.py``) on the footprint pixels >= ``pixel_fraction`` of its peak
  (Suite2p keeps ROI pixels above 1/5 of the peak weight).
- ``event_snr``: CaImAn's transient "exceptionality" SNR (``compute_event_exceptionality``),
  with the median as the baseline (CaImAn uses a half-sample mode) and log-space probabilities.
- ``r_value``: CaImAn's spatial ``r_values`` from the store's snapshots: Pearson correlation
  between the cropped footprint and the mean movie frame over the candidate's event windows.

:func:`extra_columns` computes all six for a block under their names (what the driver places).
Source metrics (``candidates/source_metrics/*``) are passed through by the driver.
All functions return raw float64 values; NaN/Inf are left to the driver's policy.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy import special

from .._xp import get_xp, to_numpy
from .columns import NamedColumns
from .registry import EXTRA_COMPUTED_NAMES

__all__ = [
    "extra_columns",
    "trace_skew",
    "event_snr",
    "footprint_shape",
    "r_values",
    "SUITE2P_PIXEL_FRACTION",
]

SUITE2P_PIXEL_FRACTION = 0.2
_ELLIPSE_THRESHOLD = 2.5  # suite2p fitMVGaus thres: radii = 2.5 sqrt(eigenvalues)


def trace_skew(traces, *, xp=None, row_chunk: int = 256, threads: int = 1):
    """Skewness (biased, as scipy.stats.skew) of each row: (n, T) -> (n,) float64.

    Moments in float64, ``row_chunk`` rows at a time (no (n, T) float64 temporary).
    """
    from .temporal import map_row_chunks

    xp = get_xp(traces, xp=xp)

    def one(chunk):
        x = chunk.astype(xp.float64)
        x -= x.mean(axis=1, keepdims=True)
        m2 = (x * x).mean(axis=1)
        x *= x * x
        m3 = x.mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return to_numpy(m3 / m2**1.5)

    parts = map_row_chunks(one, traces, xp=xp, row_chunk=row_chunk, threads=threads)
    return np.concatenate(parts) if parts else np.zeros(0)


def event_snr(traces, *, xp=None, n_window: int = 5, row_chunk: int = 256, threads: int = 1):
    """CaImAn-style SNR of transients of each row: (n, T) -> (n,) float64.

    baseline md = median; noise sd = RMS of the values below md (one-sided);
    z = (T - md) / (3 sd); log p_t = log(1 - Phi(z_t)); fitness = min over t of the sum of
    log p over the ``n_window`` samples ending at t; SNR = -Phi^-1(exp(fitness / n_window)).
    ``n_window`` = CaImAn's N (its default 5; ceil(fr * decay_time) when those are known).
    Array work in float32 (sd accumulated in float64), ``row_chunk`` rows at a time. Every
    log p is <= 0, so the shorter windows at the start never hold the minimum: the minimum over
    the full windows (sums of ``n_window`` shifted slices) is the fitness.
    """
    from .temporal import map_row_chunks

    xp = get_xp(traces, xp=xp)
    if xp is np:
        log_ndtr = special.log_ndtr
    else:
        from cupyx.scipy import special as cspecial

        log_ndtr = cspecial.log_ndtr

    def one(chunk):
        x = chunk.astype(xp.float32, copy=False)
        n_t = x.shape[1]
        d = x - xp.median(x, axis=1, keepdims=True)
        below = xp.minimum(d, xp.float32(0))
        n_below = xp.count_nonzero(below < 0, axis=1)
        sd = xp.sqrt((below * below).sum(axis=1, dtype=xp.float64) / xp.maximum(n_below, 1))
        del below
        with np.errstate(invalid="ignore", divide="ignore"):
            d /= (3 * sd).astype(xp.float32)[:, None]
            d *= xp.float32(-1)
            logp = log_ndtr(d)
        del d
        width = max(n_t - n_window + 1, 1)
        window = logp[:, :width].copy()
        for k in range(1, min(n_window, n_t)):
            window += logp[:, k : k + width]
        return to_numpy(window.min(axis=1)).astype(np.float64)

    parts = map_row_chunks(one, traces, xp=xp, row_chunk=row_chunk, threads=threads)
    fitness = np.concatenate(parts) if parts else np.zeros(0)
    # ndtri_exp avoids exp() underflow for very exceptional transients
    with np.errstate(invalid="ignore"):
        snr = -special.ndtri_exp(np.minimum(fitness / n_window, 0.0))
    snr[~np.isfinite(fitness)] = np.nan
    return snr


def footprint_shape(
    footprints: sp.csr_matrix,
    height: int,
    width: int,
    *,
    pixel_fraction: float = SUITE2P_PIXEL_FRACTION,
):
    """Suite2p ROI statistics of max-normalised footprints (n, H*W) CSR.

    Pixels: weight >= ``pixel_fraction`` (peak 1). Returns (npix, compact, aspect_ratio),
    each (n,) float64:
    - npix: number of pixels (the driver divides by the median over candidates: npix_norm);
    - compact: mean distance of the pixels to their median (row, col) divided by the mean
      distance of the npix grid pixels closest to a disk centre (1 = disk, larger = less compact);
    - aspect_ratio: 2 r_major / (0.01 + r_major + r_minor), r = 2.5 sqrt(eigenvalues) of the
      weight-normalised pixel covariance (1 = round, -> 2 = elongated).
    Empty footprints give npix 0 and NaN for the other two.
    """
    fp = sp.csr_matrix(footprints)
    n = fp.shape[0]
    counts = np.diff(fp.indptr)
    rows_all = np.repeat(np.arange(n), counts)
    keep = fp.data >= pixel_fraction
    r_id = rows_all[keep]
    pix = fp.indices[keep].astype(np.int64)
    lam = fp.data[keep].astype(np.float64)
    y, x = (pix // width).astype(np.float64), (pix % width).astype(np.float64)
    npix = np.bincount(r_id, minlength=n).astype(np.float64)
    empty = npix == 0

    med_y = _group_median(r_id, y, n)
    med_x = _group_median(r_id, x, n)
    dist = np.hypot(y - med_y[r_id], x - med_x[r_id])
    with np.errstate(invalid="ignore", divide="ignore"):
        mrs = np.bincount(r_id, weights=dist, minlength=n) / npix
    max_np = int(npix.max()) if n else 0
    radius = int(math.ceil(math.sqrt(max(max_np, 1) / math.pi))) + 2
    gy, gx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    rsort = np.sort(np.hypot(gy, gx).ravel())
    mean_first = np.concatenate([[np.nan], np.cumsum(rsort) / np.arange(1, rsort.size + 1)])
    mrs0 = mean_first[npix.astype(np.int64)]
    with np.errstate(invalid="ignore", divide="ignore"):
        compact = mrs / (1e-10 + mrs0)

    wsum = np.bincount(r_id, weights=lam, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = lam / wsum[r_id]
    mu_y = np.bincount(r_id, weights=w * y, minlength=n)
    mu_x = np.bincount(r_id, weights=w * x, minlength=n)
    dy, dx = y - mu_y[r_id], x - mu_x[r_id]
    cyy = np.bincount(r_id, weights=w * dy * dy, minlength=n)
    cxx = np.bincount(r_id, weights=w * dx * dx, minlength=n)
    cxy = np.bincount(r_id, weights=w * dx * dy, minlength=n)
    half_tr = (cyy + cxx) / 2
    disc = np.sqrt(np.maximum(((cyy - cxx) / 2) ** 2 + cxy**2, 0))
    r_major = _ELLIPSE_THRESHOLD * np.sqrt(np.maximum(half_tr + disc, 0))
    r_minor = _ELLIPSE_THRESHOLD * np.sqrt(np.maximum(half_tr - disc, 0))
    aspect = 2 * r_major / (0.01 + r_major + r_minor)
    compact[empty] = np.nan
    aspect[empty] = np.nan
    return npix, compact, aspect


def _group_median(group: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """np.median of ``values`` per group id in [0, n) (NaN for empty groups)."""
    out = np.full(n, np.nan)
    if values.size == 0:
        return out
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    counts = np.bincount(g, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ok = counts > 0
    lo = starts[ok] + (counts[ok] - 1) // 2
    hi = starts[ok] + counts[ok] // 2
    out[ok] = (v[lo] + v[hi]) / 2
    return out


def r_values(snapshots, crop_footprints, frame_valid) -> np.ndarray:
    """CaImAn-style spatial r value per candidate from its event snapshots (host).

    snapshots : list of n arrays (n_events, event_frames, h_i, w_i) float32 (movie units)
    crop_footprints : list of n (h_i, w_i) float32 footprints cropped to the same window
    frame_valid : (n, n_events, event_frames) bool, frames that hold movie data
        (``snapshots/frames >= 0``; missing events and frames outside the movie are excluded)
    Returns (n,) float64: Pearson correlation (over the crop pixels) between the footprint and
    the mean of the valid snapshot frames; NaN when no frame is valid or an image is constant.
    """
    n = len(snapshots)
    out = np.full(n, np.nan)
    valid = np.asarray(frame_valid, dtype=bool)
    for i in range(n):
        ok = valid[i]
        if not ok.any():
            continue
        mean_img = np.asarray(snapshots[i], dtype=np.float64)[ok].mean(axis=0).ravel()
        fp = np.asarray(crop_footprints[i], dtype=np.float64).ravel()
        a, b = mean_img - mean_img.mean(), fp - fp.mean()
        denom = math.sqrt(float(a @ a) * float(b @ b))
        if denom > 0:
            out[i] = float(a @ b) / denom
    return out


def extra_columns(
    traces,
    footprints: sp.csr_matrix,
    height: int,
    width: int,
    snapshots,
    crop_footprints,
    frame_valid,
    *,
    npix_median: float,
    xp=None,
    pixel_fraction: float = SUITE2P_PIXEL_FRACTION,
    n_window: int = 5,
    threads: int = 1,
) -> NamedColumns:
    """The computed extra features of a block of n candidates, each under its name.

    Parameters
    ----------
    traces : (n, T) float32 traces (host or ``xp`` array), extractor units
    footprints : CSR (n, H*W) max-normalised footprints of the same candidates
    height, width : the FOV size H, W in pixels
    snapshots, crop_footprints, frame_valid : as :func:`r_values`
    npix_median : median footprint pixel count over all candidates of the store (npix_norm =
        npix / npix_median), pixels
    pixel_fraction : footprint pixels kept by :func:`footprint_shape`, fraction of the peak
    n_window : :func:`event_snr` window, frames
    threads : CPU threads for the trace statistics

    Returns
    -------
    NamedColumns with names ``registry.EXTRA_COMPUTED_NAMES`` and (n, 6) float64 values.
    """
    npix, compact, aspect = footprint_shape(
        footprints, height, width, pixel_fraction=pixel_fraction
    )
    cols = {
        "skew": to_numpy(trace_skew(traces, xp=xp, threads=threads)),
        "compact": compact,
        "npix_norm": npix / npix_median,
        "aspect_ratio": aspect,
        "event_snr": event_snr(traces, xp=xp, n_window=n_window, threads=threads),
        "r_value": r_values(snapshots, crop_footprints, frame_valid),
    }
    return NamedColumns.from_dict(cols, EXTRA_COMPUTED_NAMES, dtype=np.float64)
