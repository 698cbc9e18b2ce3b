"""Temporal features 1-36: known answers, MATLAB semantics, the B5 fix, tiling, CPU/GPU parity."""

from __future__ import annotations

import numpy as np
import pytest

from actsort_gpu._xp import to_numpy
from actsort_gpu.features.registry import TEMPORAL_NAMES
from actsort_gpu.features.temporal import (
    CHUNK_VALUES,
    PEAK_NAMES,
    SKETCH_FRAMES_PER_DRAW,
    _peak_columns_timed,
    chunk_rows,
    count_similar,
    count_similar_sketched,
    event_counts,
    fft_noise_std,
    halfheight_widths_many,
    medfilt3,
    peak_features,
    quantile_rows,
    similarity_rows,
    sketch_miss_bound,
    sketch_projection_block,
    sketch_rows,
    temporal_columns,
    temporal_features,
)
from actsort_gpu.signal import local_maxima, peak_prominences, peak_widths

COL = {name: i for i, name in enumerate(TEMPORAL_NAMES)}


def _transients(n_frames, onsets, amp=20.0, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, noise, n_frames).astype(np.float32)
    kernel = np.exp(-np.arange(40) / 8.0).astype(np.float32)
    for on in onsets:
        seg = min(len(kernel), n_frames - on)
        x[on : on + seg] += amp * kernel[:seg]
    return x


def test_medfilt3_zero_padding(xp):
    x = xp.asarray([[3.0, 1.0, 2.0, 5.0]], dtype=xp.float32)
    np.testing.assert_array_equal(to_numpy(medfilt3(x)), [[1.0, 2.0, 2.0, 2.0]])


def test_quantile_rows_is_hazen(xp):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 37)).astype(np.float32)
    got = to_numpy(quantile_rows(xp.asarray(x), 0.9))
    np.testing.assert_allclose(got, np.quantile(x, 0.9, axis=1, method="hazen"), rtol=1e-6)


def test_fft_noise_std_of_white_noise(xp):
    x = np.random.default_rng(2).normal(0, 2.0, (4, 20000)).astype(np.float32)
    sigma = to_numpy(fft_noise_std(xp.asarray(x)))
    np.testing.assert_allclose(sigma, 2.0, rtol=0.05)


@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_k_planted_transients_give_k_events(k):
    n_frames = 3000
    onsets = [200 + 400 * j for j in range(k)]
    x = _transients(n_frames, onsets, seed=k)[None]
    f = temporal_features(x)
    assert f[0, COL["n_events_c10"]] == k
    assert f[0, COL["n_events_c30"]] <= k


def test_event_detector_known_counts():
    v = np.zeros((1, 60), np.float32)
    v[0, 10] = 5.0  # one-sample spike: removed by the 3-point median
    v[0, 20:24] = 1.0  # a 4-sample bump: one event
    v[0, 40:44] = 2.0  # another: one event
    assert int(event_counts(v, np.array([0.1], np.float32))[0]) == 2
    # threshold theta * max(g): theta 0.6 keeps only the bump reaching above 0.6 * max
    assert int(event_counts(v, np.array([0.6], np.float32))[0]) == 1
    assert int(event_counts(np.zeros((1, 40), np.float32), np.array([0.1]))[0]) == 0


def test_snr_noise_low_transients_high():
    noise = np.random.default_rng(3).normal(0, 1, (1, 5000)).astype(np.float32)
    cell = _transients(5000, [500, 2000, 3500], seed=3)[None]
    f = temporal_features(np.concatenate([noise, cell]))
    assert f[0, COL["trace_snr"]] < 4.0
    assert f[1, COL["trace_snr"]] > 10.0


