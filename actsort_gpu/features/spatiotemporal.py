"""Spatiotemporal features 47-76 of ActSort (docs/actsort_reference.md sections 3.2-3.3).

Per candidate: M = the snapshot movie as K frames x P crop pixels (frame index f + 11 * event,
spike-major as ActSort's P x K matrix), s = the crop footprint (P), E = the snapshot trace (K).

Columns returned by :func:`spatiotemporal_columns` (raw: NaN/Inf where the formulas give them),
by name:

=======  ========================  =========================================================
#        names                     definition
=======  ========================  =========================================================
47-50    eps_mean, eps_min,        mean, min, hazen q0.1, q0.2 of the per-frame epsilon of
         eps_q10, eps_q20          the robust single-source temporal solve (iteration 23/30)
51       spurious_corr_score       cosine of the surround-masked activity image A = M t_zm
                                   with s
52-56    resid1_q{0.01, ..., 0.99} hazen q{0.01, 0.25, 0.5, 0.75, 0.99} over events of r1
57-61    resid2_q...               same for r2
62-66    resid3_q...               same for r3
67-76    tqm_{0, 0.1, ..., 0.9}    TQM at thresholds 0, 0.1, ..., 0.9 (faithful to ActSort:
                                   footprint z-scored, movie columns only L2-normalised; bug
                                   B12 kept, see docs/differences.md)
=======  ========================  =========================================================

Missing events (``event_valid`` False) are left out of every statistic (bug B6 fix): the K
frames are the 11 frames of each real event, in event order; ActSort instead counted the
zero-padded frames of missing events and used trace frames 1-5 for them.

Candidates are batched: crops are zero-padded to the largest crop of a group (candidates are
grouped by number of real events and crop size to limit padding), padded pixels and frames are
masked, and the epsilon solver, the Gaussian filters and all projections are batched array ops
in ``xp`` (NumPy or CuPy; float64 inside). Padding changes no value: padded pixels carry
s = 0 and M = 0, and every pixel statistic that is not a sum of zeros is masked.

Speed (``scripts/bench_spatiotemporal.py``): the solver works on the footprint support in
cache-sized chunks of similar support size, with its per-kappa quantities precomputed so that
an iteration is one comparison and two masked sums (:func:`_solve_chunk`); the per-pixel noise
takes only the needed DFT bins as one matmul; host BLAS runs single-threaded here, since
threading the many small matmuls costs more than it saves.
"""

from __future__ import annotations

import contextlib
import logging
import math

import numpy as np

from actsort_gpu._xp import to_numpy

from .columns import NamedColumns
from .registry import SPATIOTEMPORAL_NAMES

log = logging.getLogger(__name__)

__all__ = [
    "spatiotemporal_columns",
    "spatiotemporal_features",
    "FRAMES_PER_EVENT",
    "TQM_THRESHOLDS",
]

FRAMES_PER_EVENT = 11
TQM_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(10))
_RESID_Q = (0.01, 0.25, 0.5, 0.75, 0.99)
_N_ITER_EPS = 23  # epsilon is last updated at iteration 23 of 30; later ones only move x
_EPS_UPDATES = (15, 20, 23)  # round(30 * [1/2, 2/3, 3/4])
_PHI_V, _PDF_V = 0.5, 0.3989


