"""Known answers for the preprocessing pass on a synthetic movie with planted transients."""

import numpy as np
import pytest
import scipy.sparse as sp
import tifffile
from mapped_pages import SMAPS, mapped_rss_kb

from actsort_gpu.config import PreprocessConfig
from actsort_gpu.ingest import ingest
from actsort_gpu.io.candidates import Candidates
from actsort_gpu.io.direct import MappedFileWriter
from actsort_gpu.io.movies import ArrayMovie, open_movie
from actsort_gpu.preprocess import kernels, preprocess, stream
from actsort_gpu.preprocess import plan as plan_mod
from actsort_gpu.preprocess import run as run_mod
from actsort_gpu.preprocess.events import find_events, snapshot_frames
from actsort_gpu.preprocess.geometry import compute_geometry, outline_from_mask
from actsort_gpu.preprocess.kernels import ProjectionAccumulator, gather_segments_numpy
from actsort_gpu.preprocess.stream import plan_pass, run_pass, split_pieces
from actsort_gpu.store import SortStore

T, H, W = 240, 40, 56
CENTRES = [(10, 10), (10, 30), (28, 14), (26, 44), (12, 47)]
EVENTS = [
    [30, 90, 150, 200, 60],
    [40, 100, 170, 211, 120],
    [0, 55, 130, 180, 235],
    [20, 70, 110, 160, 225],
    [50, 80, 140, 190, 215],
]
AMPS = [10.0, 9.0, 8.0, 7.0, 6.0]


def _scene(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    fps, traces = [], []
    movie = rng.normal(100.0, 2.0, size=(T, H, W)).astype(np.float32)
    for (r, c), ev in zip(CENTRES, EVENTS):
        fp = np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 2.0**2))
        fp[fp < 0.02] = 0
        tr = rng.normal(0, 0.05, T)
        for k, e in enumerate(ev):
            tr[e : e + 6] += AMPS[k] * np.exp(-np.arange(min(6, T - e)) / 2.0)
        fps.append(fp.ravel())
        traces.append(tr)
        movie += 20.0 * tr[:, None, None].astype(np.float32) * fp[None].astype(np.float32)
    movie = np.clip(np.round(movie), 0, 65535).astype(np.uint16)
    cands = Candidates(
        sp.csr_matrix(np.array(fps, np.float32)),
        np.array(traces, np.float32),
        H,
        W,
        "npz",
        "synthetic.npz",
    )
    return movie, cands


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    movie, cands = _scene()
    tifffile.imwrite(d / "movie.tif", movie)
    return d, movie, cands


def _store(d, cands, name):
    with open_movie(d / "movie.tif") as mv:
        return ingest(mv, cands, d / name, overwrite=True)


def test_events_are_the_planted_transients(scene):
    _, _, cands = scene
    ev = find_events(cands.traces)
    for i, planted in enumerate(EVENTS):
        # edge exclusion drops frames < 7 and >= T - 8 (events 0 and 235 of candidate 2)
        expected = [e for e in planted if 7 <= e < T - 8]
        assert sorted(ev[i][ev[i] >= 0].tolist()) == sorted(expected)
        # height descending: the largest planted amplitude first
        assert ev[i, 0] == [e for e in planted if 7 <= e < T - 8][0]