def test_event_features_do_not_depend_on_trace_units():
    """B5 fix: noise and threshold are both on the max-normalised trace."""
    x = _transients(4000, [300, 1500, 3000], seed=4)[None]
    cols = [i for i, name in enumerate(TEMPORAL_NAMES) if name.startswith(("event_", "n_events"))]
    a = temporal_features(x)[0, cols]
    b = temporal_features(x * np.float32(1000.0))[0, cols]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_spectral_fractions_sum_with_shared_bins():
    x = np.random.default_rng(5).normal(size=(2, 1001)).astype(np.float32)
    f = temporal_features(x)
    nc = 501  # round(1001 / 2), half away from zero
    p = np.abs(np.fft.rfft(x.astype(np.float64), axis=1)[:, :nc]) ** 2
    p /= p.sum(axis=1, keepdims=True)
    shared_half = p[:, 250 - 1]  # bin round(0.5 nc) = 251 belongs to both halves (1-based)
    np.testing.assert_allclose(
        f[:, COL["spec_0_0.5"]] + f[:, COL["spec_0.5_1"]], 1.0 + p[:, 251 - 1], rtol=1e-9
    )
    np.testing.assert_allclose(
        f[:, COL["spec_0_0.05"]] + f[:, COL["spec_0.05_0.95"]] + f[:, COL["spec_0.95_1"]],
        1.0 + p[:, 25 - 1] + p[:, 476 - 1],
        rtol=1e-9,
    )
    assert np.all(shared_half >= 0)
    # a pure low-frequency sine puts its power in [0, 0.05]
    sine = np.sin(2 * np.pi * 5 * np.arange(1000) / 1000)[None].astype(np.float32)
    assert temporal_features(sine)[0, COL["spec_0_0.05"]] > 0.99


def test_peak_features_hand_worked():
    # peaks at 1 (height 1), 3 (4) and a plateau at 5-6 (2), reported at its first sample
    y = np.array([[0, 1, 0, 4, 0, 2, 2, 0, 0]], dtype=np.float64)
    f = peak_features(y)[0]
    # 3: MPP = max(0.5 * q90(T1), 0.1) = 0.4; prominences on T1 = .25, 1, .5 -> one small
    assert f[0] == 1
    # 5-7: MPP3 = 1.6 -> good peaks {3, 5}, bad {1}
    np.testing.assert_allclose(f[1:4], [(5 - 3) / 2, 0.0, (5 - 1) / 3])
    # 8-11: half-height widths on y / 4 are 1, 1, 2 (plateau); prominent = {3, 5}
    np.testing.assert_allclose(
        f[4:8], [4.0, 3.0, np.std([1, 1, 2], ddof=1), np.std([1, 2], ddof=1)]
    )


def test_peak_features_constant_and_single_peak():
    y = np.array([[1.0] * 10, [0, 0, 0, 5, 0, 0, 0, 0, 0, 0]])
    f = peak_features(y)
    assert f[0, 4] == 0 and np.isnan(f[0, 6])  # no peak: width sum 0, std NaN
    assert f[1, 6] == 0.0  # one peak: std 0


def test_batched_widths_equal_signal_peak_widths():
    rng = np.random.default_rng(6)
    y = np.round(rng.normal(size=(5, 300)), 1)  # rounding makes plateaus
    y = (y - y.min(axis=1, keepdims=True)) / np.ptp(y, axis=1, keepdims=True)
    rows, locs = local_maxima(y)
    _, lb, rb = peak_prominences(y, locs, rows)
    got = halfheight_widths_many(y, rows, locs, lb, rb)
    for r in range(5):
        sel = rows == r
        np.testing.assert_allclose(got[sel], peak_widths(y[r], locs[sel])[0], atol=1e-12)


def test_temporal_corruption_and_top10_std_match_definitions():
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(3, 500)) + 2).astype(np.float32)
    f = temporal_features(x)
    for i in range(3):
        t = x[i].astype(np.float64)
        tm = np.concatenate([[0], t, [0]])
        tm = np.median(np.stack([tm[:-2], tm[1:-1], tm[2:]]), axis=0)
        ok = tm > 0.3 * tm.max()
        expect2 = np.mean(np.abs(t - tm)[ok] / np.maximum(tm, t)[ok])
        z = (t - t.mean()) / t.std(ddof=1)
        expect4 = np.std(z[z >= np.quantile(z, 0.9, method="hazen")], ddof=1)
        np.testing.assert_allclose(f[i, COL["temporal_corruption"]], expect2, rtol=1e-4)
        np.testing.assert_allclose(f[i, COL["top10_std"]], expect4, rtol=1e-4)


