"""Temporal features 1-36 (ActSort reference section 3.2), computed on blocks of traces.

Everything except peak finding is an (n, T) array expression in ``xp`` (NumPy on the CPU, CuPy
on a GPU). Peak finding (features 3, 5-11) runs on the host with SciPy's compiled prominence and
width routines over all traces of a block at once (traces laid end to end behind a barrier, see
:mod:`actsort_gpu.signal`): measured faster than any per-trace loop, and exact.

Features 3, 5-11 use three rescaled copies of the trace (T1 = T/max, T2 = (T-min)/(max-min),
T3 = T - min(0, min T)). Each is T under an increasing affine map, so they share the same peaks,
the same prominence bases, and prominences that scale with the map. We therefore find the peaks
once, on T, and only rescale thresholds. The half-height widths (8-11) depend on the level
of T2 and are measured on T2 itself.

Feature 35 (trace similarity) is pairwise over all candidates: :func:`similarity_rows` makes
the unit-norm rows and :func:`count_similar` counts correlations > 0.7 in symmetric tiles;
for long recordings :func:`count_similar_sketched` computes exactly only the pairs a Gaussian
sketch of the rows cannot rule out (same counts, about k / T of the work when few pairs correlate).

:func:`temporal_columns` returns every feature under its name (``registry.TEMPORAL_NAMES``);
each value is named where it is computed, never by its column number.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.signal import peak_widths as _scipy_peak_widths
from scipy.signal._peak_finding_utils import PeakPropertyWarning

from .._xp import get_xp, is_cupy, to_numpy
from ..signal import local_maxima, peak_prominences
from .columns import NamedColumns
from .registry import EVENT_SCALES, TEMPORAL_NAMES

log = logging.getLogger(__name__)

__all__ = [
    "temporal_columns",
    "temporal_features",
    "fft_noise_std",
    "medfilt3",
    "quantile_rows",
    "event_counts",
    "similarity_rows",
    "count_similar",
    "count_similar_sketched",
    "sketch_rows",
    "sketch_miss_bound",
    "peak_features",
    "halfheight_widths_many",
    "map_row_chunks",
    "ROW_CHUNK",
    "SIMILARITY_THRESHOLD",
    "PEAK_NAMES",
]

SIMILARITY_THRESHOLD = 0.7  # trace_similarity.m
_EVENT_KERNEL = (0.05, 0.2, 0.5, 0.2, 0.05)  # [0.1 0.4 1 0.4 0.1] / 2 (extract_events_nonexp.)
_EVENT_MIN_DISTANCE = 3  # peakseek minpeakdist


def _round_half_away(x: float) -> int:
    """MATLAB round for a non-negative scalar (NumPy rounds half to even)."""
    return int(math.floor(x + 0.5))


def medfilt3(x, *, xp=None):
    """MATLAB ``medfilt1(x, 3)`` along the last axis with zero padding, in ``xp``.

    x : (..., T) float. Returns the same shape and dtype (median of 3 = max(min(a, b),
    min(max(a, b), c)); one output array and two temporaries, no padded copies).
    """
    xp = get_xp(x, xp=xp)
    n_t = x.shape[-1]
    if n_t < 3:
        zero = xp.zeros(x.shape[:-1] + (1,), dtype=x.dtype)
        prev = xp.concatenate([zero, x[..., :-1]], axis=-1)
        nxt = xp.concatenate([x[..., 1:], zero], axis=-1)
        return xp.maximum(xp.minimum(prev, x), xp.minimum(xp.maximum(prev, x), nxt))
    out = xp.empty_like(x)
    a, b, c = x[..., :-2], x[..., 1:-1], x[..., 2:]
    lo = xp.minimum(a, b)
    hi = xp.maximum(a, b)
    xp.minimum(hi, c, out=hi)
    xp.maximum(lo, hi, out=out[..., 1:-1])
    zero = x.dtype.type(0)
    x0, x1 = x[..., 0], x[..., 1]
    out[..., 0] = xp.maximum(xp.minimum(zero, x0), xp.minimum(xp.maximum(zero, x0), x1))
    xa, xb = x[..., -2], x[..., -1]
    out[..., -1] = xp.maximum(xp.minimum(xa, xb), xp.minimum(xp.maximum(xa, xb), zero))
    return out


def fft_noise_std(x, *, xp=None):
    """sigma-hat of each row (``estimate_noise_std.m``, reference 3.1): (n, T) -> (n,).

    n_t samples, N = ceil(n_t/2) one-sided bins (bin 0 = DC, halved), P = |F|^2 / (2N),
    sigma = sqrt(mean P over bins round(0.5 N) ... N) (1-based, inclusive).
    """
    xp = get_xp(x, xp=xp)
    n_t = x.shape[-1]
    half = (n_t + 1) // 2
    power = xp.abs(xp.fft.rfft(x, axis=-1)[..., :half]) ** 2
    power[..., 0] /= 2
    power /= 2 * half
    lo = max(_round_half_away(0.5 * half), 1) - 1
    return xp.sqrt(power[..., lo:half].mean(axis=-1))


def quantile_rows(x, q: float, *, xp=None):
    """MATLAB ``quantile(x, q)`` of every row ('hazen'): (n, T) -> (n,) in x's dtype.

    Sample i (1-based) sits at probability (i - 0.5)/T, linear interpolation, clamped.
    """
    xp = get_xp(x, xp=xp)
    n_t = x.shape[-1]
    pos = min(max(q * n_t - 0.5, 0.0), n_t - 1.0)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n_t - 1)
    frac = pos - lo
    if xp is np:
        part = np.partition(x, (lo, hi), axis=-1)
    else:
        part = xp.sort(x, axis=-1)
    a, b = part[..., lo], part[..., hi]
    return a + (b - a) * x.dtype.type(frac)


def _zscore_rows(x, ddof: int, xp):
    """MATLAB zscore along rows; a row with std 0 is divided by 1 (all zeros)."""
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, ddof=ddof, keepdims=True)
    return (x - mean) / xp.where(std > 0, std, 1)


# ----------------------------------------------------------------------------- events (12-29)
def event_counts(v, theta, *, xp=None, m=None):
    """Event detector of ``extract_events_nonexponential.m`` + ``peakseek.m`` on every row.

    v : (n, T) float, non-negative thresholded trace; theta : (n,) threshold argument.
    m : optional ``medfilt3(v)`` when the caller has it (see :func:`_event_metrics`).
    Returns (n,) int64 event counts (reference 3.3: medfilt3, 5-tap smoothing g (length T-1),
    peaks of g above theta * max(g), pairs closer than 3 samples lose their lower member until
    none is left, each survivor moves to the max of v within +-2 and is dropped if that is 0).
    """
    xp = get_xp(v, xp=xp)
    n, n_t = v.shape
    if n_t < 4:
        return xp.zeros(n, dtype=xp.int64)
    if m is None:
        m = medfilt3(v, xp=xp)
    pad = xp.zeros((n, 2), dtype=m.dtype)
    mp = xp.concatenate([pad, m, pad], axis=1)
    # g = sum_k w_k m[t + k - 2], accumulated in place in the order of the reference sum
    g = mp[:, 0 : n_t - 1] * m.dtype.type(_EVENT_KERNEL[0])
    for k in range(1, len(_EVENT_KERNEL)):
        g += mp[:, k : k + n_t - 1] * m.dtype.type(_EVENT_KERNEL[k])
    del mp
    h = theta * g.max(axis=1)
    mid = g[:, 1:-1]
    cand = mid >= g[:, :-2]
    cand &= mid >= g[:, 2:]
    cand &= mid > h[:, None]
    rows, cols = xp.nonzero(cand)
    del cand
    cols = cols + 1
    vals = g[rows, cols]
    while rows.size > 1:
        close = (rows[1:] == rows[:-1]) & ((cols[1:] - cols[:-1]) < _EVENT_MIN_DISTANCE)
        if not bool(close.any()):
            break
        first = xp.nonzero(close)[0]
        # MATLAB min() over [first; second] returns the first on ties: the first is deleted
        drop_first = vals[first] <= vals[first + 1]
        keep = xp.ones(rows.size, dtype=bool)
        keep[first[drop_first]] = False
        keep[first[~drop_first] + 1] = False
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    # the arg-max of v within +-2 is zero exactly when the window maximum is zero (v >= 0);
    # only the surviving peaks need their window (gathered, not a full (n, T) pass)
    wmax = xp.zeros(rows.size, dtype=v.dtype)
    for k in range(-2, 3):
        c = cols + k
        inside = (c >= 0) & (c < n_t)
        wmax = xp.maximum(wmax, xp.where(inside, v[rows, xp.clip(c, 0, n_t - 1)], 0))
    ok = wmax > 0
    return xp.bincount(rows[ok], minlength=n).astype(xp.int64)


_EVENT_KINDS = ("event_power", "event_fraction", "n_events")


def _event_metrics(traces, sigma, xp, tm=None):
    """Features 12-29: (n, 18) float64 as [power, fraction, n_events] per scale.

    Column 3 j + k is ``f"{_EVENT_KINDS[k]}_c{EVENT_SCALES[j]}"`` (:func:`_event_columns`).

    B5 fix: the noise is that of the max-normalised trace u = T / max(T) (sigma / max), the
    same signal the threshold is applied to, so the features no longer depend on trace units.
    tm : optional ``medfilt3(traces)``. Thresholding v = u if u >= theta else 0 (theta >= 0) is
    non-decreasing with v(0) = 0 and division by max(T) is monotone, so the median filter
    commutes with both: medfilt3(v) = threshold(medfilt3(T) / max) exactly, one filter pass
    for all six scales. Squares are summed in float64 from float32 values.
    """
    n, n_t = traces.shape
    peak = traces.max(axis=1)
    safe = xp.where(peak != 0, peak, 1)
    u = traces / safe[:, None]
    if tm is None:
        tm = medfilt3(traces, xp=xp)
    mu = tm / safe[:, None]
    sigma_u = sigma / xp.abs(safe)
    usq = u * u
    u2 = usq.sum(axis=1, dtype=xp.float64)
    u_max = u.max(axis=1)
    out = xp.zeros((n, 3 * len(EVENT_SCALES)), dtype=xp.float64)
    zero = u.dtype.type(0)
    for j, c in enumerate(EVENT_SCALES):
        theta = (c * sigma_u).astype(u.dtype)
        # rows with every sample below theta have v = 0: power, fraction and events are 0
        act = xp.nonzero(~(u_max < theta))[0]
        if act.size == 0:
            continue
        whole = act.size == n
        ua, th = (u, theta) if whole else (u[act], theta[act])
        below = ua < th[:, None]
        v = xp.where(below, zero, ua)
        sq = xp.where(below, zero, usq if whole else usq[act])
        res = xp.empty((act.size, 3), dtype=xp.float64)
        res[:, 0] = sq.sum(axis=1, dtype=xp.float64) / (u2 if whole else u2[act])
        res[:, 1] = xp.count_nonzero(v > 0, axis=1) / n_t
        del below, sq
        m = mu if whole else mu[act]
        m = xp.where(m < th[:, None], zero, m)
        res[:, 2] = event_counts(v, th, xp=xp, m=m)
        out[act, 3 * j : 3 * j + 3] = res
    # a trace with max(T) == 0 has no normalised form (MATLAB: 0/0): NaN, fixed by the policy
    out[peak == 0] = xp.nan
    return out


def _event_columns(metrics) -> dict:
    """Name the (n, 18) columns of :func:`_event_metrics`: name -> (n,) view."""
    return {
        f"{kind}_c{c}": metrics[:, len(_EVENT_KINDS) * j + k]
        for j, c in enumerate(EVENT_SCALES)
        for k, kind in enumerate(_EVENT_KINDS)
    }


# ----------------------------------------------------------------------------- spectrum (30-34)
_BANDS = ((0.0, 0.05), (0.05, 0.95), (0.5, 1.0), (0.0, 0.5), (0.95, 1.0))
# feature name of each band: spec_<lo>_<hi> with the fractions written shortest (0, 0.05, 1)
_BAND_NAMES = tuple(f"spec_{lo:g}_{hi:g}" for lo, hi in _BANDS)


def _one_sided_power(traces, xp):
    """|rfft(T)|^2 (float64) of the first ceil(T/2) bins, shared by sigma-hat and 30-34."""
    n_t = traces.shape[-1]
    half = (n_t + 1) // 2
    if xp is np:
        import scipy.fft

        spec = scipy.fft.rfft(traces.astype(np.float64), axis=-1)[:, :half]
    else:
        spec = xp.fft.rfft(traces.astype(xp.float64), axis=-1)[:, :half]
    return spec.real**2 + spec.imag**2


def _sigma_from_power(power):
    """fft_noise_std from the one-sided power (n, ceil(T/2)) of :func:`_one_sided_power`."""
    half = power.shape[-1]
    lo = max(_round_half_away(0.5 * half), 1) - 1
    band = power[..., lo:half]
    total = band.sum(axis=-1)
    if lo == 0:
        total = total - power[..., 0] / 2
    return (total / (2 * half * (half - lo))) ** 0.5


def _spectral_fractions(traces, xp, power=None):
    """Features 30-34 (``fourier_features.m``): power fractions in normalised bands, (n, 5).

    Column j is the band ``_BANDS[j]``, feature ``_BAND_NAMES[j]``.
    """
    n_t = traces.shape[-1]
    nc = _round_half_away(n_t / 2)
    if power is None:
        power = _one_sided_power(traces, xp)
    power = power[:, :nc]
    total = power.sum(axis=1)
    csum = xp.concatenate([xp.zeros((traces.shape[0], 1)), xp.cumsum(power, axis=1)], axis=1)
    out = xp.empty((traces.shape[0], len(_BANDS)), dtype=xp.float64)
    for j, (lo_f, hi_f) in enumerate(_BANDS):
        lo = max(_round_half_away(lo_f * nc), 1)
        hi = min(_round_half_away(hi_f * nc), nc)
        out[:, j] = (csum[:, hi] - csum[:, lo - 1]) / total  # 1-based inclusive [lo, hi]
    return out


# ----------------------------------------------------------------------------- similarity (35-36)
def similarity_rows(traces, *, xp=None, filtered=None):
    """Unit-norm rows Z of ``trace_similarity.m``: medfilt3, z-score (ddof 0), / sqrt(T).

    traces : (n, T) float. filtered : optional ``medfilt3(traces)`` (float32) when known.
    Returns (n, T) float32; Z Z^T is the Pearson correlation matrix.
    """
    xp = get_xp(traces, xp=xp)
    if filtered is None:
        filtered = medfilt3(traces.astype(xp.float32), xp=xp)
    z = _zscore_rows(filtered, 0, xp)
    z /= np.float32(math.sqrt(traces.shape[-1]))
    return z.astype(xp.float32, copy=False)


def _row_tile(z_all, start: int, tile: int, xp):
    """Rows [start, start + tile) of ``z_all`` (a host array, memmap, row file or ``xp`` array)
    as a contiguous ``xp`` array."""
    block = z_all[start : start + tile]
    return block if get_xp(z_all) is xp else xp.asarray(np.ascontiguousarray(block))


def count_similar(
    z_all,
    *,
    xp=np,
    tile: int = 8192,
    threshold: float = SIMILARITY_THRESHOLD,
    progress: bool = False,
):
    """For every row i of ``z_all`` (N, T): #{j != i : z_i . z_j > threshold}, (N,) int64.

    z_all : (N, T) float32 unit-norm rows, a host array / memmap or an ``xp`` array. Tiles of
    ``tile`` rows are multiplied on ``xp``; only tile pairs (a <= b) are computed and each
    counts for both sides (the product is symmetric), so memory is O(tile * (T + tile)).
    """
    n = z_all.shape[0]
    counts = xp.zeros(n, dtype=xp.int64)
    starts = list(range(0, n, tile))

    from tqdm import tqdm

    for ia in tqdm(range(len(starts)), desc="trace similarity", disable=not progress):
        a = starts[ia]
        za = _row_tile(z_all, a, tile, xp)
        for b in starts[ia:]:
            zb = za if b == a else _row_tile(z_all, b, tile, xp)
            _count_tile_pair(counts, za, zb, a, b, threshold, xp)
    return counts


def _count_tile_pair(counts, za, zb, a: int, b: int, threshold: float, xp) -> None:
    """Add the hits of the exact tile product za zb^T (rows from ``a``, columns from ``b``) to
    ``counts``; a diagonal tile (a == b) counts each row's own hits, itself excluded."""
    hit = (za @ zb.T) > threshold
    if b == a:
        idx = xp.arange(hit.shape[0])
        hit[idx, idx] = False
        counts[a : a + hit.shape[0]] += hit.sum(axis=1)
    else:
        counts[a : a + hit.shape[0]] += hit.sum(axis=1)
        counts[b : b + hit.shape[1]] += hit.sum(axis=0)


