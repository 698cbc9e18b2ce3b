"""Spatiotemporal features 47-76: known answers, padding invariance, per-candidate reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, signal, stats

from actsort_gpu._xp import to_numpy
from actsort_gpu.features import spatiotemporal as st
from actsort_gpu.features.spatiotemporal import spatiotemporal_features

EPS_MEAN, EPS_MIN, CORR51 = 0, 1, 4
R1, R2, R3, TQM = slice(5, 10), slice(10, 15), slice(15, 20), slice(20, 30)


def _gauss(h, w, cy, cx, sd, cut=0.0):
    yy, xx = np.mgrid[:h, :w]
    fp = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sd**2))
    fp[fp < cut] = 0
    return (fp / fp.max()).astype(np.float32)


def _candidate(rng, h, w, n_valid, kind="matched", noise=0.1, n_events=5):
    fp = _gauss(h, w, h / 2, w / 2, 3.0, cut=0.02)
    snap = np.zeros((n_events, 11, h, w))
    tr = np.zeros((n_events, 11))
    for e in range(n_valid):
        t = np.exp(-0.5 * ((np.arange(11) - 5) / 1.5) ** 2) * (2 + rng.random())
        tr[e] = t
        if kind == "matched":
            snap[e] = t[:, None, None] * fp + noise * rng.standard_normal((11, h, w))
        else:
            snap[e] = rng.random((11, h, w)) + noise * rng.standard_normal((11, h, w))
    valid = np.arange(n_events) < n_valid
    return snap.astype(np.float32), fp, tr.astype(np.float32), valid


def _run(cands, xp=None):
    snaps, fps, trs, vals = zip(*cands)
    return spatiotemporal_features(list(snaps), list(fps), np.stack(trs), np.stack(vals), xp=xp)


# ----------------------------------------------------------------- per-candidate reference
def _eps_f(d, k, alpha):
    phi, Phi = stats.norm.pdf(k), stats.norm.cdf(k)
    e0 = 1 - 1 / (phi / k + Phi)
    e = e0 - (1 - (1 - e0) * 0.5 - d) / (0.5 - alpha * 0.3989 * (phi / Phi + k))
    e = np.clip(e, 0.001, 0.99)
    for lo, hi in ((0.3, 0.5), (0.5, 0.7), (0.7, 0.9)):
        e[(e > lo) & (e < hi)] = hi
    return e


def _reference(snap, fp, tr, valid):
    """Straight transcription of docs/actsort_reference.md 3.3 for one candidate (P x K)."""
    ev = np.nonzero(valid)[0]
    h, w = fp.shape
    M = snap[ev].astype(np.float64).reshape(-1, h * w).T
    a = fp.astype(np.float64).ravel()
    t = tr[ev].astype(np.float64).ravel()
    K = M.shape[1]
    half = math.ceil(K / 2)
    pw = np.abs(np.fft.fft(M, axis=1)[:, :half]) ** 2
    pw[:, 0] /= 2
    pw /= 2 * half
    sigma = np.median(np.sqrt(pw[:, int(np.floor(0.5 * half + 0.5)) - 1 : half].mean(axis=1)))
    x = np.maximum(0, a @ M / (a @ a))
    kappa = np.ones(K)
    kt = kappa * sigma
    wm = np.where(a > 0, 1 / (1 + a), 0)
    wm /= wm.sum()
    alpha = 0.05 * (a.sum() / (a > 0).sum()) * a.mean() / (a**2).mean()
    for i in range(1, 31):
        R = M - np.outer(a, x)
        if i in (15, 20, 23):
            d = wm @ (R > 0)
            e1 = _eps_f(d, kappa, alpha)
            kappa = -0.3775 * np.log(np.maximum(e1, 0.001)) - 0.0597 * e1 + 0.0544
            eps = _eps_f(d, kappa, alpha)
            kt = kappa * sigma
        m = kt <= R
        x = np.fmax((a @ (M * ~m) + kt * (a @ m)) / ((a**2) @ ~m), 0)
    out = [eps.mean(), eps.min(), *np.quantile(eps, [0.1, 0.2], method="hazen")]
    L = int(K // 4.5)
    f, psd = signal.welch(
        t,
        fs=1,
        window=signal.windows.hamming(L, sym=True),
        nperseg=L,
        noverlap=L // 2,
        nfft=256,
        detrend=False,
    )
    sw = np.sqrt(np.exp(np.mean(np.log(psd[(f >= 0.25) & (f <= 0.5)] / 2))))
    A = M @ np.maximum(0, t - 3 * np.sqrt(2) * sw)

    def smooth(r):
        size = math.ceil(2 * r + 1)
        yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
        k = np.exp(-(yy**2 + xx**2) / (2 * (r / 2.5) ** 2))
        k /= k.sum()
        sm = ndimage.correlate(fp.astype(np.float64), k, mode="constant").ravel()
        return sm / max(1e-6, sm.max())

    v = A * (smooth(6) > 0.01)
    out.append(v @ a / (np.linalg.norm(v) * np.linalg.norm(a)))
    U = A * (smooth(12) > 0.01)
    U[(U < 0) | (a > 0.01)] = 0
    U = U / max(1e-6, U.max())
    f_in = np.fmax(a @ M / np.linalg.norm(a), 0)
    f_out = np.fmax(U @ M / np.linalg.norm(U), 0)
    s_in = np.fmax(f_in * a.max() / np.linalg.norm(a), 0)
    s_out = np.fmax(f_out * U.max() / np.linalg.norm(U), 0)
    res = (np.fmax(s_in - t, 0), np.fmax(t - s_out, 0), np.fmax(f_in - f_out, 0))
    act = t > 0.5 * t.max()
    runs, cur = [], []
    for k in range(K):
        if act[k]:
            cur.append(k)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    for rj, den in zip(res, (t, t, f_in)):
        ratios = [rj[r].sum() / den[r].sum() for r in runs]
        out.extend(np.quantile(ratios, [0.01, 0.25, 0.5, 0.75, 0.99], method="hazen"))
    e = t / t.max()
    sup = a > 0
    z = stats.zscore(a[sup], ddof=1) / np.sqrt(sup.sum())
    cols = M[sup] / np.linalg.norm(M[sup], axis=0)
    c = z @ cols
    for rho in np.arange(10) / 10:
        J = e > rho
        out.append((e[J] * c[J]).sum() / e[J].sum() if J.any() else np.nan)
    return np.array(out)


# ----------------------------------------------------------------- tests
def test_parity_with_per_candidate_reference():
    rng = np.random.default_rng(1)
    cands = [
        _candidate(rng, 25, 25, 5),
        _candidate(rng, 19, 23, 3, noise=0.3),
        _candidate(rng, 21, 21, 4, kind="noise"),
        _candidate(rng, 27, 17, 2),
    ]
    got = _run(cands)
    for k, cand in enumerate(cands):
        np.testing.assert_allclose(
            got[k],
            _reference(*cand),
            rtol=2e-4,
            atol=1e-5,
            equal_nan=True,
            err_msg=f"candidate {k}",
        )


def test_parity_with_negative_footprint_pixels():
    """The solver's comparison flips where a < 0 (e.g. a CNMF footprint); same answers."""
    rng = np.random.default_rng(3)
    cands = []
    for h, w, nv in ((21, 21, 5), (17, 23, 3)):
        snap, fp, tr, valid = _candidate(rng, h, w, nv, noise=0.2)
        ring = (fp > 0) & (fp < 0.15)
        fp = np.where(ring, -0.5 * fp, fp).astype(np.float32)
        cands.append((snap, fp, tr, valid))
    assert all((c[1] < 0).sum() > 10 for c in cands)
    got = _run(cands)
    for k, cand in enumerate(cands):
        np.testing.assert_allclose(
            got[k],
            _reference(*cand),
            rtol=2e-4,
            atol=1e-5,
            equal_nan=True,
            err_msg=f"candidate {k}",
        )


