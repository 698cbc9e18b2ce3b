"""Feature stage driver: store in, features/matrix out; registry, NaN policy, real data."""

from __future__ import annotations

import numpy as np
import pytest

from actsort_gpu.config import FeatureConfig
from actsort_gpu.features import compute_features, read_feature_matrix
from actsort_gpu.features.extra import event_snr, footprint_shape, r_values, trace_skew
from actsort_gpu.features.policy import apply_nan_policy
from actsort_gpu.features.registry import (
    ACTSORT_NAMES,
    check_compatible,
    feature_names,
    feature_set,
)
from actsort_gpu.features.synthetic import make_feature_store
from actsort_gpu.store import SortStore, StoreError


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("feat") / "s.actsort"
    make_feature_store(path, n_candidates=60, n_frames=600, height=64, width=64, seed=1)
    return path


def test_matrix_written_with_registry_attrs(synthetic_store):
    m = compute_features(synthetic_store, device="cpu")
    store = SortStore.open(synthetic_store)
    names, groups, version = feature_set(["suite2p_iscell_prob"])
    assert m.shape == (60, len(names)) and m.dtype == np.float32
    assert np.isfinite(m).all()
    arr = store.array("features/matrix")
    assert list(arr.attrs["names"]) == names == feature_names(store)
    assert list(arr.attrs["groups"]) == groups
    assert arr.attrs["version"] == version == "actsort76-v1+extra-v1+src[suite2p_iscell_prob]"
    assert store.stage_status("features") == "complete"
    timings = store.attrs["stages"]["features"]["timings_s"]
    assert {"temporal", "similarity", "spatial", "spatiotemporal", "extra"} <= set(timings)
    got, got_names, got_version = read_feature_matrix(synthetic_store)
    np.testing.assert_array_equal(got, m)
    # planted transients (5 per cell, amplitudes 8-15 noise sd): 5 events at scale 3
    truth = store.read("truth/labels")
    n_ev = m[:, names.index("n_events_c3")]
    assert np.all(n_ev[truth == 1] >= 4)  # noisy tails may split a transient
    snr = m[:, names.index("trace_snr")]
    assert snr[truth == 1].min() > snr[truth == -1].max()


def test_blocks_and_spill_do_not_change_the_result(synthetic_store, tmp_path, monkeypatch):
    import actsort_gpu.features.run as run

    a = compute_features(synthetic_store, device="cpu")
    cfg = FeatureConfig(batch_candidates=23, similarity_tile=11, similarity_memory_mb=0.001)
    monkeypatch.setattr(run, "SNAPSHOT_ROWS", 5)  # snapshot parts across block boundaries
    b = compute_features(synthetic_store, cfg, device="cpu")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not list(synthetic_store.parent.glob("actsort-z-*"))  # temp file removed


def test_sketched_similarity_does_not_change_the_result(synthetic_store, monkeypatch):
    import actsort_gpu.features.temporal as temporal

    a = compute_features(synthetic_store, device="cpu")  # "auto": exact at 60 candidates
    cfg = FeatureConfig(similarity_method="sketch", similarity_tile=16)
    np.testing.assert_array_equal(compute_features(synthetic_store, cfg, device="cpu"), a)
    spill = FeatureConfig(
        similarity_method="sketch", similarity_tile=11, similarity_memory_mb=0.001
    )
    monkeypatch.setattr(temporal, "_SUBBLOCK_ROWS", 3)  # rows gathered from the file in parts
    np.testing.assert_array_equal(compute_features(synthetic_store, spill, device="cpu"), a)
    sketched = SortStore.open(synthetic_store, "r").attrs["stages"]["features"]
    assert sketched["similarity_sketch"]["tiles_subblock"] > 0
    assert not list(synthetic_store.parent.glob("actsort-z-*"))  # both temp files removed
    stage = SortStore.open(synthetic_store, "r").attrs["stages"]["features"]
    assert stage["similarity_method"] == "sketch"
    assert 0 < stage["similarity_sketch"]["exact_work"] <= 1
    assert "feature 35 by sketch (" in SortStore.open(synthetic_store, "r").summary()