# Sketch-and-verify for long recordings. A Gaussian sketch S = Z R, R (T, k) with N(0, 1/k)
# entries, estimates every z_i . z_j at k / T of the cost of the exact product; only pairs whose
# estimate exceeds threshold - SKETCH_MARGIN are computed exactly. For unit vectors with
# z_i . z_j = c > 0.7, the Chernoff bound on the estimate falling below 0.4 is < 5e-18 at
# k = 1024 (sketch_miss_bound), so over the 5e9 pairs of 100,000 candidates a missed pair has
# probability < 3e-8: the counts are those of the exact product.
SKETCH_DIM = 1024
SKETCH_MARGIN = 0.3
SKETCH_FRAMES_PER_DRAW = 4096  # R is drawn in blocks of frames: O(block x k) memory
# an exact check of one gathered pair costs about this many multiply-adds of a tile product
# (memory-bound gathers vs a compute-bound GEMM; measured on the 2-core CPU at T = 5,000)
_PAIR_COST = 256
_VERIFY_PAIRS = 2048  # pairs gathered per exact check
_SUBBLOCK_ROWS = 1024  # rows of a sub-block multiplied at once (1024 x T gathered floats)


def sketch_miss_bound(
    dim: int = SKETCH_DIM, margin: float = SKETCH_MARGIN, threshold: float = SIMILARITY_THRESHOLD
) -> float:
    """Chernoff bound on P(sketch estimate <= threshold - margin) for unit vectors whose dot
    product is ``threshold`` (the worst case of a pair that counts): exp(dim * min over s of
    [s (c - margin) - log(sqrt((1 + c s)^2 - s^2))]), c = threshold."""
    c = threshold
    s = np.linspace(1e-4, 1.0 / (1.0 + c) - 1e-6, 20_000)  # mgf of -XY finite for s < 1/(1+c)
    exponent = s * (c - margin) - 0.5 * np.log((1.0 + c * s) ** 2 - s**2)
    return float(math.exp(dim * exponent.min()))