def spatiotemporal_columns(
    snapshots,
    crop_footprints,
    snapshot_traces,
    event_valid,
    *,
    xp=None,
    max_batch_elements: int = 1 << 22,
) -> NamedColumns:
    """Spatiotemporal features 47-76 for n candidates, each under its name.

    snapshots : list of n arrays (n_events, 11, h_i, w_i) float32, movie units, zeros where
        an event is missing
    crop_footprints : list of n arrays (h_i, w_i) float32, the normalised footprint on the crop
    snapshot_traces : (n, n_events, 11) float32, extractor units, zero where missing
    event_valid : (n, n_events) bool, which event slots are real
    xp : array module for the batched work (numpy or cupy); NumPy when None
    max_batch_elements : padded frames x pixels x candidates per batch (memory bound)

    Returns NamedColumns with names ``registry.SPATIOTEMPORAL_NAMES`` and (n, 30) float32
    host values (module docstring).
    """
    xp = np if xp is None else xp
    n = len(snapshots)
    traces = np.asarray(to_numpy(snapshot_traces), dtype=np.float64)
    valid = np.asarray(to_numpy(event_valid), dtype=bool)
    if len(crop_footprints) != n:
        raise ValueError(
            f"crop_footprints: expected {n} arrays (one per snapshot), got {len(crop_footprints)}"
        )
    if valid.ndim != 2 or valid.shape[0] != n:
        raise ValueError(f"event_valid: expected shape ({n}, n_events), got {valid.shape}")
    n_ev = valid.shape[1]
    if traces.shape != (n, n_ev, FRAMES_PER_EVENT):
        raise ValueError(
            f"snapshot_traces: expected shape {(n, n_ev, FRAMES_PER_EVENT)}, got {traces.shape}"
        )
    shapes = np.zeros((n, 2), np.int64)
    for i in range(n):
        snap_shape = tuple(snapshots[i].shape)
        fp_shape = tuple(crop_footprints[i].shape)
        if (
            len(snap_shape) != 4
            or snap_shape[:2] != (n_ev, FRAMES_PER_EVENT)
            or snap_shape[2:] != fp_shape
            or min(fp_shape) < 1
        ):
            raise ValueError(
                f"snapshots[{i}]: expected shape ({n_ev}, {FRAMES_PER_EVENT}, "
                f"h, w) with (h, w) = crop_footprints[{i}].shape {fp_shape}, "
                f"got {snap_shape}"
            )
        shapes[i] = fp_shape
    out = np.full((n, len(SPATIOTEMPORAL_NAMES)), np.nan)
    n_valid = valid.sum(axis=1)
    with _single_threaded_blas(xp):
        for grp in _groups(n_valid, shapes, max_batch_elements):
            if n_valid[grp[0]] == 0:
                continue  # no real event: every feature NaN
            out[grp] = _group_features(
                grp, snapshots, crop_footprints, traces, valid, shapes, n_valid, xp
            ).select(SPATIOTEMPORAL_NAMES)
    return NamedColumns(SPATIOTEMPORAL_NAMES, out.astype(np.float32))


def spatiotemporal_features(
    snapshots,
    crop_footprints,
    snapshot_traces,
    event_valid,
    *,
    xp=None,
    max_batch_elements: int = 1 << 22,
) -> np.ndarray:
    """Spatiotemporal features 47-76 as a matrix: :func:`spatiotemporal_columns`' values.

    Returns (n, 30) float32 on the host, columns in ``registry.SPATIOTEMPORAL_NAMES`` order.
    Parameters as :func:`spatiotemporal_columns`.
    """
    return spatiotemporal_columns(
        snapshots,
        crop_footprints,
        snapshot_traces,
        event_valid,
        xp=xp,
        max_batch_elements=max_batch_elements,
    ).select(SPATIOTEMPORAL_NAMES)


def _single_threaded_blas(xp):
    """Host BLAS limited to one thread for the batched small matmuls: a multi-threaded
    OpenBLAS call per (K x P) matrix costs more in thread hand-offs than it computes (4-25x
    slower on a loaded 2-core machine). No-op for CuPy."""
    if xp is not np:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    return threadpool_limits(limits=1, user_api="blas")


def _groups(n_valid, shapes, max_elements):
    """Candidate index groups sorted by (#events, crop size) with padded size <= max_elements."""
    side = shapes.max(axis=1)
    order = np.lexsort((shapes.min(axis=1), side, n_valid))
    groups, cur, hp, wp, kp = [], [], 0, 0, 0
    for i in order:
        nh, nw, nk = max(hp, shapes[i, 0]), max(wp, shapes[i, 1]), max(kp, n_valid[i])
        new_kind = cur and (n_valid[i] == 0) != (n_valid[cur[0]] == 0)
        if cur and (
            new_kind or (len(cur) + 1) * nh * nw * max(nk, 1) * FRAMES_PER_EVENT > max_elements
        ):
            groups.append(np.array(cur))
            cur, nh, nw, nk = [], shapes[i, 0], shapes[i, 1], n_valid[i]
        cur.append(i)
        hp, wp, kp = nh, nw, nk
    if cur:
        groups.append(np.array(cur))
    return groups