def test_full_pipeline_known_answers(scene):
    d, movie, cands = scene
    store = _store(d, cands, "a.actsort")
    summary = preprocess(store.path, PreprocessConfig(max_memory_mb=1), device="cpu")
    assert summary["chunk_frames"] < T  # really chunked
    s = SortStore.open(store.path)
    assert s.stage_status("preprocess") == "complete"
    # which accumulator ran is recorded (the compiled one wherever Numba imports)
    assert s.attrs["stages"]["preprocess"]["accumulator"] == kernels.default_cpu_method()
    assert f"on cpu, {kernels.default_cpu_method()} accumulator" in s.summary()
    assert not (store.path / ".scratch").exists()
    m = movie.astype(np.float64)
    np.testing.assert_allclose(s.read("fov/max"), m.max(0))
    np.testing.assert_allclose(s.read("fov/mean"), m.mean(0), rtol=1e-6)
    np.testing.assert_allclose(s.read("fov/std"), m.std(0), rtol=1e-4)
    # local correlation image against a direct computation
    z = (m - m.mean(0)) / m.std(0)
    tot = np.zeros((H, W))
    cnt = np.zeros((H, W))
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == dc == 0:
                continue
            sh = np.full_like(z, np.nan)
            sh[:, max(dr, 0) : H + min(dr, 0), max(dc, 0) : W + min(dc, 0)] = z[
                :, max(-dr, 0) : H + min(-dr, 0), max(-dc, 0) : W + min(-dc, 0)
            ]
            r = (z * sh).mean(0)
            ok = np.isfinite(r)
            tot[ok] += r[ok]
            cnt[ok] += 1
    np.testing.assert_allclose(s.read("fov/corr"), tot / cnt, atol=1e-5)
    centers = s.read("candidates/centers")
    np.testing.assert_allclose(centers, np.array(CENTRES, float), atol=1e-4)
    events = s.read("candidates/events")
    frames = s.read("snapshots/frames")
    crops = s.read("candidates/crops")
    for i, (r, c) in enumerate(CENTRES):
        snaps = s.snapshots(i)  # (5, 11, h, w)
        r0, r1, c0, c1 = crops[i]
        assert r0 <= r - 7 or r0 == 0
        for e in range(5):
            if events[i, e] < 0:
                continue
            fr = frames[i, e]
            # the planted transient peaks at the event frame: the centre slot (5)
            centre_vals = snaps[e, :, r - r0, c - c0]
            assert int(np.argmax(centre_vals)) == 5
            assert fr[5] == events[i, e]
            # values equal the movie within the uint8 quantisation step
            lo, hi = s.read("snapshots/scale")[i]
            ok = fr >= 0
            np.testing.assert_allclose(
                snaps[e][ok], m[fr[ok], r0:r1, c0:c1], atol=(hi - lo) / 255 / 2 + 1e-3
            )
    st = s.read("candidates/snapshot_traces")
    np.testing.assert_allclose(st[0, 0], cands.traces[0, frames[0, 0]], rtol=1e-6)
    clims = s.read("snapshots/clims")
    assert (clims[:, 0] <= clims[:, 2]).all() and (clims[:, 2] <= clims[:, 3]).all()
    assert (clims[:, 3] <= clims[:, 1]).all()


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_equals_single_chunk(scene, tmp_path, chunk):
    d, movie, cands = scene
    geo = compute_geometry(cands.footprints, H, W)
    frames = snapshot_frames(find_events(cands.traces), dt=1, n_movie_frames=T)
    plan = plan_pass(frames, geo.crops)
    mv = ArrayMovie(movie)
    one, _ = run_pass(mv, plan, tmp_path / "one", chunk_frames=T)
    many, _ = run_pass(mv, plan, tmp_path / "many", chunk_frames=chunk, gather_bytes=4096)
    for k in one:
        np.testing.assert_allclose(many[k], one[k], rtol=1e-6, atol=1e-6, err_msg=k)
    a = np.fromfile(tmp_path / "one" / stream.SCRATCH_NAME, np.uint16)
    b = np.fromfile(tmp_path / "many" / stream.SCRATCH_NAME, np.uint16)
    assert a.size == plan.total_elements
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", ["fortran-npy", "caiman-order-C"])
def test_pixel_major_movie_pass_equals_array(scene, tmp_path, layout):
    """The pass over a pixel-major file (pages released tile by tile) gives the same outputs
    as over the movie in memory."""
    d, movie, cands = scene
    geo = compute_geometry(cands.footprints, H, W)
    frames = snapshot_frames(find_events(cands.traces), dt=1, n_movie_frames=T)
    plan = plan_pass(frames, geo.crops)
    if layout == "fortran-npy":
        path = tmp_path / "movie.npy"
        np.save(path, np.asfortranarray(movie))
    else:  # CaImAn's (H * W, T) with pixel = row + col * H, uint16 as its GUI allows
        path = tmp_path / f"Yr_d1_{H}_d2_{W}_d3_1_order_C_frames_{T}_.mmap"
        np.reshape(movie, (T, H * W), order="F").T.astype(np.uint16).tofile(path)
    one, _ = run_pass(ArrayMovie(movie), plan, tmp_path / "one", chunk_frames=T)
    with open_movie(path) as mv:
        many, _ = run_pass(mv, plan, tmp_path / "many", chunk_frames=7, gather_bytes=4096)
    for k in one:
        np.testing.assert_array_equal(many[k], one[k], err_msg=k)
    snapshots = [
        np.fromfile(tmp_path / r / stream.SCRATCH_NAME, np.uint16) for r in ("one", "many")
    ]
    np.testing.assert_array_equal(*snapshots)