def test_noise_dft_matches_fft_formula():
    """sigma_hat from the per-length DFT matmul equals estimate_noise_std.m via a full FFT,
    for every length (short ones include the halved DC bin) and padded frames ignored."""
    rng = np.random.default_rng(9)
    lengths = np.array([1, 2, 3, 4, 5, 6, 7, 11, 22, 33, 44, 55, 60])
    kp, n_pix = 60, 7
    M = np.zeros((lengths.size, kp, n_pix))
    want = np.zeros((lengths.size, n_pix))
    for i, n in enumerate(lengths):
        x = rng.standard_normal((n, n_pix)) + 3.0
        M[i, :n] = x
        M[i, n:] = 100.0 * rng.standard_normal((kp - n, n_pix))  # beyond n: must not count
        half = math.ceil(n / 2)
        pw = np.abs(np.fft.fft(x, axis=0)[:half]) ** 2
        pw[0] /= 2
        pw /= 2 * half
        lo = max(int(np.floor(0.5 * half + 0.5)), 1)
        want[i] = np.sqrt(pw[lo - 1 : half].mean(axis=0))
    np.testing.assert_allclose(st._noise_std_by_length(M, lengths, np), want, rtol=1e-12)


def test_solver_chunking_does_not_change_epsilon():
    """Chunks of one candidate (each padded to its own support) = one chunk for all."""
    rng = np.random.default_rng(10)
    g, kp, P = 6, 33, 40
    M = rng.standard_normal((g, kp, P)) + 0.5
    s = np.where(rng.random((g, P)) < np.linspace(0.2, 0.9, g)[:, None], rng.random((g, P)), 0)
    sigma = rng.random(g) * 0.5 + 0.2
    whole = st._solve_epsilon(M, s, sigma, np, max_chunk_elements=1 << 30)
    single = st._solve_epsilon(M, s, sigma, np, max_chunk_elements=1)
    np.testing.assert_allclose(single, whole, rtol=1e-12, atol=0)