def test_auto_similarity_method_depends_on_the_shape_only():
    from actsort_gpu.features.run import similarity_method

    auto = FeatureConfig()
    assert similarity_method(100_000, 10_000, auto) == "sketch"
    assert similarity_method(100_000, 2_000, auto) == "exact"  # short: the sketch does not pay
    assert similarity_method(5_000, 10_000, auto) == "exact"  # few candidates: it hardly matters
    assert similarity_method(5_000, 10_000, FeatureConfig(similarity_method="sketch")) == "sketch"
    assert similarity_method(10**6, 10**5, FeatureConfig(similarity_method="exact")) == "exact"


def test_similarity_tiles_shrink_for_long_recordings():
    from actsort_gpu.features.run import similarity_tile_rows

    cfg = FeatureConfig()  # 8,192-row tiles in 1,024 MB
    assert similarity_tile_rows(10_000, cfg) == 8192
    long = similarity_tile_rows(200_000, cfg)
    assert 256 <= long < 8192 and long % 256 == 0
    assert 8 * 200_000 * long + 5 * long**2 <= 1024 * 2**20  # two tiles + product fit
    assert similarity_tile_rows(10**7, cfg) == 256  # never below 256 rows
    assert similarity_tile_rows(10**7, FeatureConfig(similarity_tile=11)) == 11


def test_row_file_round_trip(tmp_path):
    from actsort_gpu.features.run import _RowFile

    rows = np.random.default_rng(0).standard_normal((9, 13)).astype(np.float32)
    spill = _RowFile(tmp_path, 9, 13)
    try:
        spill[0:4] = rows[0:4]
        spill[4:9] = rows[4:9]
        np.testing.assert_array_equal(spill[2:7], rows[2:7])
        np.testing.assert_array_equal(spill[7:100], rows[7:])  # clipped like an array
    finally:
        spill.close()
    assert not list(tmp_path.iterdir())  # unnamed: nothing left behind


def test_synthetic_store_blocks_line_up(tmp_path, monkeypatch):
    """Traces and snapshots written block by block land on their own candidates."""
    import actsort_gpu.features.synthetic as synthetic

    monkeypatch.setattr(synthetic, "_BLOCK", 7)
    store = make_feature_store(tmp_path / "b.actsort", n_candidates=30, n_frames=200, seed=3)
    traces = store.traces()
    frames, snap_traces, crops = (
        store.snapshot_frames(),
        store.snapshot_traces(),
        store.crops(),
    )
    ok = frames >= 0
    i, e, k = np.nonzero(ok)
    np.testing.assert_array_equal(snap_traces[ok], traces[i, frames[i, e, k]])
    footprints = store.footprint_crops()
    for c in range(30):
        snaps = store.snapshots(c)
        assert snaps.shape[2:] == (crops[c, 1] - crops[c, 0], crops[c, 3] - crops[c, 2])
        if c % 2 == 0:  # a cell's peak frame shows its own footprint
            peak = snaps[0, 5].ravel()
            assert np.corrcoef(peak, footprints[c].ravel())[0, 1] > 0.8
    events = store.events()
    truth = store.truth_labels()
    # cells' strongest event is a planted transient: its frame is well above the noise
    cells = np.nonzero(truth == 1)[0]
    assert np.all(traces[cells, events[cells, 0]] > 4)


def test_without_extras_is_the_76(synthetic_store):
    m = compute_features(synthetic_store, FeatureConfig(include_extra=False), device="cpu")
    arr = SortStore.open(synthetic_store).array("features/matrix")
    assert m.shape == (60, 76) and list(arr.attrs["names"]) == list(ACTSORT_NAMES)
    assert arr.attrs["version"] == "actsort76-v1"


def test_needs_preprocess(tmp_path):
    path = tmp_path / "bare.actsort"
    store = make_feature_store(path, n_candidates=4, n_frames=100, height=32, width=32)
    store.begin_stage("preprocess")  # interrupted
    with pytest.raises(StoreError, match="preprocess"):
        compute_features(path, device="cpu")


@pytest.mark.parametrize(
    "key, value",
    [
        ("batch_candidates", 0),
        ("similarity_tile", -1),
        ("suite2p_pixel_fraction", 0.0),
        ("snr_window_frames", 0),
        ("threads", -1),
        ("threads", 1.5),
        ("similarity_method", "approximate"),
    ],
)
def test_bad_config_is_rejected(synthetic_store, key, value):
    with pytest.raises(ValueError, match=f"features.{key}"):
        compute_features(synthetic_store, FeatureConfig(**{key: value}), device="cpu")