@pytest.mark.skipif(not SMAPS.exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("through_file", [True, False])
def test_scratch_pages_stay_out_of_the_resident_set(scene, tmp_path, monkeypatch, through_file):
    """The pass writes the scratch through its file (pwrite), so no page of the scratch map
    enters the resident set (stores through the map would put them there), and what it wrote
    equals a one-chunk pass."""
    d, movie, cands = scene
    geo = compute_geometry(cands.footprints, H, W)
    frames = snapshot_frames(find_events(cands.traces), dt=1, n_movie_frames=T)
    plan = plan_pass(frames, geo.crops)
    if not through_file:

        class ThroughTheMap(MappedFileWriter):
            def __init__(self, array):
                super().__init__(array)
                self.path = None  # slice assignment: stores through the map

        monkeypatch.setattr(stream, "MappedFileWriter", ThroughTheMap)
    scratch = tmp_path / "s" / stream.SCRATCH_NAME
    resident = []  # after every chunk

    def after_chunk(_stats):
        resident.append(mapped_rss_kb(scratch))

    run_pass(ArrayMovie(movie), plan, tmp_path / "s", chunk_frames=40, progress=after_chunk)
    run_pass(ArrayMovie(movie), plan, tmp_path / "one", chunk_frames=T)
    assert len(resident) == -(-T // 40)
    assert (max(resident) == 0) if through_file else (max(resident) > 0)
    np.testing.assert_array_equal(
        np.fromfile(scratch, np.uint16),
        np.fromfile(tmp_path / "one" / stream.SCRATCH_NAME, np.uint16),
    )


def test_downsampled_movie_frames_and_clipping():
    ev = np.array([[0, 7, 9, -1, 239]])
    fr = snapshot_frames(ev, dt=2, n_movie_frames=120, half_window=5)
    assert fr[0, 0].tolist() == [-1] * 5 + list(range(0, 6))  # clipped, not left-aligned
    assert fr[0, 1, 5] == 3 and fr[0, 2, 5] == 4  # s // dt (ceil(s/dt) 1-based)
    assert (fr[0, 3] == -1).all()
    assert fr[0, 4].tolist() == list(range(114, 120)) + [-1] * 5


def test_gather_and_accumulator_pieces():
    rng = np.random.default_rng(1)
    chunk = rng.integers(0, 1000, size=(6, 9, 11)).astype(np.uint16)
    seg = np.array([[1, 3, 2, 4, 3, 5, 0], [0, 1, 0, 0, 9, 11, 45], [5, 1, 8, 10, 1, 1, 144]])
    out = gather_segments_numpy(chunk, seg)
    assert out.size == 145
    np.testing.assert_array_equal(out[:45].reshape(3, 3, 5), chunk[1:4, 2:5, 4:9])
    np.testing.assert_array_equal(out[45:144].reshape(9, 11), chunk[0])
    assert out[144] == chunk[5, 8, 10]
    acc = ProjectionAccumulator(9, 11)
    acc.update(chunk[:2])
    acc2 = ProjectionAccumulator(9, 11)
    acc2.load(acc.state())
    acc2.update(chunk[2:])
    full = ProjectionAccumulator(9, 11)
    full.update(chunk)
    for k, v in full.images().items():
        np.testing.assert_allclose(acc2.images()[k], v, rtol=1e-6, atol=1e-6)


def test_outline_of_a_square_and_two_objects():
    mask = np.zeros((6, 7), bool)
    mask[1:4, 2:5] = True
    o = outline_from_mask(mask)
    # closed 8-point boundary of a 3x3 square (first point repeated), smoothed then rounded
    assert len(o) == 9 and np.isfinite(o).all()
    assert o[:, 0].min() == 1 and o[:, 0].max() == 3 and o[:, 1].min() == 2
    assert o[:, 1].max() == 4
    mask[5, 6] = True
    o2 = outline_from_mask(mask)
    assert np.isnan(o2).any(axis=1).sum() == 1  # one separator
    assert o2[-1].tolist() == [5.0, 6.0]


def test_neighbour_sharing_a_coordinate_is_kept():
    # ActSort B9 dropped neighbours whose centre shares one coordinate with the cell
    yy, xx = np.mgrid[:30, :30]
    a = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 4).ravel()
    b = ((yy - 10) ** 2 + (xx - 15) ** 2 <= 4).ravel()
    geo = compute_geometry(sp.csr_matrix(np.array([a, b], np.float32)), 30, 30)
    assert geo.neighbors[0].tolist() == [1] and geo.neighbors[1].tolist() == [0]
    # smoothing (span 3) pulls the disk's extreme rows 8 and 12 in to 9 and 11, except the
    # trace's start point (10, 8), kept as is: rows 9 - 7 .. 11 + 7, cols 8 - 7 .. 11 + 7
    # (the neighbour's outline, cols 14..16, is inside)
    assert geo.crops[0].tolist() == [2, 19, 1, 19]
    assert geo.crops[1].tolist() == [2, 19, 6, 24]


def test_errors(scene, tmp_path):
    d, movie, cands = scene
    store = _store(d, cands, "err.actsort")
    with pytest.raises(ValueError, match="snapshot_dtype"):
        preprocess(store.path, PreprocessConfig(snapshot_dtype="int3"), device="cpu")
    with pytest.raises(ValueError, match="max_memory_mb"):
        preprocess(store.path, PreprocessConfig(max_memory_mb=0), device="cpu")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        preprocess(store.path, device="cpu", workers=0)
    assert "preprocess" not in SortStore.open(store.path).attrs["stages"]
    with pytest.raises(FileNotFoundError, match="--movie"):
        preprocess(store.path, device="cpu", movie_path=tmp_path / "nope.tif")
    tifffile.imwrite(tmp_path / "short.tif", movie[:100])
    with pytest.raises(ValueError, match="shape"):
        preprocess(store.path, device="cpu", movie_path=tmp_path / "short.tif")
    # recorded movie gone and no --movie: a message asking for --movie
    with open_movie(tmp_path / "short.tif") as mv:
        ingest(mv, replace_traces(cands, 100), tmp_path / "g.actsort")
    (tmp_path / "short.tif").unlink()
    with pytest.raises(FileNotFoundError, match="--movie"):
        preprocess(tmp_path / "g.actsort", device="cpu")


def test_the_pass_refuses_another_recording_of_the_same_shape(scene, tmp_path):
    """Ingest records a digest of a few frames' values; --movie with another recording of the
    same shape is refused naming it, the same frames in another format and dtype are not."""
    d, movie, cands = scene
    store = _store(d, cands, "sig.actsort")
    signature = SortStore.open(store.path).attrs["movie"]["signature"]
    assert signature["frames"][0] == 0 and signature["frames"][-1] == len(movie) - 1
    other = movie.copy()
    other[signature["frames"][3]] += 1  # one sampled frame, one count brighter
    tifffile.imwrite(tmp_path / "other.tif", other)
    with pytest.raises(ValueError, match="other.tif: frames .* differ"):
        preprocess(store.path, device="cpu", movie_path=tmp_path / "other.tif")
    np.save(tmp_path / "same.npy", movie.astype(np.float32))
    preprocess(store.path, device="cpu", movie_path=tmp_path / "same.npy")
    assert SortStore.open(store.path).stage_status("preprocess") == "complete"


def replace_traces(cands, t):
    return Candidates(
        cands.footprints,
        cands.traces[:, :t],
        cands.height,
        cands.width,
        cands.source_format,
        cands.source_path,
    )


def test_interrupted_pass_resumes_from_last_chunk(scene, monkeypatch):
    monkeypatch.setattr(stream, "CHECKPOINT_S", 0.0)  # checkpoint after every chunk
    d, movie, cands = scene
    store = _store(d, cands, "k.actsort")
    reference = _store(d, cands, "ref.actsort")
    preprocess(reference.path, PreprocessConfig(max_memory_mb=1.5), device="cpu")

    class Stop(Exception):
        pass

    def stop_after_two(stats):
        if stats["frames_done"] >= 2 * chunk[0]:
            raise Stop

    chunk = []

    def first(stats):
        chunk.append(stats["frames_done"])
        stop_after_two(stats)

    with pytest.raises(Stop):
        preprocess(store.path, PreprocessConfig(max_memory_mb=1.5), device="cpu", progress=first)
    s = SortStore.open(store.path)
    assert s.stage_status("preprocess") == "incomplete"
    with pytest.raises(Exception, match="interrupted"):
        s.require("preprocess")
    summary = preprocess(store.path, PreprocessConfig(max_memory_mb=1.5), device="cpu")
    assert summary["resumed_from"] == 2 * chunk[0]
    s = SortStore.open(store.path)
    r = SortStore.open(reference.path)
    for name in (
        "fov/max",
        "fov/mean",
        "fov/std",
        "fov/corr",
        "snapshots/data",
        "snapshots/scale",
        "candidates/events",
    ):
        np.testing.assert_allclose(s.read(name), r.read(name), rtol=1e-6, atol=1e-6, err_msg=name)


def test_cli_runs_and_reports(scene, capsys):
    from actsort_gpu.cli import main

    d, _, cands = scene
    store = _store(d, cands, "cli.actsort")
    rc = main(
        [
            "preprocess",
            str(store.path),
            "--device",
            "cpu",
            "--max-memory",
            "1",
            "--snapshot-dtype",
            "uint16",
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "preprocessed 5 candidates" in out and "frames per chunk, buffered reads)" in out
    s = SortStore.open(store.path)
    assert s.read("snapshots/data", slice(0, 1)).dtype == np.uint16
    assert main(["preprocess", str(d / "missing.actsort"), "--device", "cpu"]) == 1
    assert "no such sort store" in capsys.readouterr().err


def test_accumulator_threads_blocks_and_merge(monkeypatch):
    """The threaded, row-blocked NumPy path equals a direct float64 computation whatever the
    thread count and block size; pieces merged in order equal one accumulator."""
    from actsort_gpu.preprocess import kernels

    rng = np.random.default_rng(3)
    chunk = rng.integers(0, 4000, size=(70, 13, 9)).astype(np.uint16)
    m = chunk.astype(np.float64)
    one = ProjectionAccumulator(13, 9, threads=1)
    one.update(chunk)
    ref = one.images()
    np.testing.assert_allclose(ref["mean"], m.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ref["std"], m.std(0), rtol=1e-5)
    np.testing.assert_array_equal(ref["max"], m.max(0))
    a = m - m.mean(0)
    np.testing.assert_allclose(
        one.p[3] / 70,
        (a[:, :-1, 1:] * a[:, 1:, :-1]).mean(0)
        + (m.mean(0)[:-1, 1:] - chunk[0, :-1, 1:]) * (m.mean(0)[1:, :-1] - chunk[0, 1:, :-1]),
        rtol=1e-5,
    )
    monkeypatch.setattr(kernels, "_BLOCK_PIXELS", 2 * 9)  # 2-row blocks
    monkeypatch.setattr(kernels, "_FLUSH_FRAMES", 16)
    for threads in (1, 3):
        acc = ProjectionAccumulator(13, 9, threads=threads)
        acc.update(chunk)
        acc.close()
        for k, v in acc.images().items():
            np.testing.assert_allclose(v, ref[k], rtol=1e-6, atol=1e-6, err_msg=k)
    merged = ProjectionAccumulator(13, 9, ref=chunk[0])
    for a0, b0 in ((0, 30), (30, 70)):
        part = ProjectionAccumulator(13, 9, ref=chunk[0])
        part.update(chunk[a0:b0])
        merged.merge(part)
    for k, v in merged.images().items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-6, atol=1e-6, err_msg=k)
    other = ProjectionAccumulator(13, 9)
    other.update(chunk[5:])
    with pytest.raises(ValueError, match="reference"):
        merged.merge(other)


def test_pieces_are_whole_chunks():
    assert split_pieces(100, 7, 3) == [(0, 0, 35), (1, 35, 70), (2, 70, 100)]  # 15 chunks
    assert split_pieces(10, 20, 4) == [(0, 0, 10)]


def test_reader_ring_never_overwrites_a_chunk_in_use():
    movie = np.arange(50 * 3 * 2, dtype=np.uint16).reshape(50, 3, 2)
    reader = stream.ChunkReader(ArrayMovie(movie), 4, start=2, depth=2)
    seen = []
    try:
        for first, frames in reader:
            import time as _t

            _t.sleep(0.002)  # the reader runs ahead meanwhile
            np.testing.assert_array_equal(frames, movie[first : first + 4])
            seen.append(first)
    finally:
        reader.close()
    assert seen == list(range(2, 50, 4))


def test_dask_pieces_equal_single_process(scene):
    pytest.importorskip("distributed")
    d, movie, cands = scene
    one = _store(d, cands, "single.actsort")
    two = _store(d, cands, "dask.actsort")
    cfg = PreprocessConfig(max_memory_mb=1.2)
    preprocess(one.path, cfg, device="cpu")
    summary = preprocess(two.path, cfg, device="cpu", workers=2)
    assert summary["pieces"] == 4
    a, b = SortStore.open(one.path), SortStore.open(two.path)
    for name in ("fov/max", "fov/mean", "fov/std", "fov/corr"):
        np.testing.assert_allclose(b.read(name), a.read(name), rtol=1e-6, atol=1e-7, err_msg=name)
    for name in ("snapshots/data", "snapshots/scale", "snapshots/clims", "snapshots/frames"):
        np.testing.assert_array_equal(b.read(name), a.read(name), err_msg=name)
    assert not (two.path / ".scratch").exists()


def test_unreachable_scheduler_leaves_the_store_untouched(scene, monkeypatch):
    import functools

    from actsort_gpu import cluster

    d, _, cands = scene
    store = _store(d, cands, "nosched.actsort")
    before = dict(SortStore.open(store.path).attrs["stages"])
    monkeypatch.setattr(
        cluster, "dask_client", functools.partial(cluster.dask_client, timeout_s=1.0)
    )
    with pytest.raises(cluster.ClusterError, match="tcp://127.0.0.1:9"):
        preprocess(store.path, device="cpu", scheduler="tcp://127.0.0.1:9")
    s = SortStore.open(store.path)
    assert dict(s.attrs["stages"]) == before and "preprocess" not in before
    assert not (store.path / ".scratch").exists()


_KILLED = r"""
import sys, time
from actsort_gpu.config import PreprocessConfig
from actsort_gpu.preprocess import preprocess, stream
stream.CHECKPOINT_S = 0.0
preprocess(sys.argv[1], PreprocessConfig(max_memory_mb=1), device="cpu",
           progress=lambda stats: time.sleep(0.05))
"""


def test_sigkilled_process_resumes(scene):
    import os
    import signal
    import subprocess
    import sys
    import time

    d, _, cands = scene
    store = _store(d, cands, "sigkill.actsort")
    reference = _store(d, cands, "sigkill_ref.actsort")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(store.path)])
    meta = store.path / ".scratch" / "preprocess" / "meta.json"
    deadline = time.monotonic() + 60
    while not meta.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the pass ended before it could be killed"
    assert SortStore.open(store.path).stage_status("preprocess") == "incomplete"
    summary = preprocess(store.path, PreprocessConfig(max_memory_mb=1), device="cpu")
    assert 0 < summary["resumed_from"] < T
    preprocess(reference.path, PreprocessConfig(max_memory_mb=1), device="cpu")
    s, r = SortStore.open(store.path), SortStore.open(reference.path)
    for name in ("fov/max", "fov/mean", "fov/std", "fov/corr"):
        np.testing.assert_allclose(s.read(name), r.read(name), rtol=1e-6, atol=1e-6, err_msg=name)
    for name in ("snapshots/data", "snapshots/scale", "candidates/crops"):
        np.testing.assert_array_equal(s.read(name), r.read(name), err_msg=name)