def test_tiled_similarity_equals_brute_force(xp):
    rng = np.random.default_rng(8)
    base = rng.normal(size=(4, 200))
    x = np.concatenate(
        [
            base[rng.integers(0, 4, 40)] + 0.5 * rng.normal(size=(40, 200)),
            rng.normal(size=(13, 200)),
        ]
    ).astype(np.float32)
    z = similarity_rows(xp.asarray(x))
    c = to_numpy(z @ z.T)
    np.fill_diagonal(c, 0)
    expect = (c > 0.7).sum(axis=1)
    assert expect.max() > 0
    for tile in (7, 53, 100):
        np.testing.assert_array_equal(to_numpy(count_similar(z, xp=xp, tile=tile)), expect)
    f = temporal_features(xp.asarray(x))
    np.testing.assert_allclose(f[:, COL["trace_similarity"]], expect / (len(x) - 1))


def _mixed_similarity_rows(xp):
    """800 unit rows over 5,000 frames: independent noise, 20 scattered near-duplicate pairs
    (correlations around 0.7) and a strongly correlated group of 60 at the end."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(800, 5000))
    src = rng.choice(700, 20, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(700), src), 20, replace=False)
    x[dst] = x[src] + rng.uniform(0.4, 0.9, (20, 1)) * rng.normal(size=(20, 5000))
    base = rng.normal(size=(3, 5000))
    x[740:] = base[rng.integers(0, 3, 60)] + 0.3 * rng.normal(size=(60, 5000))
    return similarity_rows(xp.asarray(x.astype(np.float32)))


def test_sketched_similarity_equals_the_exact_count(xp, monkeypatch):
    import actsort_gpu.features.temporal as temporal

    PATHS = ("tiles_skipped", "tiles_pairs", "tiles_subblock")
    z = _mixed_similarity_rows(xp)
    c = to_numpy(z @ z.T)
    np.fill_diagonal(c, 0)
    expect = (c > 0.7).sum(axis=1)
    assert expect[:740].max() > 0 and expect[740:].min() > 10  # both kinds of pairs present
    sketch = sketch_rows(z)
    used = set()
    for tile, pair_cost, subblock_rows in ((50, 256, 7), (100, 256, 1024), (400, 1, 1024)):
        # pair_cost 1: each marked pair checked on its own (the path for scattered pairs);
        # subblock_rows 7: a sub-block's rows multiplied in several parts
        monkeypatch.setattr(temporal, "_PAIR_COST", pair_cost)
        monkeypatch.setattr(temporal, "_SUBBLOCK_ROWS", subblock_rows)
        stats = {}
        got = count_similar_sketched(z, sketch, xp=xp, tile=tile, stats=stats)
        np.testing.assert_array_equal(to_numpy(got), expect)
        used |= {key for key in PATHS if stats[key]}
        assert 0 < stats["exact_work"] < 1
    assert used == set(PATHS)  # every path ran
    # from host copies (a spilled store) too, their sub-block rows gathered in parts
    monkeypatch.setattr(temporal, "_SUBBLOCK_ROWS", 7)
    host = count_similar_sketched(to_numpy(z), to_numpy(sketch), xp=xp, tile=100)
    np.testing.assert_array_equal(to_numpy(host), expect)


def test_sketch_gives_way_to_whole_tiles_when_everything_correlates(xp):
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(1, 3000))  # e.g. a one-photon background in every trace
    z = similarity_rows(xp.asarray((shared + 0.4 * rng.normal(size=(400, 3000))).astype("f4")))
    stats = {}
    got = count_similar_sketched(z, sketch_rows(z), xp=xp, tile=40, stats=stats)
    np.testing.assert_array_equal(to_numpy(got), to_numpy(count_similar(z, xp=xp, tile=40)))
    assert stats["tiles_subblock"] == 3 and stats["tiles_whole"] == 52  # 55 tile pairs
    assert to_numpy(got).min() > 300  # nearly every pair correlates


def test_sketch_is_the_same_however_it_is_batched():
    z = similarity_rows(np.random.default_rng(3).normal(size=(10, 9000)).astype(np.float32))
    whole = sketch_rows(z)
    np.testing.assert_array_equal(np.concatenate([sketch_rows(z[:4]), sketch_rows(z[4:])]), whole)
    r = sketch_projection_block(0, 9000)
    np.testing.assert_array_equal(sketch_rows(z, projection=r), whole)
    later = sketch_projection_block(SKETCH_FRAMES_PER_DRAW, 9000 - SKETCH_FRAMES_PER_DRAW)
    np.testing.assert_array_equal(r[SKETCH_FRAMES_PER_DRAW:], later)
    assert r.shape == (9000, 1024) and abs(float(r.std()) * 32 - 1) < 0.01  # N(0, 1/1024)
    # the sketch estimates dot products: error sd about sqrt((1 + c^2) / 1024) <= 0.045
    err = whole @ whole.T - z @ z.T
    assert np.abs(err).max() < 0.2


def test_sketch_miss_bound_is_tiny_and_a_real_bound():
    assert sketch_miss_bound() < 1e-17  # the defaults: k = 1024, margin 0.3, threshold 0.7
    # Monte Carlo at a small sketch, where misses are frequent enough to count
    dim, margin, c = 16, 0.4, 0.7
    rng = np.random.default_rng(0)
    x = np.zeros(64)
    x[0] = 1.0
    y = np.zeros(64)
    y[0], y[1] = c, np.sqrt(1 - c * c)
    r = rng.standard_normal((20_000, 64, dim)) / np.sqrt(dim)
    estimate = np.einsum("nkd,k->nd", r, x) * np.einsum("nkd,k->nd", r, y)
    missed = (estimate.sum(axis=1) <= c - margin).mean()
    bound = sketch_miss_bound(dim, margin, c)
    assert 0 < missed <= bound < 1


def test_similarity_rows_are_unit_norm_and_pearson():
    x = np.random.default_rng(9).normal(size=(2, 100)).astype(np.float32)
    z = similarity_rows(x)
    np.testing.assert_allclose((z * z).sum(axis=1), 1.0, rtol=1e-5)
    m = medfilt3(x)
    np.testing.assert_allclose(float(z[0] @ z[1]), np.corrcoef(m)[0, 1], atol=1e-5)


def test_cpu_gpu_parity(cp):
    rng = np.random.default_rng(10)
    x = np.stack([_transients(3000, rng.integers(100, 2900, 4), seed=s) for s in range(20)])
    cpu = temporal_features(x)
    gpu = temporal_features(cp.asarray(x))
    np.testing.assert_allclose(gpu, cpu, rtol=2e-3, atol=1e-5)


def test_gpu_block_peaks_on_host_threads_equal_the_cpu(cp):
    """On a GPU the peak features of a block run on the host in row chunks on the feature
    threads while the device computes the rest: columns in row order, the peak columns equal
    to the CPU's to the bit (the same host code on the same values), the rest within the
    parity tolerance, and both groups' seconds reported."""
    rng = np.random.default_rng(11)
    x = np.stack([_transients(1500, rng.integers(50, 1450, 3), seed=s) for s in range(23)])
    x[5] = 0.0  # a constant row: no peaks
    cpu = temporal_columns(x, row_chunk=4, threads=1)
    timings: dict = {}
    gpu = temporal_columns(cp.asarray(x), row_chunk=4, threads=3, timings=timings)
    assert gpu.names == cpu.names
    peaks = [cpu.names.index(name) for name in PEAK_NAMES]
    np.testing.assert_array_equal(gpu.values[:, peaks], cpu.values[:, peaks])
    np.testing.assert_allclose(gpu.values, cpu.values, rtol=2e-3, atol=1e-5)
    assert timings["temporal"] > 0 and timings["temporal_peaks"] > 0


def test_long_traces_get_fewer_rows_per_chunk(monkeypatch):
    """A CPU work unit holds at most CHUNK_VALUES values (256 rows up to 10,000 frames, 25 rows
    of 100,000), so a thread's temporaries do not grow with the recording; the columns are
    those of one chunk up to rounding."""
    assert CHUNK_VALUES == 256 * 10_000
    assert [chunk_rows(256, t) for t in (600, 10_000, 20_000, 100_000, 10**8)] == [
        256,
        256,
        128,
        25,
        1,
    ]
    rng = np.random.default_rng(12)
    x = np.stack([_transients(900, rng.integers(20, 880, 3), seed=s) for s in range(11)])
    whole = temporal_features(x, row_chunk=1000)
    monkeypatch.setattr("actsort_gpu.features.temporal.CHUNK_VALUES", 3 * 900)  # 3 rows
    seen = []
    monkeypatch.setattr(
        "actsort_gpu.features.temporal._peak_columns_timed",
        lambda rows, timings, f=_peak_columns_timed: seen.append(len(rows)) or f(rows, timings),
    )
    np.testing.assert_allclose(temporal_features(x, row_chunk=1000), whole, rtol=1e-10, atol=0)
    assert seen == [3, 3, 3, 2]