def _group_features(grp, snapshots, crop_footprints, traces, valid, shapes, n_valid, xp):
    g = grp.size
    hp, wp = int(shapes[grp, 0].max()), int(shapes[grp, 1].max())
    kp = int(n_valid[grp].max()) * FRAMES_PER_EVENT
    movie = np.zeros((g, kp, hp, wp))
    foot = np.zeros((g, hp, wp))
    trace = np.zeros((g, kp))
    for k, i in enumerate(grp):  # compact the real events to the front
        h, w = shapes[i]
        ev = valid[i]
        kv = int(n_valid[i]) * FRAMES_PER_EVENT
        movie[k, :kv, :h, :w] = np.asarray(to_numpy(snapshots[i]))[ev].reshape(kv, h, w)
        foot[k, :h, :w] = to_numpy(crop_footprints[i])
        trace[k, :kv] = traces[i][ev].reshape(kv)
    kv = n_valid[grp] * FRAMES_PER_EVENT
    fvalid = np.arange(kp)[None, :] < kv[:, None]
    pvalid = (np.arange(hp)[None, :, None] < shapes[grp, 0][:, None, None]) & (
        np.arange(wp)[None, None, :] < shapes[grp, 1][:, None, None]
    )
    M = xp.asarray(movie.reshape(g, kp, hp * wp))
    S2 = xp.asarray(foot)
    s = S2.reshape(g, hp * wp)
    E = xp.asarray(trace)
    fv = xp.asarray(fvalid)
    pv = xp.asarray(pvalid.reshape(g, hp * wp))
    sigma_pix = _noise_std_by_length(M, kv, xp)  # (g, P), FFT noise per pixel
    sigma = _masked_median(sigma_pix, pv, xp)
    eps = _solve_epsilon(M, s, sigma, xp)
    q10, q20 = _masked_quantiles(eps, fv, (0.1, 0.2), xp).T
    cols = {
        "eps_mean": xp.where(fv, eps, 0).sum(axis=1) / fv.sum(axis=1),
        "eps_min": xp.where(fv, eps, xp.inf).min(axis=1),
        "eps_q10": q10,
        "eps_q20": q20,
        **_spurious(M, S2, s, E, fv, pv, kv, hp, wp, xp),
        **_tqm(M, s, E, fv, pv, xp),
    }
    # stacked on the device in float64 (the dtype of every statistic here), one transfer
    return NamedColumns.from_dict(
        {k: xp.asarray(v, dtype=xp.float64) for k, v in cols.items()}, SPATIOTEMPORAL_NAMES, xp=xp
    )


# --------------------------------------------------------------------------- noise estimates
def _noise_std_by_length(M, kv, xp):
    """sigma_hat (FFT noise std) along the valid frames of every pixel: (g, P).

    Only the upper half of the one-sided spectrum enters sigma_hat, so instead of a full FFT
    per pixel the needed bins are taken as one batched matmul with a per-length real DFT
    matrix (cos and sin rows, scaled so that sigma_hat = the root of the sum of squares)."""
    table, lengths = _noise_dft_table(tuple(int(v) for v in np.unique(kv)), M.shape[1])
    W = xp.asarray(table)[xp.asarray(np.searchsorted(lengths, kv))]  # (g, 2 * nb, K)
    proj = W @ M  # (g, 2 * nb, P)
    return xp.sqrt(xp.einsum("gjp,gjp->gp", proj, proj))


