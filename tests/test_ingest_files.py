"""ingest_files / `actsort ingest` and `actsort info`: real data end to end, every error path."""

from __future__ import annotations

import numpy as np
import pytest

from actsort_gpu.cli import main
from actsort_gpu.store import SortStore

N, H, W, T = 3, 6, 8, 20


def _npz(path, traces=None, fp=None):
    if fp is None:
        fp = np.zeros((N, H, W), np.float32)
        fp[0, 1, 1], fp[1, 2:4, 3:5], fp[2, 5, 7] = 2.0, 0.5, 1.0
    rng = np.random.default_rng(0)
    np.savez(path, footprints=fp, traces=rng.random((N, T)) if traces is None else traces)
    return path


def _movie(path, t=T, h=H, w=W):
    np.save(path, np.zeros((t, h, w), np.uint16))
    return path


@pytest.mark.parametrize(
    "name,n,t,hw,fs",
    [
        ("neurofinder_crop", 178, 600, (256, 256), 7.0),
        ("miniscope_1p", 1196, 1000, (480, 752), 15.0),
    ],
)
def test_cli_real_suite2p(shared_data, tmp_path, capsys, name, n, t, hw, fs):
    out = tmp_path / "s.actsort"
    rc = main(
        [
            "ingest",
            "--movie",
            str(shared_data / name / "movie.tif"),
            "--extraction",
            str(shared_data / name / "suite2p"),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    store = SortStore.open(out)
    assert (store.n_candidates, store.n_frames, store.height, store.width) == (n, t, *hw)
    assert store.attrs["movie"]["fs_hz"] == fs
    fp = store.footprints()
    assert np.allclose(fp.max(axis=1).toarray().ravel(), 1.0)  # max-normalised
    assert store.read("source_images/suite2p_meanImg").shape == hw
    assert store.has("candidates/source_metrics/suite2p_iscell_prob")
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{n:,} (0 with empty footprints)" in text and "ingest      complete" in text


def test_mismatched_hw(tmp_path, capsys):
    rc = main(
        [
            "ingest",
            "--movie",
            str(_movie(tmp_path / "m.npy", h=H + 1)),
            "--extraction",
            str(_npz(tmp_path / "e.npz")),
            "--out",
            str(tmp_path / "s.actsort"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "e.npz: footprints are 6 x 8 pixels but the movie" in err
    assert "m.npy is 7 x 8" in err


def test_trace_length_mismatch_and_downsampling(tmp_path, capsys):
    e = _npz(tmp_path / "e.npz")
    rc = main(
        [
            "ingest",
            "--movie",
            str(_movie(tmp_path / "m.npy", t=T - 3)),
            "--extraction",
            str(e),
            "--out",
            str(tmp_path / "a.actsort"),
        ]
    )
    assert rc == 1 and "traces have 20 frames but the movie" in capsys.readouterr().err
    # a 5-frame movie for 20 trace frames is implausible (issue 16): refused unless deliberate
    args = ["ingest", "--movie", str(_movie(tmp_path / "d.npy", t=T // 4)), "--extraction"]
    rc = main([*args, str(e), "--out", str(tmp_path / "b.actsort")])
    err = capsys.readouterr().err
    assert rc == 1 and "d.npy: the movie has 5 frames for 20 trace frames" in err
    assert "--allow-downsampling" in err and not (tmp_path / "b.actsort").exists()
    rc = main(
        [
            "ingest",
            "--movie",
            str(_movie(tmp_path / "d.npy", t=T // 4)),
            "--extraction",
            str(e),
            "--out",
            str(tmp_path / "b.actsort"),
            "--allow-downsampling",
        ]
    )
    assert rc == 0
    store = SortStore.open(tmp_path / "b.actsort")
    assert store.attrs["movie"]["temporal_downsample"] == 4
    assert "4x the movie's frames" in store.summary()


def test_empty_footprints_flagged(tmp_path):
    fp = np.zeros((N, H, W), np.float32)
    fp[1, 2, 2] = 1.0
    rc = main(
        [
            "ingest",
            "--movie",
            str(_movie(tmp_path / "m.npy")),
            "--extraction",
            str(_npz(tmp_path / "e.npz", fp=fp)),
            "--out",
            str(tmp_path / "s.actsort"),
        ]
    )
    assert rc == 0
    np.testing.assert_array_equal(
        SortStore.open(tmp_path / "s.actsort").read("candidates/is_empty"), [True, False, True]
    )


def test_nonfinite_traces(tmp_path, capsys):
    traces = np.ones((N, T))
    traces[1, 3], traces[2, 0] = np.nan, np.inf
    e, m = _npz(tmp_path / "e.npz", traces=traces), _movie(tmp_path / "m.npy")
    rc = main(
        ["ingest", "--movie", str(m), "--extraction", str(e), "--out", str(tmp_path / "a.actsort")]
    )
    assert rc == 1 and "e.npz: 2 NaN/Inf values" in capsys.readouterr().err
    assert not (tmp_path / "a.actsort").exists()
    rc = main(
        [
            "ingest",
            "--movie",
            str(m),
            "--extraction",
            str(e),
            "--out",
            str(tmp_path / "b.actsort"),
            "--nonfinite",
            "zero",
        ]
    )
    assert rc == 0
    t = SortStore.open(tmp_path / "b.actsort").traces()
    assert t[1, 3] == 0 and t[2, 0] == 0 and np.isfinite(t).all()
    # A failed --overwrite ingest leaves the store there as it was (the new one is built beside
    # it, and nothing of the attempt is left behind)
    SortStore.open(tmp_path / "b.actsort", "r+").update_attrs(marker="earlier work")
    argv = ["ingest", "--movie", str(m), "--extraction", str(e), "--out"]
    rc = main([*argv, str(tmp_path / "b.actsort"), "--overwrite"])
    assert rc == 1 and "e.npz: 2 NaN/Inf values" in capsys.readouterr().err
    kept = SortStore.open(tmp_path / "b.actsort")
    assert kept.attrs["marker"] == "earlier work" and kept.traces()[1, 3] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.actsort", "e.npz", "m.npy"]


def test_unknown_and_corrupt_inputs(tmp_path, capsys):
    m = _movie(tmp_path / "m.npy")
    (tmp_path / "e.xyz").write_text("?")
    assert (
        main(
            [
                "ingest",
                "--movie",
                str(m),
                "--extraction",
                str(tmp_path / "e.xyz"),
                "--out",
                str(tmp_path / "a.actsort"),
            ]
        )
        == 1
    )
    assert "unknown extraction format '.xyz'" in capsys.readouterr().err
    (tmp_path / "m.npy").write_bytes(b"\x93NUMPY broken")
    assert (
        main(
            [
                "ingest",
                "--movie",
                str(m),
                "--extraction",
                str(_npz(tmp_path / "e.npz")),
                "--out",
                str(tmp_path / "b.actsort"),
            ]
        )
        == 1
    )
    assert "m.npy: not a readable .npy movie" in capsys.readouterr().err


def test_extract_sparse_without_image_takes_hw_from_movie(tmp_path):
    import scipy.io
    import scipy.sparse as sp

    fp = np.zeros((H * W, 2))
    fp[0, 0], fp[H * W - 1, 1] = 1, 2  # first and last pixel
    scipy.io.savemat(tmp_path / "e.mat", {"filters": sp.csc_matrix(fp), "traces": np.ones((T, 2))})
    assert (
        main(
            [
                "ingest",
                "--movie",
                str(_movie(tmp_path / "m.npy")),
                "--extraction",
                str(tmp_path / "e.mat"),
                "--out",
                str(tmp_path / "s.actsort"),
            ]
        )
        == 0
    )
    assert SortStore.open(tmp_path / "s.actsort").footprints().indices.tolist() == [0, H * W - 1]


def test_info_refuses_non_store_and_newer_schema(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert main(["info", str(tmp_path / "plain")]) == 1
    assert "not a sort store" in capsys.readouterr().err
    store = SortStore.create(tmp_path / "new.actsort")
    store.update_attrs(schema_version=99)
    assert main(["info", str(tmp_path / "new.actsort")]) == 1
    assert "upgrade actsort-gpu" in capsys.readouterr().err


def test_traces_checked_and_neuropil_subtracted_by_blocks(tmp_path, monkeypatch):
    """Block by block (tiny blocks here), the same values as the whole-matrix expressions;
    the check rides on the one write of the traces; the caller's arrays are never changed."""
    from actsort_gpu import ingest
    from actsort_gpu.io import candidates, suite2p

    rng = np.random.default_rng(0)
    monkeypatch.setattr(candidates, "TRACE_BLOCK_VALUES", 7)
    f = rng.normal(100, 10, (13, 5)).astype(np.float32)
    for fneu_dtype in (np.float32, np.float64):
        fneu = rng.normal(50, 5, (13, 5)).astype(fneu_dtype)
        expected = (f - np.float32(0.7) * fneu).astype(np.float32)
        lazy = suite2p._neuropil_corrected(f, fneu, 0.7)
        assert lazy.shape == (13, 5) and lazy.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(lazy), expected)
        np.testing.assert_array_equal(lazy[3:11], expected[3:11])
        with pytest.raises(TypeError, match="contiguous slice"):
            lazy[[1, 2]]
    assert np.isfinite(f).all() and f.dtype == np.float32  # F read, never changed

    def written(traces, policy, name):
        store = SortStore.create(tmp_path / f"{name}.actsort")
        store.create_array = _small_chunks(store.create_array)
        ingest._write_traces(store, traces, policy, "x")
        return store.traces()

    np.testing.assert_array_equal(written(f, "error", "ok"), f)
    bad = f.astype(np.float64)
    bad[[2, 9, 11], [1, 4, 0]] = [np.nan, np.inf, 1e39]  # 1e39: beyond float32, Inf there
    with pytest.raises(ValueError, match=r"x: 3 NaN/Inf values in the traces of 3 candidates"):
        written(bad, "error", "err")
    np.testing.assert_array_equal(
        written(bad, "zero", "zero"), np.where(np.isfinite(bad) & (bad < 1e38), bad, 0)
    )
    assert np.isnan(bad[2, 1]) and bad[11, 0] == 1e39  # the input is left as it was


def _small_chunks(create_array):
    """``SortStore.create_array`` with chunks of 2 rows, so a 13-row matrix takes 7 blocks."""

    def create(name, shape, dtype, **kwargs):
        return create_array(name, shape, dtype, chunks=(2, *shape[1:]), **kwargs)

    return create


def test_mapped_traces_are_written_by_blocks_never_held_whole(tmp_path, monkeypatch):
    """A 16 MB trace matrix stored in a .npz (numpy.savez) or Suite2p's F / Fneu: ingest reads
    it from the memory-mapped file by whole chunks of rows and releases each block's pages,
    so after the ingest (the Candidates, and their maps, still alive) almost none of it is
    resident; the store holds the same values."""
    from mapped_pages import SMAPS, mapped_rss_kb

    from actsort_gpu.config import IngestConfig
    from actsort_gpu.ingest import ingest
    from actsort_gpu.io import candidates
    from actsort_gpu.io.extraction import read_extraction
    from actsort_gpu.io.movies import open_movie

    if not SMAPS.exists():
        pytest.skip("needs /proc/self/smaps")
    monkeypatch.setattr(candidates, "TRACE_BLOCK_VALUES", 1 << 18)  # 1 MB blocks
    n, t = 4000, 1000
    rng = np.random.default_rng(0)
    traces = rng.normal(size=(n, t)).astype(np.float32)
    fneu = rng.normal(size=(n, t)).astype(np.float32)
    fp = np.zeros((n, H * W), np.float32)
    fp[np.arange(n), np.arange(n) % (H * W)] = 1.0
    movie = open_movie(_movie(tmp_path / "m.npy", t=t))

    np.savez(tmp_path / "e.npz", footprints=fp.reshape(n, H, W), traces=traces)
    c = read_extraction(tmp_path / "e.npz")
    store = ingest(movie, c, tmp_path / "npz.actsort")
    assert mapped_rss_kb(tmp_path / "e.npz") < 2 * 1024  # without the release: 16 MB
    np.testing.assert_array_equal(store.read("candidates/traces"), traces)
    # float64 in Fortran order (np.savez of a transposed array): mapped as well, never
    # converted whole, its pages released once the last rows are read
    np.savez(
        tmp_path / "t.npz", footprints=fp.reshape(n, H, W), traces=np.asfortranarray(traces, "f8")
    )
    c = read_extraction(tmp_path / "t.npz")
    store = ingest(movie, c, tmp_path / "t.actsort")
    assert mapped_rss_kb(tmp_path / "t.npz") < 2 * 1024  # without the release: 32 MB
    np.testing.assert_array_equal(store.read("candidates/traces"), traces)

    plane = tmp_path / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    stat = [{"ypix": np.array([i % H]), "xpix": np.array([i % W]), "lam": [1.0]} for i in range(n)]
    np.save(plane / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(plane / "ops.npy", {"Ly": H, "Lx": W, "fs": 30.0}, allow_pickle=True)
    np.save(plane / "F.npy", traces)
    np.save(plane / "Fneu.npy", fneu)
    c = read_extraction(plane, config=IngestConfig())  # default trace: F - 0.7 Fneu
    store = ingest(movie, c, tmp_path / "s2p.actsort")
    assert mapped_rss_kb(plane / "F.npy") + mapped_rss_kb(plane / "Fneu.npy") < 2 * 1024
    np.testing.assert_array_equal(store.read("candidates/traces"), traces - np.float32(0.7) * fneu)


def test_a_movie_unlike_the_extractions_mean_image_is_refused(tmp_path):
    """The mean of the movie's signature frames against Suite2p's meanImg: the right movie
    passes, a mirrored one (another recording of the same shape) is refused naming both
    unless --skip-image-check; no or a flat mean image: nothing to compare."""
    import scipy.sparse as sp

    from actsort_gpu.config import IngestConfig
    from actsort_gpu.ingest import check_mean_image, ingest
    from actsort_gpu.io.candidates import Candidates
    from actsort_gpu.io.movies import ArrayMovie

    rng = np.random.default_rng(0)
    h, w, t = 24, 32, 50
    pattern = rng.gamma(2.0, 50.0, (h, w))
    frames = (pattern + rng.normal(0, 20, (t, h, w))).clip(0).astype(np.uint16)
    right, mirrored = ArrayMovie(frames, "right.npy"), ArrayMovie(frames[:, ::-1], "other.npy")
    images = {"suite2p_meanImg": pattern.astype(np.float32)}

    def check(movie, images):
        signature, frames_mean = movie.sample_frames()
        n = len(signature["frames"])
        return check_mean_image(
            frames_mean, images, movie_path=movie.path, where="plane0", n_sampled=n
        )

    assert check(right, images) > 0.9
    with pytest.raises(ValueError, match=r"other.npy: its frames do not look like the mean image"):
        check(mirrored, images)
    assert check(mirrored, {}) is None
    assert check(mirrored, {"suite2p_meanImg": np.ones((h, w))}) is None
    fp = np.zeros((2, h * w), np.float32)
    fp[0, :4], fp[1, 40:44] = 1, 1
    cands = Candidates(
        sp.csr_matrix(fp), rng.random((2, t)), h, w, "suite2p", tmp_path, images=images
    )
    with pytest.raises(ValueError, match="--skip-image-check"):
        ingest(mirrored, cands, tmp_path / "a.actsort")
    assert not (tmp_path / "a.actsort").exists()
    skip = IngestConfig(check_mean_image=False)
    assert ingest(mirrored, cands, tmp_path / "a.actsort", config=skip).n_candidates == 2


def test_a_plane_without_fneu_says_which_trace_works(shared_data, tmp_path, capsys):
    import shutil

    src = shared_data / "neurofinder_crop"
    plane = tmp_path / "plane0"
    plane.mkdir()
    for name in ("F.npy", "stat.npy", "ops.npy", "iscell.npy"):
        shutil.copy(src / "suite2p" / name, plane / name)
    args = ["ingest", "--movie", str(src / "movie.tif"), "--extraction", str(plane)]
    assert main([*args, "--out", str(tmp_path / "a.actsort")]) == 1
    err = capsys.readouterr().err
    assert "Fneu.npy: missing (the default trace F - 0.7 Fneu needs it" in err
    assert "--suite2p-trace F uses F alone" in err
    out = tmp_path / "b.actsort"
    assert main([*args, "--out", str(out), "--suite2p-trace", "F"]) == 0
    assert SortStore.open(out).n_candidates == 178