def test_gpu_matches_numpy(scene, cp):
    from actsort_gpu.preprocess.kernels import gather_segments_cupy

    _, movie, cands = scene
    chunk = movie[:40]
    seg = np.array([[1, 3, 2, 4, 3, 5, 0], [0, 1, 0, 0, 40, 56, 45], [39, 1, 39, 55, 1, 1, 2285]])
    np.testing.assert_array_equal(
        gather_segments_cupy(cp.asarray(chunk), seg).get(), gather_segments_numpy(chunk, seg)
    )
    cpu = ProjectionAccumulator(H, W)
    gpu = ProjectionAccumulator(H, W, xp=cp)
    for a in range(0, T, 50):
        cpu.update(movie[a : a + 50])
        gpu.update(cp.asarray(movie[a : a + 50]))
    for k, v in cpu.images().items():
        np.testing.assert_allclose(gpu.images()[k], v, rtol=1e-5, atol=1e-5, err_msg=k)


def test_default_budget_is_the_target_less_what_the_process_holds(monkeypatch):
    mib = 2**20
    target = plan_mod.PROCESS_TARGET_BYTES
    monkeypatch.setattr(plan_mod, "mem_available_bytes", lambda: 64 * 2**30)
    assert plan_mod.default_budget_bytes(held_bytes=0) == target
    assert plan_mod.default_budget_bytes(held_bytes=500 * mib) == target - 500 * mib
    # the candidates alone hold more than the target: the chunks still get the minimum
    assert plan_mod.default_budget_bytes(held_bytes=target) == plan_mod.MIN_BUDGET_BYTES
    # a small machine: a quarter of what is available, whatever is held
    monkeypatch.setattr(plan_mod, "mem_available_bytes", lambda: 800 * mib)
    assert plan_mod.default_budget_bytes(held_bytes=0) == 200 * mib
    monkeypatch.setattr(plan_mod, "mem_available_bytes", lambda: None)
    assert plan_mod.default_budget_bytes(held_bytes=100 * mib) == target - 100 * mib