def _noise_dft_table(lengths, kp):
    """(n_lengths, 2 * nb_max, kp) rows c_j, s_j with sum_j (c_j x)^2 + (s_j x)^2 =
    sigma_hat(x[:n])^2 for each length n (estimate_noise_std.m: mean of the one-sided power
    |F_k|^2 / (2N) over bins round(N/2)..N of N = ceil(n/2), 1-based, bin 1 halved); zero
    rows and columns pad."""
    specs = []
    for n in lengths:
        half = -(-n // 2)
        lo = max(int(math.floor(0.5 * half + 0.5)), 1)  # MATLAB round, 1-based
        specs.append((n, half, np.arange(lo - 1, half)))
    nb = max(len(b) for _, _, b in specs)
    table = np.zeros((len(lengths), 2 * nb, kp))
    for i, (n, half, bins) in enumerate(specs):
        t = np.arange(n)
        phase = 2 * np.pi * ((bins[:, None] * t[None, :]) % n) / n
        scale = np.full(len(bins), 1.0 / (2 * half * len(bins)))
        scale[bins == 0] /= 2  # bin 1 (DC) is halved
        table[i, : len(bins), :n] = np.cos(phase) * np.sqrt(scale)[:, None]
        table[i, nb : nb + len(bins), :n] = np.sin(phase) * np.sqrt(scale)[:, None]
    return table, np.asarray(lengths)


def _welch_noise_std(t, kv, xp):
    """get_trace_noise.m: sqrt(exp(mean(log(PSD/2)))) over Welch PSD bins with f in [0.25, 0.5]
    (Hamming window floor(n/4.5), 50 % overlap, nfft 256, density, fs 1), per row of t over
    its first kv[i] samples."""
    out = xp.zeros(t.shape[0])
    nfft = 256
    for length in np.unique(kv):
        n = int(length)
        sel = xp.asarray(np.nonzero(kv == length)[0])
        seg = max(int(n // 4.5), 1)
        over = seg // 2
        step = seg - over
        n_seg = (n - over) // step
        win = (
            (0.54 - 0.46 * np.cos(2 * np.pi * np.arange(seg) / (seg - 1)))
            if seg > 1
            else np.ones(1)
        )
        idx = np.arange(n_seg)[:, None] * step + np.arange(seg)[None, :]
        x = t[sel][:, xp.asarray(idx)] * xp.asarray(win)  # (g, n_seg, seg)
        psd = xp.abs(xp.fft.rfft(x, n=nfft, axis=-1)) ** 2 / float((win**2).sum())
        psd[..., 1 : nfft // 2] *= 2
        psd = psd.mean(axis=1)
        band = psd[:, nfft // 4 : nfft // 2 + 1]  # k / 256 in [0.25, 0.5]
        with np.errstate(divide="ignore"):
            out[sel] = xp.sqrt(xp.exp(xp.log(band / 2).mean(axis=-1)))
    return out


# --------------------------------------------------------------------------- masked statistics
def _masked_median(x, mask, xp):
    vals = xp.sort(xp.where(mask, x, xp.inf), axis=1)
    cnt = mask.sum(axis=1)
    lo = xp.take_along_axis(vals, ((cnt - 1) // 2)[:, None], axis=1)[:, 0]
    hi = xp.take_along_axis(vals, (cnt // 2)[:, None], axis=1)[:, 0]
    return (lo + hi) / 2


def _masked_quantiles(x, mask, probs, xp):
    """MATLAB quantile (hazen) of the masked entries of every row; NaN for an empty row."""
    vals = xp.sort(xp.where(mask, x, xp.inf), axis=1)
    cnt = mask.sum(axis=1).astype(xp.float64)
    out = []
    last = xp.maximum(cnt - 1, 0)
    for p in probs:
        pos = xp.clip(cnt * p - 0.5, 0, last)
        i0 = xp.floor(pos)
        frac = pos - i0
        i1 = xp.minimum(i0 + 1, last)
        v0 = xp.take_along_axis(vals, i0.astype(xp.int64)[:, None], axis=1)[:, 0]
        v1 = xp.take_along_axis(vals, i1.astype(xp.int64)[:, None], axis=1)[:, 0]
        q = xp.where(frac > 0, v0 + frac * (v1 - v0), v0)
        out.append(xp.where(cnt > 0, q, xp.nan))
    return xp.stack(out, axis=1)


def _masked_max(x, mask, xp):
    return xp.where(mask, x, -xp.inf).max(axis=1)


# --------------------------------------------------------------------------- epsilon solver
def _ndtr(x, xp):
    if xp is np:
        from scipy.special import ndtr
    else:
        from cupyx.scipy.special import ndtr
    return ndtr(x)


def _eps_of(d, kappa, alpha, xp):
    """eps_func.m: epsilon from the weighted positive-residual fraction d and kappa."""
    pdf = xp.exp(-0.5 * kappa**2) / math.sqrt(2 * math.pi)
    cdf = _ndtr(kappa, xp)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = pdf / cdf + kappa
        e0 = 1 - 1 / (pdf / kappa + cdf)
        eps = e0 - (1 - (1 - e0) * _PHI_V - d) / (_PHI_V - alpha[:, None] * _PDF_V * f)
    eps = xp.clip(eps, 0.001, 0.99)
    eps = xp.where((eps > 0.3) & (eps < 0.5), 0.5, eps)
    eps = xp.where((eps > 0.5) & (eps < 0.7), 0.7, eps)
    return xp.where((eps > 0.7) & (eps < 0.9), 0.9, eps)


def _kappa_of(eps, xp):
    return -0.3775 * xp.log(xp.maximum(eps, 0.001)) - 0.0597 * eps + 0.0544


def _solve_epsilon(M, s, sigma, xp, max_chunk_elements: int = 1 << 18):
    """solve_single_source_temporal.m on the footprint's support: epsilon (g, K).

    Pixels with s = 0 add nothing to any sum of the solve, so only the support is gathered
    (padded slots hold s = 0 pixels, which are inert the same way). Candidates are solved in
    chunks of similar support size (chunk <= ``max_chunk_elements`` frames x pixels, small
    enough to stay in the CPU cache over the 23 iterations)."""
    g, kp, P = M.shape
    nz = s != 0
    n_nz = to_numpy(nz.sum(axis=1)).astype(np.int64)
    ar = xp.arange(P)
    order_all = xp.argsort(xp.where(nz, ar[None, :], P + ar[None, :]), axis=1)  # support first
    eps = xp.full((g, kp), xp.nan)
    by_size = np.argsort(n_nz, kind="stable")
    start = 0
    while start < g:
        n_sup = max(int(n_nz[by_size[start]]), 1)
        stop = start + 1
        while stop < g:  # grow while the padded chunk fits
            nxt = max(int(n_nz[by_size[stop]]), 1)
            if (stop + 1 - start) * nxt * kp > max_chunk_elements:
                break
            n_sup, stop = nxt, stop + 1
        sel = xp.asarray(by_size[start:stop])
        order = order_all[sel, :n_sup]  # (c, Ps)
        a = xp.take_along_axis(s[sel], order, axis=1)
        B = M[sel[:, None, None], xp.arange(kp)[None, :, None], order[:, None, :]]  # (c, K, Ps)
        eps[sel] = _solve_chunk(B, a, sigma[sel], xp)
        start = stop
    return eps


def _rowdot(u, v, xp):
    """sum over the last axis of u * v in one pass (vecdot where the module has it)."""
    if hasattr(xp, "vecdot"):
        return xp.vecdot(u, v)
    return xp.einsum("...p,...p->...", u, v)


def _solve_chunk(B, a, sigma, xp):
    """The robust solve for one chunk: B (c, K, Ps) movie on the support, a (c, Ps) footprint,
    sigma (c,) noise level; returns epsilon (c, K) of iteration 23.

    Per iteration ActSort forms R = B - a x and the mask R >= kappa~ (column-wise), then
    x = (a'(B o ~mask) + kappa~ o (a'mask)) / ((a^2)'~mask). With C = a o (B - kappa~)
    this is x = (sum_under C + kappa~ * sum(a)) / sum_under a^2, where "under" = R < kappa~
    = Q < x with Q = (B - kappa~) / a (a > 0; the comparison flips where a < 0). C and Q
    only change when kappa~ does (iterations 15 and 20), so one iteration costs one
    comparison and two masked sums. The fraction d of positive residuals, which decides
    epsilon, is taken from B > a x, bit-identical to R > 0. The x update of iteration 23 is
    never used (epsilon is read before it) and is skipped."""
    c, kp, ps = B.shape
    a2 = a * a
    pos = a > 0
    A3 = a[:, None, :]
    BA = B * A3
    ba_sum = BA.sum(axis=2)
    a_sum = a.sum(axis=1)
    a2_sum = a2.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = xp.fmax(ba_sum / a2_sum[:, None], 0)
        w = xp.where(pos, 1 / (1 + a), 0)
        w = w / w.sum(axis=1, keepdims=True)
        alpha = 0.05 * (a_sum / pos.sum(axis=1)) * a_sum / a2_sum
    neg = a < 0
    any_neg = bool(to_numpy(neg.any()))
    kappa = xp.ones((c, kp))
    eps = xp.full((c, kp), xp.nan)
    Q = xp.empty_like(B)
    C = xp.empty_like(B)
    U = xp.empty_like(B)  # masks as 0.0 / 1.0
    prod = xp.empty_like(B)

    def new_kappa(kt):
        xp.multiply(kt[:, :, None], A3, out=C)
        xp.subtract(BA, C, out=C)  # C = a (B - kt)
        xp.subtract(B, kt[:, :, None], out=Q)
        with np.errstate(divide="ignore", invalid="ignore"):
            xp.divide(Q, A3, out=Q)  # Q = (B - kt) / a; a = 0 is inert
        return kt * a_sum[:, None]

    kt = kappa * sigma[:, None]
    kt_a = new_kappa(kt)
    for it in range(1, _N_ITER_EPS + 1):
        if it in _EPS_UPDATES:
            xp.multiply(x[:, :, None], A3, out=prod)
            xp.greater(B, prod, out=U)  # B > a x  <=>  R > 0
            d = (U @ w[:, :, None])[:, :, 0]
            kappa = _kappa_of(_eps_of(d, kappa, alpha, xp), xp)
            eps = _eps_of(d, kappa, alpha, xp)
            if it == _N_ITER_EPS:
                break
            kt = kappa * sigma[:, None]
            kt_a = new_kappa(kt)
        xp.less(Q, x[:, :, None], out=U)  # under: R < kt
        if any_neg:
            xp.not_equal(U, neg[:, None, :], out=U)  # a < 0: under <=> Q > x
        num = _rowdot(U, C, xp) + kt_a
        den = (U @ a2[:, :, None])[:, :, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            x = xp.fmax(num / den, 0)  # MATLAB max(., 0) drops NaN
    return eps


# --------------------------------------------------------------------------- spurious metrics
def _gauss_matrix(n, radius, xp):
    """(n, n) banded matrix of fspecial('gaussian', ceil(2r+1), r/2.5)'s 1-D factor:
    ``T @ img @ T.T`` = imfilter(img, h) with zero padding, same size."""
    size = int(math.ceil(2 * radius + 1))
    half = (size - 1) // 2
    sig = radius / 2.5
    g = np.exp(-(np.arange(-half, half + 1) ** 2) / (2 * sig**2))
    g /= g.sum()
    off = np.arange(n)[None, :] - np.arange(n)[:, None]
    return xp.asarray(np.where(np.abs(off) <= half, g[np.clip(off + half, 0, size - 1)], 0.0))


def _smooth_normalised(S2, pv, radius, hp, wp, xp):
    Th, Tw = _gauss_matrix(hp, radius, xp), _gauss_matrix(wp, radius, xp)
    sm = (Th[None] @ S2 @ Tw.T[None]).reshape(S2.shape[0], hp * wp)
    return sm / xp.maximum(1e-6, _masked_max(sm, pv, xp))[:, None]


def _spurious(M, S2, s, E, fv, pv, kv, hp, wp, xp):
    """find_spurious_cells.m: feature 51 and the residual quantiles 52-66: name -> (g,)."""
    g = M.shape[0]
    t = xp.where(fv, E, 0)
    t_zm = xp.where(fv, xp.fmax(0, t - 3 * math.sqrt(2) * _welch_noise_std(t, kv, xp)[:, None]), 0)
    A = (t_zm[:, None, :] @ M)[:, 0, :]  # (g, P)
    sm6 = _smooth_normalised(S2, pv, 6, hp, wp, xp)
    sm12 = _smooth_normalised(S2, pv, 12, hp, wp, xp)
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        v = xp.where(pv & (sm6 > 0.01), A, 0)
        s_norm = xp.sqrt((s * s).sum(axis=1))
        out["spurious_corr_score"] = (v * s).sum(axis=1) / (xp.sqrt((v * v).sum(axis=1)) * s_norm)
        U = xp.where(pv & (sm12 > 0.01), A, 0)
        U = xp.where((U < 0) | (s > 0.01), 0, U)
        U = U / xp.maximum(1e-6, _masked_max(U, pv, xp))[:, None]
        u_norm = xp.sqrt((U * U).sum(axis=1))
        t_in = (M @ s[:, :, None])[:, :, 0]
        t_out = (M @ U[:, :, None])[:, :, 0]
        f_in = xp.fmax(t_in / s_norm[:, None], 0)
        f_out = xp.fmax(t_out / u_norm[:, None], 0)
        s_in = xp.fmax(f_in * (_masked_max(s, pv, xp) / s_norm)[:, None], 0)
        s_out = xp.fmax(f_out * (_masked_max(U, pv, xp) / u_norm)[:, None], 0)
    resid = (xp.fmax(s_in - t, 0), xp.fmax(t - s_out, 0), xp.fmax(f_in - f_out, 0))
    denom = (t, t, f_in)
    active = fv & (t > 0.5 * _masked_max(t, fv, xp)[:, None])
    prev = xp.concatenate([xp.zeros((g, 1), bool), active[:, :-1]], axis=1)
    nxt = xp.concatenate([active[:, 1:], xp.zeros((g, 1), bool)], axis=1)
    kp = t.shape[1]
    pos = xp.arange(kp)[None, :]
    starts = xp.sort(xp.where(active & ~prev, pos, kp), axis=1)  # run starts first
    ends = xp.sort(xp.where(active & ~nxt, pos, kp), axis=1)
    has = starts < kp
    st = xp.minimum(starts, kp - 1)
    en = xp.minimum(ends, kp - 1) + 1

    def run_sums(x):
        cs = xp.concatenate([xp.zeros((g, 1)), xp.cumsum(xp.where(fv, x, 0), axis=1)], axis=1)
        return xp.take_along_axis(cs, en, axis=1) - xp.take_along_axis(cs, st, axis=1)

    for j in range(3):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = run_sums(resid[j]) / run_sums(denom[j])
        quantiles = _masked_quantiles(ratio, has, _RESID_Q, xp)
        out.update({f"resid{j + 1}_q{q:g}": quantiles[:, k] for k, q in enumerate(_RESID_Q)})
    return out


# --------------------------------------------------------------------------- TQM
def _tqm(M, s, E, fv, pv, xp):
    """compute_temporal_goodness.m at thresholds 0, 0.1, ..., 0.9: ``tqm_<rho>`` -> (g,)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        e = xp.where(fv, E, 0) / _masked_max(E, fv, xp)[:, None]
    e = xp.where(xp.isnan(e), 0, e)
    sup = pv & (s > 0)
    n_p = sup.sum(axis=1).astype(xp.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = xp.where(sup, s, 0).sum(axis=1) / n_p
        var = xp.where(sup, (s - mean[:, None]) ** 2, 0).sum(axis=1) / (n_p - 1)
        std = xp.where(n_p > 1, xp.sqrt(var), 0)
        std = xp.where(std == 0, 1, std)  # MATLAB zscore: std 0 -> divide by 1
        z = xp.where(sup, (s - mean[:, None]) / std[:, None], 0) / xp.sqrt(n_p)[:, None]
        proj = (M @ z[:, :, None])[:, :, 0]
        norm = xp.sqrt(((M * M) @ sup.astype(M.dtype)[:, :, None])[:, :, 0])
        c = proj / norm
    out = {}
    for rho in TQM_THRESHOLDS:
        sel = fv & (e > rho)
        we = xp.where(sel, e, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            val = xp.where(sel, we * c, 0).sum(axis=1) / we.sum(axis=1)
        out[f"tqm_{rho:g}"] = xp.where(sel.any(axis=1), val, xp.nan)
    return out