def test_check_compatible():
    names, _, version = feature_set(["a"])
    check_compatible(names, version, list(names), version)
    with pytest.raises(ValueError, match="missing columns"):
        check_compatible(names, version, *feature_set([])[::2])
    swapped = [names[1], names[0], *names[2:]]
    with pytest.raises(ValueError, match="different order"):
        check_compatible(names, version, swapped, version)


def test_nan_policy_known_answers():
    names = ["circularity", "trace_snr", "tqm_0", "skew"]
    raw = np.array(
        [
            [1.0, 1.0, np.nan, 2.0],
            [np.inf, np.inf, np.nan, 1e40],
            [np.nan, np.nan, np.nan, 3.0],
            [2.0, 3.0, np.nan, 4.0],
        ]
    )
    fixed, report = apply_nan_policy(raw, names)
    # local fix: Inf -> 10 x max finite (20); NaN -> mean of (1, 20, 2)
    np.testing.assert_allclose(fixed[:, 0], [1, 20, 23 / 3, 2], rtol=1e-6)
    # final fix: Inf -> 0; NaN -> mean of the non-NaN values (B10 fixed: not sum / N)
    np.testing.assert_allclose(fixed[:, 1], [1, 0, 4 / 3, 3], rtol=1e-6)
    np.testing.assert_array_equal(fixed[:, 2], 0)  # all NaN -> 0
    assert fixed[1, 3] == np.finfo(np.float32).max  # beyond float32: clipped
    assert report["circularity"] == {"nan": 1, "posinf": 1, "neginf": 0, "clipped": 0}
    assert report["tqm_0"]["nan"] == 4 and report["skew"]["clipped"] == 1
    with pytest.raises(ValueError, match="expected shape"):
        apply_nan_policy(raw, names[:2])


def test_extra_known_answers():
    x = np.array([[0, 0, 0, 0, 10.0], [1, 2, 3, 4, 5.0]])
    sk = trace_skew(x)
    assert sk[0] > 1 and abs(sk[1]) < 1e-12
    noise = np.random.default_rng(0).normal(size=(1, 3000))
    spiky = noise.copy()
    spiky[0, 1000:1010] += 15
    snr = event_snr(np.concatenate([noise, spiky]))
    assert snr[0] < 4 < snr[1]
    # a filled disk is compact (~1) and round (aspect ~1); a 1 x 9 bar is elongated
    import scipy.sparse as sp

    yy, xx = np.mgrid[:21, :21]
    disk = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 16).astype(np.float32).ravel()
    bar = np.zeros((21, 21), np.float32)
    bar[10, 6:15] = 1
    npix, compact, aspect = footprint_shape(sp.csr_matrix(np.stack([disk, bar.ravel()])), 21, 21)
    assert npix[0] == disk.sum() and npix[1] == 9
    assert compact[0] == pytest.approx(1.0, abs=0.05) and compact[1] > 1.3
    assert aspect[0] == pytest.approx(1.0, abs=0.01) and aspect[1] > 1.9
    img = disk.reshape(21, 21)
    snaps = [np.stack([np.stack([img * 3 + 1] * 11)] * 2)]
    assert r_values(snaps, [img], np.ones((1, 2, 11), bool))[0] == pytest.approx(1.0)
    assert np.isnan(r_values(snaps, [img], np.zeros((1, 2, 11), bool))[0])