def test_batched_padded_equals_one_by_one():
    rng = np.random.default_rng(2)
    cands = [
        _candidate(rng, h, w, nv, kind=kind)
        for h, w, nv, kind in [
            (25, 25, 5, "matched"),
            (13, 31, 2, "matched"),
            (22, 18, 5, "noise"),
            (30, 26, 1, "matched"),
            (15, 15, 3, "noise"),
            (24, 20, 4, "matched"),
        ]
    ]
    batched = _run(cands)
    tiny = spatiotemporal_features(
        *[list(z) if i < 2 else np.stack(z) for i, z in enumerate(zip(*cands))],
        max_batch_elements=1,
    )
    for k, cand in enumerate(cands):
        alone = _run([cand])[0]
        np.testing.assert_allclose(batched[k], alone, rtol=1e-5, atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(tiny[k], alone, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_missing_events_are_left_out():
    rng = np.random.default_rng(4)
    snap, fp, tr, valid = _candidate(rng, 20, 20, 3, n_events=5)
    snap[3:] = 7.0  # garbage in missing slots must not matter (B6)
    tr[3:] = 5.0
    short = (snap[:3], fp, tr[:3], valid[:3])
    np.testing.assert_allclose(_run([(snap, fp, tr, valid)])[0], _run([short])[0], rtol=1e-6)
    none = _run([(snap, fp, tr, np.zeros(5, bool))])[0]
    assert np.isnan(none).all()


def test_known_answers_matched_versus_noise():
    rng = np.random.default_rng(5)
    matched, noise = _run([_candidate(rng, 25, 25, 5), _candidate(rng, 25, 25, 5, kind="noise")])
    # epsilon = robust fraction of frames' pixels not explained by footprint x trace
    assert matched[EPS_MEAN] < 0.2 < 0.5 < noise[EPS_MEAN]
    assert matched[CORR51] > 0.95
    for row in (matched, noise):
        for block in (R1, R2, R3):  # quantiles 0.01 <= ... <= 0.99
            assert np.all(np.diff(row[block]) >= 0), row[block]


def test_tqm_high_for_matching_footprint_low_for_mismatch():
    rng = np.random.default_rng(6)
    h = w = 25
    fp = _gauss(h, w, 12, 12, 3.0)  # all pixels > 0, no cut
    other = _gauss(h, w, 4, 20, 2.0)
    t = np.zeros((5, 11))
    snap = np.zeros((5, 11, h, w))
    for e in range(5):
        t[e] = np.exp(-0.5 * ((np.arange(11) - 5) / 1.5) ** 2)
        snap[e] = t[e][:, None, None] * fp + 0.01 * rng.standard_normal((11, h, w))
    valid = np.ones(5, bool)
    good, bad = _run(
        [
            (snap.astype(np.float32), fp, t.astype(np.float32), valid),
            (snap.astype(np.float32), other, t.astype(np.float32), valid),
        ]
    )
    assert good[TQM].min() > 0.8
    assert bad[TQM].max() < 0.3


def test_errors_name_the_argument():
    rng = np.random.default_rng(7)
    snap, fp, tr, valid = _candidate(rng, 10, 12, 2)
    with pytest.raises(ValueError, match="crop_footprints"):
        spatiotemporal_features([snap], [], tr[None], valid[None])
    with pytest.raises(ValueError, match=r"snapshots\[0\]"):
        spatiotemporal_features([snap[:, :, :9]], [fp], tr[None], valid[None])
    with pytest.raises(ValueError, match="snapshot_traces"):
        spatiotemporal_features([snap], [fp], tr[None, :, :10], valid[None])
    with pytest.raises(ValueError, match="event_valid"):
        spatiotemporal_features([snap], [fp], tr[None], valid)


def test_cupy_matches_numpy(cp):
    rng = np.random.default_rng(8)
    cands = [_candidate(rng, 25, 25, 5), _candidate(rng, 17, 21, 2, kind="noise")]
    np.testing.assert_allclose(
        to_numpy(_run(cands, xp=cp)), _run(cands), rtol=1e-5, atol=1e-6, equal_nan=True
    )