def sketch_projection_block(first_frame: int, n_frames: int, *, dim: int = SKETCH_DIM, xp=np):
    """Rows [first_frame, first_frame + n_frames) of the (T, dim) sketch matrix R, float32
    N(0, 1 / dim). Drawn on the host from a generator seeded by the block index (blocks of
    ``SKETCH_FRAMES_PER_DRAW`` frames), so every device and every batching sees the same R."""
    if first_frame % SKETCH_FRAMES_PER_DRAW:
        raise ValueError("sketch_projection_block: first_frame must start a draw block")
    parts = []
    for start in range(first_frame, first_frame + n_frames, SKETCH_FRAMES_PER_DRAW):
        rng = np.random.default_rng([0x5EED, start // SKETCH_FRAMES_PER_DRAW])
        block = rng.standard_normal((SKETCH_FRAMES_PER_DRAW, dim), dtype=np.float32)
        parts.append(block[: min(SKETCH_FRAMES_PER_DRAW, first_frame + n_frames - start)])
    r = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    r *= np.float32(1.0 / math.sqrt(dim))
    return xp.asarray(r)


def sketch_rows(z, *, dim: int = SKETCH_DIM, projection=None, xp=None):
    """(n, dim) float32 sketch Z R of unit-norm rows ``z`` (n, T).

    projection : R (T, dim) from :func:`sketch_projection_block` ``(0, T)`` on ``xp``, when the
        caller keeps it across batches; None: drawn here block by block (O(4,096 x dim) memory).
    """
    xp = get_xp(z, xp=xp)
    n, n_t = z.shape
    out = xp.zeros((n, dim), dtype=xp.float32)
    for start in range(0, n_t, SKETCH_FRAMES_PER_DRAW):
        stop = min(start + SKETCH_FRAMES_PER_DRAW, n_t)
        if projection is None:
            r = sketch_projection_block(start, stop - start, dim=dim, xp=xp)
        else:
            r = projection[start:stop]
        out += z[:, start:stop] @ r
    return out


def count_similar_sketched(
    z_all,
    sketch,
    *,
    xp=np,
    tile: int = 8192,
    threshold: float = SIMILARITY_THRESHOLD,
    margin: float = SKETCH_MARGIN,
    stats: dict | None = None,
    progress: bool = False,
):
    """:func:`count_similar` by sketch-and-verify (the comment above ``SKETCH_DIM``).

    z_all : (N, T) float32 unit-norm rows (as for :func:`count_similar`); sketch : (N, k) their
    :func:`sketch_rows`, an ``xp`` or host array. Per tile pair, the sketch product marks the
    candidate pairs (estimate > threshold - margin). None: the tile pair is skipped without
    reading its rows. Otherwise the exact products are computed for the cheaper of: each marked
    pair (gathered rows), or the sub-block of rows x columns that have a marked pair. When the
    exact work after 3 tile pairs is above 80 % of the full products (strongly correlated
    recordings), the remaining tile pairs are multiplied whole, as :func:`count_similar`.
    stats : filled with ``tiles_skipped``, ``tiles_pairs``, ``tiles_subblock``, ``tiles_whole``,
    ``pairs_checked`` and ``exact_work`` (share of the full products' multiply-adds done).
    """
    n = z_all.shape[0]
    counts = xp.zeros(n, dtype=xp.int64)
    starts = list(range(0, n, tile))
    cutoff = threshold - margin
    tally = dict.fromkeys(
        ("tiles_skipped", "tiles_pairs", "tiles_subblock", "tiles_whole", "pairs_checked"), 0
    )
    work = [0.0, 0.0]  # exact multiply-adds done / those of the full products (per T)

    from tqdm import tqdm

    for ia in tqdm(range(len(starts)), desc="trace similarity", disable=not progress):
        a = starts[ia]
        sa = _row_tile(sketch, a, tile, xp)
        za = None  # read only when a pair of this row tile needs an exact product
        for b in starts[ia:]:
            tiles_done = sum(v for k, v in tally.items() if k.startswith("tiles_"))
            sketching = tiles_done < 3 or work[0] <= 0.8 * work[1]
            sb = sa if b == a else _row_tile(sketch, b, tile, xp)
            full = float(sa.shape[0] * sb.shape[0])
            work[1] += full
            if sketching:
                maybe = (sa @ sb.T) > cutoff
                if b == a:
                    maybe = xp.triu(maybe, 1)  # each pair once, never itself
                n_maybe = int(maybe.sum())
                if n_maybe == 0:
                    tally["tiles_skipped"] += 1
                    continue
            za = _row_tile(z_all, a, tile, xp) if za is None else za
            if not sketching:
                tally["tiles_whole"] += 1
                work[0] += full
                zb = za if b == a else _row_tile(z_all, b, tile, xp)
                _count_tile_pair(counts, za, zb, a, b, threshold, xp)
                zb = None  # a column tile is never kept past its tile pair
                continue
            rows = xp.flatnonzero(maybe.any(axis=1))
            cols = xp.flatnonzero(maybe.any(axis=0))
            if _PAIR_COST * n_maybe < len(rows) * len(cols):
                zb = za if b == a else _row_tile(z_all, b, tile, xp)
                tally["tiles_pairs"] += 1
                tally["pairs_checked"] += n_maybe
                work[0] += _PAIR_COST * n_maybe
                ii, jj = xp.nonzero(maybe)
                for p in range(0, n_maybe, _VERIFY_PAIRS):
                    pi, pj = ii[p : p + _VERIFY_PAIRS], jj[p : p + _VERIFY_PAIRS]
                    hit = (za[pi] * zb[pj]).sum(axis=1) > threshold
                    if not bool(hit.any()):  # (CuPy's bincount needs a non-empty input)
                        continue
                    counts[a : a + len(za)] += xp.bincount(pi[hit], minlength=len(za))
                    counts[b : b + len(zb)] += xp.bincount(pj[hit], minlength=len(zb))
                zb = None
                continue
            tally["tiles_subblock"] += 1
            work[0] += float(len(rows) * len(cols))
            z_cols = za[cols] if b == a else _gather_rows(z_all, b, cols, xp)
            _count_subblock(counts, za, z_cols, rows, cols, a, b, threshold, xp)
    if stats is not None:
        stats.update(tally, exact_work=work[0] / max(work[1], 1.0))
    return counts


def _gather_rows(z_all, start: int, idx, xp):
    """Rows ``start + idx`` of ``z_all`` (``idx``: sorted ``xp`` indices) as a contiguous
    ``xp`` array. An array of the same module is gathered at once; rows kept elsewhere (a
    host array for a device run, a row file) are read ``_SUBBLOCK_ROWS`` at a time, so no
    whole tile is held beside the gathered rows."""
    if (isinstance(z_all, np.ndarray) or is_cupy(z_all)) and get_xp(z_all) is xp:
        return z_all[start + idx]
    wanted = to_numpy(idx)
    out = xp.empty((len(wanted), z_all.shape[1]), dtype=xp.float32)
    for lo in range(0, int(wanted[-1]) + 1 if len(wanted) else 0, _SUBBLOCK_ROWS):
        i, j = np.searchsorted(wanted, [lo, lo + _SUBBLOCK_ROWS])
        if j > i:
            piece = _row_tile(z_all, start + lo, _SUBBLOCK_ROWS, xp)
            out[i:j] = piece[xp.asarray(wanted[i:j] - lo)]
    return out


def _count_subblock(counts, za, z_cols, rows, cols, a: int, b: int, threshold: float, xp):
    """Add the hits of the exact product of the rows ``rows`` of ``za`` (a row tile from
    ``a``) and ``z_cols`` (the rows ``cols`` of the tile from ``b``) to ``counts``; on a
    diagonal tile (a == b) each pair once. The rows are multiplied ``_SUBBLOCK_ROWS`` at a
    time, so the gathered rows and their product stay a small fraction of the tile budget
    (``similarity_tile_rows`` counts two tiles and one tile product) instead of adding a
    third tile and a second product to it."""
    hits_per_col = xp.zeros(len(cols), dtype=xp.int64)
    for r0 in range(0, len(rows), _SUBBLOCK_ROWS):
        part = rows[r0 : r0 + _SUBBLOCK_ROWS]
        hit = (za[part] @ z_cols.T) > threshold
        if b == a:
            hit &= part[:, None] < cols[None, :]
        counts[a + part] += hit.sum(axis=1)
        hits_per_col += hit.sum(axis=0)
    counts[b + cols] += hits_per_col


# ----------------------------------------------------------------------------- peaks (3, 5-11)
def halfheight_widths_many(y, rows, locs, left_bases, right_bases):
    """MATLAB 'halfheight' widths of many peaks of the rows of ``y`` (n, T), in samples.

    Batched twin of :func:`actsort_gpu.signal.peak_widths` (which loops over peaks in Python):
    SciPy's compiled ``peak_widths`` with rel_height 1 and prominence y_pk / 2 puts the line at
    y_pk / 2, searched between the peak and its prominence bases, as MATLAB does. Rows are laid
    end to end; bases never leave their row, so rows cannot interact.
    """
    y = np.asarray(y, dtype=np.float64)
    if len(locs) == 0:
        return np.zeros(0)
    n, n_t = y.shape
    flat = np.zeros((n, n_t + 1))
    flat[:, :n_t] = y
    flat = flat.ravel()
    off = rows * (n_t + 1)
    pos = (off + locs).astype(np.intp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PeakPropertyWarning)
        widths = _scipy_peak_widths(
            flat,
            pos,
            rel_height=1.0,
            prominence_data=(
                flat[pos] / 2.0,
                (off + left_bases).astype(np.intp),
                (off + right_bases).astype(np.intp),
            ),
        )[0]
    return widths


def _isi(rows, locs, sel, n):
    """(last - first) / count of the selected peaks per row; 0 if none (features 5-7).

    rows, locs are sorted by row then location (:func:`local_maxima`), so a row's first and
    last selected peaks are the ends of its run.
    """
    r, c = rows[sel], locs[sel].astype(np.float64)
    out = np.zeros(n)
    if r.size == 0:
        return out
    change = np.flatnonzero(r[1:] != r[:-1])
    first = np.concatenate([[0], change + 1])
    last = np.concatenate([change, [r.size - 1]])
    row = r[first]
    out[row] = (c[last] - c[first]) / (last - first + 1)
    return out


def _sum_std(rows, values, sel, n):
    """Sum and sample std (ddof 1) of values per row; std NaN if none, 0 if one."""
    r, w = rows[sel], values[sel]
    k = np.bincount(r, minlength=n).astype(np.float64)
    s1 = np.bincount(r, weights=w, minlength=n)
    s2 = np.bincount(r, weights=w * w, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (s2 - s1 * s1 / k) / (k - 1)
    std = np.sqrt(np.maximum(var, 0))
    std = np.where(k == 1, 0.0, np.where(k == 0, np.nan, std))
    return s1, std


# the columns of peak_features, in order (features 3, 5, 6, 7, 8, 9, 10, 11)
PEAK_NAMES = (
    "n_small_peaks",
    "isi_good",
    "isi_bad",
    "isi_all",
    "width_sum_all",
    "width_sum_prominent",
    "width_std_all",
    "width_std_prominent",
)


def _peak_columns(traces) -> dict:
    """Features 3, 5-11 of every row of ``traces`` (n, T): name -> (n,) float64 (host).

    Host only (NumPy/SciPy). Definitions: reference 3.2; see the module docstring for the
    shared-peaks argument. Rows with max(T) <= 0 get feature 3 from T1 itself (the map
    T -> T / max is then not increasing); a constant row has no peaks (widths: sum 0, std NaN).
    """
    y = np.asarray(traces, dtype=np.float64)
    n = y.shape[0]
    cols = {}
    rows, locs = local_maxima(y)
    prom, lb, rb = peak_prominences(y, locs, rows)
    t_max, t_min = y.max(axis=1), y.min(axis=1)
    q90 = quantile_rows(y, 0.9)

    # 3: n_small_peaks on T1 = T / max: peaks with prominence below MPP (prom scales by 1/max)
    mpp1 = np.maximum(0.5 * q90 / np.where(t_max > 0, t_max, 1), 0.1)
    small = prom < (mpp1 * t_max)[rows]
    n_small = np.bincount(rows[small], minlength=n).astype(np.float64)
    bad = np.flatnonzero(t_max <= 0)
    if bad.size:
        with np.errstate(invalid="ignore", divide="ignore"):
            t1 = y[bad] / t_max[bad, None]
        for i, row in enumerate(bad):
            if not np.isfinite(t1[i]).all():
                n_small[row] = np.nan  # 0/0 or x/0: MATLAB gives NaN/Inf traces
                continue
            r1, l1 = local_maxima(t1[i])
            p1 = peak_prominences(t1[i], l1)[0]
            mpp = max(0.5 * float(quantile_rows(t1[i][None], 0.9)[0]), 0.1)
            n_small[row] = np.count_nonzero(p1 < mpp)
    cols["n_small_peaks"] = n_small

    # 5-7: T3 = T - min(0, min T) is a shift: same prominences; MPP3 = 0.5 q90(T3)
    mpp3 = 0.5 * (q90 - np.minimum(0.0, t_min))
    good = prom >= mpp3[rows]
    cols["isi_good"] = _isi(rows, locs, good, n)
    cols["isi_bad"] = _isi(rows, locs, ~good, n)
    cols["isi_all"] = _isi(rows, locs, np.ones(len(locs), bool), n)

    # 8-11: widths on T2 = (T - min) / (max - min); prominent: prom2 >= 0.5 q90(T2)
    span = t_max - t_min
    with np.errstate(invalid="ignore", divide="ignore"):
        t2 = (y - t_min[:, None]) / np.where(span > 0, span, 1)[:, None]
    widths = halfheight_widths_many(t2, rows, locs, lb, rb)
    prominent = prom >= (0.5 * (q90 - t_min))[rows]
    all_peaks = np.ones(len(locs), bool)
    cols["width_sum_all"], cols["width_std_all"] = _sum_std(rows, widths, all_peaks, n)
    cols["width_sum_prominent"], cols["width_std_prominent"] = _sum_std(rows, widths, prominent, n)
    return cols


def peak_features(traces) -> np.ndarray:
    """Features 3, 5, 6, 7, 8, 9, 10, 11 of every row of ``traces`` (n, T): (n, 8) float64.

    Columns in the order of ``PEAK_NAMES``; definitions in :func:`_peak_columns`.
    """
    return NamedColumns.from_dict(_peak_columns(traces), PEAK_NAMES).values


# ----------------------------------------------------------------------------- all 36
ROW_CHUNK = 256  # rows per CPU work unit: its (rows, T) temporaries stay small (cache, no mmap)
#: values per CPU work unit at most (256 rows of 10,000 frames): longer recordings get fewer
#: rows per chunk, so a thread's temporaries (~48 bytes per value, about 120 MB) do not grow
#: with the recording
CHUNK_VALUES = 256 * 10_000


def chunk_rows(row_chunk: int, n_frames: int) -> int:
    """Rows per CPU work unit: ``row_chunk``, fewer for traces longer than CHUNK_VALUES /
    row_chunk frames; at least 1."""
    return max(1, min(int(row_chunk), CHUNK_VALUES // max(int(n_frames), 1)))


def _array_columns(x, xp) -> dict:
    """Features 1-2, 4, 12-34, 36 of one chunk x (n, T) float32: name -> (n,) float64 in xp."""
    cols = {}
    power = _one_sided_power(x, xp)
    sigma = _sigma_from_power(power)
    tm = medfilt3(x, xp=xp)
    # 1: max(medfilt3(T)) / (sqrt(2) sigma)
    tm_max = tm.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["trace_snr"] = tm_max / (math.sqrt(2.0) * sigma)
    # 2: mean |T - Tm| / max(Tm, T) over frames with Tm > 0.3 max(Tm)
    valid = tm > (0.3 * tm_max)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = xp.abs(x - tm)
        ratio /= xp.maximum(tm, x)
        cols["temporal_corruption"] = xp.where(valid, ratio, 0).sum(axis=1) / valid.sum(axis=1)
    del ratio, valid
    # 4: std (ddof 1) of the z-scores (ddof 1) at or above their 90th percentile
    z = _zscore_rows(x, 1, xp)
    top = z >= quantile_rows(z, 0.9, xp=xp)[:, None]
    k = top.sum(axis=1)
    s1 = xp.where(top, z, 0).astype(xp.float64).sum(axis=1)
    s2 = xp.where(top, z * z, 0).astype(xp.float64).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["top10_std"] = xp.sqrt(xp.maximum((s2 - s1 * s1 / k) / (k - 1), 0))
    del z, top
    with np.errstate(invalid="ignore", divide="ignore"):
        cols.update(_event_columns(_event_metrics(x, sigma, xp, tm=tm)))
        spectrum = _spectral_fractions(x, xp, power=power)
        cols.update({name: spectrum[:, j] for j, name in enumerate(_BAND_NAMES)})
    del power
    # 36: on the similarity rows, sum of entries >= their 99th percentile
    zs = similarity_rows(x, xp=xp, filtered=tm)
    q99 = quantile_rows(zs, 0.99, xp=xp)
    cols["spike_fluorescence"] = xp.where(zs >= q99[:, None], zs, 0).astype(xp.float64).sum(axis=1)
    # one float64 dtype for every column (the stack is float64, as the matrix it fills)
    return {name: xp.asarray(v, dtype=xp.float64) for name, v in cols.items()}


def _array_columns_host(x, xp, timings) -> dict:
    """:func:`_array_columns` of x as host arrays (one transfer); adds to timings['temporal']."""
    t0 = time.perf_counter()
    on_device = _array_columns(x, xp)
    names = list(on_device)
    host = to_numpy(xp.stack([on_device[name] for name in names], axis=1))
    timings["temporal"] = timings.get("temporal", 0.0) + time.perf_counter() - t0
    return {name: host[:, j] for j, name in enumerate(names)}


def _peak_columns_timed(traces, timings) -> dict:
    """:func:`_peak_columns`; adds its seconds to timings['temporal_peaks']."""
    t0 = time.perf_counter()
    cols = _peak_columns(traces)
    timings["temporal_peaks"] = timings.get("temporal_peaks", 0.0) + time.perf_counter() - t0
    return cols


def _chunk_columns(x, xp, timings) -> dict:
    """All features but 35 of one CPU chunk: name -> (n,) float64 host array."""
    cols = _array_columns_host(x, xp, timings)
    cols.update(_peak_columns_timed(x, timings))
    return cols


def _device_block_columns(x, xp, row_chunk: int, threads: int) -> tuple[dict, list[dict]]:
    """All features but 35 of a block on a GPU: (columns, the timings of each thread).

    The array features run on the device over the whole block while the host features
    (peaks: :func:`_peak_columns`) run on a copy of the block in row chunks on ``threads`` CPU
    threads, so the two overlap and the host holds float64 temporaries of one chunk per
    thread, not of the block. Columns in row order, equal to the CPU's chunk by chunk.
    """
    host = to_numpy(x)  # one transfer
    step = chunk_rows(row_chunk, host.shape[1])
    starts = range(0, host.shape[0], step)
    device_timings: dict = {}
    peak_timings: list[dict] = [{} for _ in starts]
    with ThreadPoolExecutor(max(int(threads), 1), thread_name_prefix="peaks") as pool:
        pending = [
            pool.submit(_peak_columns_timed, host[a : a + step], own)
            for a, own in zip(starts, peak_timings)
        ]
        cols = _array_columns_host(x, xp, device_timings)
        peaks = [future.result() for future in pending]
    for name in peaks[0] if peaks else ():
        cols[name] = np.concatenate([part[name] for part in peaks])
    return cols, [device_timings, *peak_timings]


def map_row_chunks(fn, x, *, xp=np, row_chunk: int = ROW_CHUNK, threads: int = 1) -> list:
    """``[fn(x[a:a + step]) for a in ...]`` over the rows of x, in row order, with step =
    :func:`chunk_rows` (``row_chunk``, fewer rows for long traces).

    On the CPU the chunks run on ``threads`` threads (results still in row order); on a GPU
    (``xp`` not NumPy) x is one chunk.
    """
    n = x.shape[0]
    step = chunk_rows(row_chunk, x.shape[1] if x.ndim > 1 else 1) if xp is np else max(n, 1)
    chunks = [x[a : a + step] for a in range(0, n, step)]
    if threads > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(max_workers=int(threads)) as pool:
            return list(pool.map(fn, chunks))
    return [fn(chunk) for chunk in chunks]


def temporal_columns(
    traces,
    *,
    xp=None,
    similarity=None,
    timings: dict | None = None,
    row_chunk: int = ROW_CHUNK,
    threads: int = 1,
) -> NamedColumns:
    """Features 1-36 of a block of traces, each under its name.

    Parameters
    ----------
    traces : (n, T) float32, extractor units (host or ``xp`` array)
    xp : numpy or cupy (default: that of ``traces``)
    similarity : (n,) feature 35 for these rows, computed over all candidates of the store
        (:func:`similarity_rows` + :func:`count_similar`). None: computed within this block.
    timings : optional dict; seconds are added under 'temporal', 'temporal_peaks' (summed
        over threads).
    row_chunk : rows per work unit on the CPU (every feature is per row); on a GPU the block
        is one unit.
    threads : CPU threads over the chunks (NumPy/SciPy release the GIL in the heavy parts).

    Returns
    -------
    NamedColumns with names ``registry.TEMPORAL_NAMES`` and (n, 36) float64 host values, raw
    (NaN/Inf allowed; the driver applies the policy).
    """
    xp = get_xp(traces, xp=xp)
    x = xp.asarray(traces, dtype=xp.float32)
    n = x.shape[0]
    parts: list[dict] = []

    def one(chunk):
        part: dict = {}
        result = _chunk_columns(chunk, xp, part)
        parts.append(part)  # list.append is atomic: no lost update across threads
        return result

    if xp is np:
        blocks = map_row_chunks(one, x, xp=xp, row_chunk=row_chunk, threads=threads)
    elif n:
        cols, parts = _device_block_columns(x, xp, row_chunk, threads)
        blocks = [cols]
    else:
        blocks = []
    names = [name for name in TEMPORAL_NAMES if name != "trace_similarity"]
    cols = {
        name: (np.concatenate([b[name] for b in blocks]) if blocks else np.empty(0))
        for name in (blocks[0] if blocks else names)
    }
    if similarity is None:
        counts = to_numpy(count_similar(similarity_rows(x, xp=xp), xp=xp, tile=max(n, 1)))
        with np.errstate(invalid="ignore", divide="ignore"):
            similarity = counts / np.float64(n - 1) if n > 1 else np.full(n, np.nan)
    cols["trace_similarity"] = to_numpy(similarity).astype(np.float64)
    if timings is not None:
        for part in parts:
            for key, value in part.items():
                timings[key] = timings.get(key, 0.0) + value
    return NamedColumns.from_dict(cols, TEMPORAL_NAMES)


def temporal_features(
    traces,
    *,
    xp=None,
    similarity=None,
    timings: dict | None = None,
    row_chunk: int = ROW_CHUNK,
    threads: int = 1,
) -> np.ndarray:
    """Features 1-36 of a block of traces as a matrix: :func:`temporal_columns`' values.

    Returns (n, 36) float64 host array, columns in ``registry.TEMPORAL_NAMES`` order, raw
    values (NaN/Inf allowed). Parameters as :func:`temporal_columns`.
    """
    return temporal_columns(
        traces, xp=xp, similarity=similarity, timings=timings, row_chunk=row_chunk, threads=threads
    ).select(TEMPORAL_NAMES)