def test_cli(synthetic_store, capsys):
    from actsort_gpu.cli import main

    assert main(["features", str(synthetic_store), "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "features/matrix 60 x 83" in out and "actsort76-v1" in out
    args = ["features", str(synthetic_store), "--device", "cpu", "--no-progress", "--threads"]
    assert main([*args, "3"]) == 0
    assert "on cpu, 3 CPU threads in" in capsys.readouterr().out
    assert SortStore.open(synthetic_store, "r").attrs["stages"]["features"]["threads"] == 3
    assert main([*args, "-2"]) != 0
    assert "features.threads: expected 0 (one per core) or a positive integer, got -2" in (
        capsys.readouterr().err
    )


def test_real_data_neurofinder(shared_data, tmp_path):
    from sklearn.metrics import roc_auc_score

    from actsort_gpu.ingest import ingest_files
    from actsort_gpu.preprocess import preprocess

    data = shared_data / "neurofinder_crop"
    store = tmp_path / "nf.actsort"
    ingest_files(data / "movie.tif", data / "suite2p", store)
    preprocess(store, device="cpu")
    m = compute_features(store, device="cpu")
    names = feature_names(store)
    assert m.shape == (178, len(names)) and np.isfinite(m).all()
    assert "source_suite2p_iscell_prob" in names
    y = np.load(data / "gt_label_centroid5px.npy")
    auc = np.array([roc_auc_score(y, m[:, j]) for j in range(m.shape[1])])
    informative = [n for n, a in zip(names, auc) if a >= 0.65 or a <= 0.35]
    assert len(informative) >= 10, informative


def test_dask_local_cluster_equals_in_process(synthetic_store):
    """Blocks and similarity tile pairs as Dask pieces: the same matrix as one process."""
    pytest.importorskip("distributed")
    cfg = FeatureConfig(batch_candidates=25, similarity_tile=20)
    a = compute_features(synthetic_store, cfg, device="cpu")
    b = compute_features(synthetic_store, cfg, device="cpu", workers=2)
    np.testing.assert_array_equal(a, b)
    stage = SortStore.open(synthetic_store).attrs["stages"]["features"]
    assert stage["status"] == "complete" and stage["params"]["workers"] == 2


def test_unreachable_scheduler_leaves_store_unchanged(tmp_path):
    pytest.importorskip("distributed")
    from actsort_gpu.cluster import ClusterError

    path = tmp_path / "s.actsort"
    make_feature_store(path, n_candidates=6, n_frames=100, height=32, width=32)
    with pytest.raises(ClusterError, match="tcp://127.0.0.1:9"):
        compute_features(path, device="cpu", scheduler="tcp://127.0.0.1:9", connect_timeout_s=1.0)
    store = SortStore.open(path)
    assert store.stage_status("features") is None and not store.has("features")


def test_threads_and_row_chunks_do_not_change_the_result(synthetic_store, monkeypatch):
    one = compute_features(synthetic_store, FeatureConfig(threads=1), device="cpu")
    # 60 candidates in parts of 7 on two threads: the snapshot parts run concurrently
    monkeypatch.setattr("actsort_gpu.features.run.SNAPSHOT_ROWS", 14)
    two = compute_features(synthetic_store, FeatureConfig(threads=2), device="cpu")
    np.testing.assert_array_equal(one, two)
    from actsort_gpu.features.temporal import temporal_features

    x = SortStore.open(synthetic_store).traces(slice(0, 60))
    # widths are interpolated at row offsets within a chunk: equal up to rounding (1e-12)
    np.testing.assert_allclose(
        temporal_features(x, row_chunk=7, threads=2),
        temporal_features(x, row_chunk=1000),
        rtol=1e-10,
        atol=0,
    )


def test_the_stage_record_and_summary_say_how_many_threads_ran(synthetic_store):
    compute_features(synthetic_store, FeatureConfig(threads=3), device="cpu")
    store = SortStore.open(synthetic_store, "r")
    assert store.attrs["stages"]["features"]["threads"] == 3
    assert "on cpu, 3 CPU threads" in store.summary()
    compute_features(synthetic_store, FeatureConfig(threads=1), device="cpu")
    assert ", 1 CPU thread" in SortStore.open(synthetic_store, "r").summary()


def test_auto_threads_follow_the_cores_this_process_may_use(monkeypatch):
    """features.threads 0 (the default): one thread per core of the process's affinity mask
    (a container's cpuset), at most AUTO_THREADS_MAX; one per Dask piece; a number is kept."""
    import os

    from actsort_gpu.backend import AUTO_THREADS_MAX, cpu_cores
    from actsort_gpu.features.run import feature_threads

    assert FeatureConfig().threads == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert cpu_cores() == 3 and feature_threads(FeatureConfig()) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert feature_threads(FeatureConfig()) == AUTO_THREADS_MAX
    assert feature_threads(FeatureConfig(), piece=True) == 1
    assert feature_threads(FeatureConfig(threads=5), piece=True) == 5
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS: no affinity call
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert cpu_cores() == 6