def test_preprocess_takes_what_is_held_off_its_default_budget(scene, monkeypatch, caplog):
    d, _, cands = scene
    store = _store(d, cands, "budget.actsort")
    mib = 2**20
    monkeypatch.setattr(plan_mod, "mem_available_bytes", lambda: 64 * 2**30)
    monkeypatch.setattr(run_mod, "resident_anon_bytes", lambda: 1000 * mib)
    with caplog.at_level("INFO", logger="actsort_gpu.preprocess.run"):
        summary = preprocess(store.path, PreprocessConfig(), device="cpu")
    assert summary["budget_mb"] == plan_mod.PROCESS_TARGET_BYTES / mib - 1000
    assert "1000 MB held before the pass" in caplog.text
    assert "nearly all of" not in caplog.text
    # held memory at the target: the minimum budget, and a warning saying how to set one
    store = _store(d, cands, "budget.actsort")
    monkeypatch.setattr(run_mod, "resident_anon_bytes", lambda: plan_mod.PROCESS_TARGET_BYTES)
    with caplog.at_level("INFO", logger="actsort_gpu.preprocess.run"):
        summary = preprocess(store.path, PreprocessConfig(), device="cpu")
    assert summary["budget_mb"] == plan_mod.MIN_BUDGET_BYTES / mib
    assert "nearly all of" in caplog.text and "--max-memory" in caplog.text
    # an explicit budget is the chunk budget itself
    store = _store(d, cands, "budget.actsort")
    summary = preprocess(store.path, PreprocessConfig(max_memory_mb=3), device="cpu")
    assert summary["budget_mb"] == 3


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the quantiser cast NaN before
def test_nan_borders_are_read_as_zero(scene, tmp_path):
    """A float movie with NaN borders (CaImAn's motion correction leaves them by default)
    spread NaN through the projections and cast NaN into the snapshot codes; now its
    non-finite values are read as 0: the pass equals one over the movie with zeros there,
    and says how many it met."""
    d, movie, cands = scene
    geo = compute_geometry(cands.footprints, H, W)
    frames = snapshot_frames(find_events(cands.traces), dt=1, n_movie_frames=T)
    plan = plan_pass(frames, geo.crops)
    holed = movie.astype(np.float32)
    holed[:, :, :3] = np.nan
    holed[::5, :2, :] = np.inf
    zeros = np.where(np.isfinite(holed), holed, 0).astype(np.float32)
    ref, _ = run_pass(ArrayMovie(zeros), plan, tmp_path / "z", chunk_frames=7)
    got, info = run_pass(ArrayMovie(holed.copy()), plan, tmp_path / "h", chunk_frames=7)
    assert info["nonfinite_pixels"] == int((~np.isfinite(holed)).sum())
    for k in ref:
        assert np.isfinite(got[k]).all(), k
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    a = np.fromfile(tmp_path / "z" / stream.SCRATCH_NAME, np.float32)
    b = np.fromfile(tmp_path / "h" / stream.SCRATCH_NAME, np.float32)
    np.testing.assert_array_equal(a, b)
    # the pieces of the Dask pass (here in-process) read and count them the same way
    np.save(tmp_path / "holed.npy", holed)
    with open_movie(tmp_path / "holed.npy") as mv:
        split, info = stream.run_pass_distributed(
            None, mv, plan, tmp_path / "d", chunk_frames=7, n_pieces=3
        )
    assert info["nonfinite_pixels"] == int((~np.isfinite(holed)).sum())
    for k in ref:
        np.testing.assert_allclose(split[k], ref[k], rtol=1e-5, atol=1e-3, err_msg=k)
    # the stage records the count and `actsort info` shows it
    np.save(tmp_path / "holed_movie.npy", holed)
    with open_movie(tmp_path / "holed_movie.npy") as mv:
        store = ingest(mv, cands, tmp_path / "holed.actsort")
    summary = preprocess(store.path, PreprocessConfig(), device="cpu")
    assert summary["nonfinite_pixels"] == int((~np.isfinite(holed)).sum())
    shown = f"{summary['nonfinite_pixels']:,} NaN / Inf pixels read as 0"
    assert shown in SortStore.open(store.path).summary()
    # a rerun finds every piece done: it reads nothing and still reports them all
    with open_movie(tmp_path / "holed.npy") as mv:
        _, again = stream.run_pass_distributed(
            None, mv, plan, tmp_path / "d", chunk_frames=7, n_pieces=3
        )
    assert again["nonfinite_pixels"] == info["nonfinite_pixels"]

    # an interrupted local pass, resumed: the count covers the frames read before the stop
    class Stop(Exception):
        pass

    def stop_at_14(stats):
        if stats["frames_done"] >= 14:
            raise Stop

    with pytest.raises(Stop):
        run_pass(
            ArrayMovie(holed.copy()),
            plan,
            tmp_path / "r",
            chunk_frames=7,
            checkpoint_s=0,
            progress=stop_at_14,
        )
    got, info = run_pass(ArrayMovie(holed.copy()), plan, tmp_path / "r", chunk_frames=7)
    assert info["resumed_from"] == 14
    assert info["nonfinite_pixels"] == int((~np.isfinite(holed)).sum())
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-3, err_msg=k)
