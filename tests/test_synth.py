"""Synthetic recordings: determinism, exact truth, file layouts, streaming, annotators, CLI."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from actsort_gpu.synth import AnnotatorSpec, SynthConfig, load_truth, synthesize
from actsort_gpu.synth.render import Renderer
from actsort_gpu.synth.scene import build_scene
from actsort_gpu.synth.writers import iscell_probability, simulate_annotators

SMALL = SynthConfig(
    seed=3, n_frames=300, height=64, width=80, n_cells=12, n_false_positives=14, fs_hz=15.0
)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_small")
    res = synthesize(out, SMALL, h5=True)
    return out, res, load_truth(out / "truth.npz")


def _dense(truth, i, shape):
    img = np.zeros(shape[0] * shape[1], np.float32)
    row = truth["footprints"].getrow(i)
    img[row.indices] = row.data
    return img.reshape(shape)


def _stat(skew, npix_norm, compact):
    return {"skew": np.float32(skew), "npix_norm": np.float32(npix_norm), "compact": compact}


def test_iscell_comes_from_suite2p_statistics_not_from_the_truth():
    stats = [
        _stat(2.5, 1.0, 1.0),  # skewed, median size, a disk: cell-like
        _stat(0.0, 0.15, 1.8),  # flat, a seventh of the median size, ragged: not
        _stat(np.nan, 1.0, 1.0),  # no trace statistic: size and shape alone
        _stat(2.5, 1.0, 1.0),  # the first one again
    ]
    rng = np.random.default_rng(0)
    out = iscell_probability(stats, rng)
    assert out.shape == (4, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(out[:, 0], out[:, 1] > 0.5)
    # exactly one normal draw per candidate, so the caller's later draws do not move
    after = np.random.default_rng(0)
    after.standard_normal(4)
    assert rng.random() == after.random()
    # without the noise term: P is the logistic of the hand-set weights, the same for equal stats
    noise = np.random.default_rng(0).standard_normal(4) * 0.5
    logit = np.log(out[:, 1] / (1 - out[:, 1])) - noise
    np.testing.assert_allclose(logit[0], 0.5 + 1.5, atol=1e-6)
    np.testing.assert_allclose(logit[2], 0.5, atol=1e-6)  # NaN skew adds nothing
    np.testing.assert_allclose(logit[3], logit[0], atol=1e-9)
    np.testing.assert_allclose(logit[1], 0.5 - 1.0 - 1.5 * np.log(1 / 0.15) - 1.6, atol=1e-5)


def test_written_iscell_is_recomputed_from_stat_npy(small):
    out, _, _ = small
    p = np.load(out / "suite2p/plane0/iscell.npy")[:, 1]
    stat = np.load(out / "suite2p/plane0/stat.npy", allow_pickle=True)
    # a function of the written statistics alone: recomputed from stat.npy with the same draws
    rng = np.random.default_rng([SMALL.seed, 3])
    np.testing.assert_allclose(iscell_probability(stat, rng)[:, 1], p, rtol=1e-12)


def test_determinism_and_chunk_invariance(tmp_path, small):
    out, _, truth = small
    res = synthesize(tmp_path / "b", dataclasses.replace(SMALL, chunk_frames=7))
    assert res.n_chunks == -(-SMALL.n_frames // 7)
    np.testing.assert_array_equal(
        tifffile.imread(out / "movie.tif"), tifffile.imread(tmp_path / "b" / "movie.tif")
    )
    for name in ("F.npy", "Fneu.npy", "spks.npy", "iscell.npy"):
        np.testing.assert_allclose(
            np.load(out / "suite2p/plane0" / name),
            np.load(tmp_path / "b/suite2p/plane0" / name),
            rtol=1e-5,
            atol=1e-3,
            err_msg=name,
        )
    t2 = load_truth(tmp_path / "b" / "truth.npz")
    for k in ("is_cell", "kind", "spike_frames_flat", "annotators", "footprints_data"):
        np.testing.assert_array_equal(truth[k], t2[k])
    other = synthesize(tmp_path / "c", dataclasses.replace(SMALL, seed=4), formats=())
    assert not np.array_equal(
        load_truth(other.files["truth"])["kind"], truth["kind"]
    ) or not np.array_equal(
        tifffile.imread(other.files["movie"]), tifffile.imread(out / "movie.tif")
    )


def test_candidates_mixed_and_counted(small):
    _, res, truth = small
    kinds = truth["kind"]
    counts = SMALL.fp_counts()
    assert res.n_candidates == SMALL.n_cells + SMALL.n_false_positives == len(kinds)
    assert (kinds == "cell").sum() == SMALL.n_cells
    for k, n in counts.items():
        assert (kinds == k).sum() == n, k
    np.testing.assert_array_equal(truth["is_cell"] == 1, kinds == "cell")
    # shuffled: cells are not all first
    assert not np.all(kinds[: SMALL.n_cells] == "cell")
    # derived candidates point at true cells
    derived = np.isin(kinds, ["duplicate", "split", "merged"])
    assert np.all(truth["is_cell"][truth["source_cell"][derived]] == 1)
    assert np.all(truth["source_cell"][~derived] == -1)


def test_footprints_exact_in_suite2p_and_extract(small):
    out, _, truth = small
    H, W = SMALL.height, SMALL.width
    stat = np.load(out / "suite2p/plane0/stat.npy", allow_pickle=True)
    mat = scipy.io.loadmat(out / "extract_output.mat")["output"][0, 0]
    sw = mat["spatial_weights"]
    assert sw.shape == (H, W, len(stat)) and sw.dtype == np.float32
    scene = build_scene(SMALL)
    Hc, Wc = scene.canvas_shape
    for i in np.flatnonzero(truth["is_cell"] == 1):
        dense = _dense(truth, i, (H, W))
        np.testing.assert_array_equal(sw[:, :, i], dense)
        img = np.zeros((H, W), np.float32)
        img[stat[i]["ypix"], stat[i]["xpix"]] = stat[i]["lam"]
        np.testing.assert_array_equal(img, dense)
        # ... and it is exactly the footprint rendered into the movie (no motion: canvas = view)
        src = scene.src_footprints.getrow(truth_source(scene, i)).toarray().reshape(Hc, Wc)
        np.testing.assert_array_equal(src, dense)
        assert dense.max() == 1


def truth_source(scene, i):
    return int(scene.cand_source[i])


def _events(x, g, k=4.0):
    d = x[1:] - g * x[:-1]
    sigma = 1.4826 * np.median(np.abs(d - np.median(d)))
    return np.flatnonzero(d > np.median(d) + k * sigma) + 1


def test_planted_spikes_recoverable_from_written_traces(small):
    out, _, truth = small
    tw = scipy.io.loadmat(out / "extract_output.mat")["output"][0, 0]["temporal_weights"]
    F = np.load(out / "suite2p/plane0/F.npy")
    Fneu = np.load(out / "suite2p/plane0/Fneu.npy")
    assert tw.shape == (SMALL.n_frames, len(F))
    hit = n = false = n_ev = 0
    for i in np.flatnonzero(truth["is_cell"] == 1):
        frames = truth["spike_frames"][i]
        g = np.exp(-1 / (truth["decay_s"][i] * SMALL.fs_hz))
        for trace in (tw[:, i], F[i] - 0.7 * Fneu[i]):
            ev = _events(trace, g)
            for f in frames:
                n += 1
                hit += np.any((ev >= f) & (ev <= f + 2))
            n_ev += len(ev)
            false += sum(not np.any((frames <= e) & (frames >= e - 2)) for e in ev)
    assert n > 50
    assert hit / n > 0.9, (hit, n)
    assert false / max(n_ev, 1) < 0.1, (false, n_ev)


def test_movie_brighter_in_footprint_at_spike(small):
    out, _, truth = small
    movie = tifffile.memmap(out / "movie.tif")
    assert movie.dtype == np.uint16 and movie.shape == (SMALL.n_frames, SMALL.height, SMALL.width)
    with h5py.File(out / "movie.h5") as f:
        np.testing.assert_array_equal(f["mov"][:50], movie[:50])
    checked = 0
    for i in np.flatnonzero(truth["is_cell"] == 1):
        fr = truth["spike_frames"][i]
        amp = truth["spike_amps_flat"][truth["spike_offsets"][i] : truth["spike_offsets"][i + 1]]
        mask = _dense(truth, i, (SMALL.height, SMALL.width)) > 0.5
        for f, a in zip(fr, amp):
            isolated = f >= 10 and f + 2 < SMALL.n_frames and not np.any((fr < f) & (fr >= f - 10))
            if isolated and a >= 1.0:
                assert movie[f + 1][mask].mean() > movie[f - 2][mask].mean() + 5, (i, f)
                checked += 1
    assert checked >= 5


def test_suite2p_layout(small):
    out, _, truth = small
    d = out / "suite2p/plane0"
    N, T = len(truth["kind"]), SMALL.n_frames
    stat = np.load(d / "stat.npy", allow_pickle=True)
    assert stat.dtype == object and stat.shape == (N,)
    for key in (
        "ypix",
        "xpix",
        "lam",
        "med",
        "npix",
        "radius",
        "aspect_ratio",
        "compact",
        "skew",
        "std",
        "footprint",
        "npix_norm",
        "overlap",
        "soma_crop",
    ):
        assert key in stat[0], key
    for name in ("F", "Fneu", "spks"):
        a = np.load(d / f"{name}.npy")
        assert a.shape == (N, T) and a.dtype == np.float32, name
    assert np.all(np.load(d / "spks.npy") >= 0)
    iscell = np.load(d / "iscell.npy")
    assert iscell.shape == (N, 2)
    np.testing.assert_array_equal(iscell[:, 0], iscell[:, 1] > 0.5)
    ops = np.load(d / "ops.npy", allow_pickle=True).item()
    assert (ops["Ly"], ops["Lx"], ops["nframes"], ops["fs"]) == (SMALL.height, SMALL.width, T, 15.0)
    for key in ("meanImg", "max_proj", "Vcorr"):
        assert ops[key].shape == (SMALL.height, SMALL.width), key
    movie = tifffile.imread(out / "movie.tif").astype(np.float64)
    np.testing.assert_allclose(ops["meanImg"], movie.mean(0), rtol=1e-5)
    np.testing.assert_array_equal(ops["max_proj"], movie.max(0))
    # cells lean toward higher skew than noise-only candidates
    skew = np.array([s["skew"] for s in stat])
    assert np.median(skew[truth["kind"] == "cell"]) > np.median(skew[truth["kind"] == "noise"])


def test_extract_v73_path_matlab_order(tmp_path, small):
    out, _, _ = small
    res = synthesize(
        tmp_path, dataclasses.replace(SMALL, v73_threshold_bytes=0), formats=("extract",)
    )
    assert res.extract_v73
    ref = scipy.io.loadmat(out / "extract_output.mat")["output"][0, 0]
    with open(tmp_path / "extract_output.mat", "rb") as fh:
        assert fh.read(10) == b"MATLAB 7.3"
    with h5py.File(tmp_path / "extract_output.mat") as f:
        o = f["output"]
        assert o.attrs["MATLAB_class"] == b"struct"
        sw, tw = o["spatial_weights"], o["temporal_weights"]
        N = ref["spatial_weights"].shape[2]
        assert sw.shape == (N, SMALL.width, SMALL.height) and tw.shape == (N, SMALL.n_frames)
        assert sw.attrs["MATLAB_class"] == b"single" and sw.dtype == np.float32
        np.testing.assert_array_equal(sw[()].T, ref["spatial_weights"])
        np.testing.assert_array_equal(tw[()].T, ref["temporal_weights"])
        assert o["info"]["max_image"].shape == (SMALL.width, SMALL.height)


def test_streaming_chunks_bounded(tmp_path):
    cfg = dataclasses.replace(SMALL, n_frames=100, chunk_frames=16, n_cells=4, n_false_positives=4)
    rend = Renderer(build_scene(cfg), cfg)
    sizes = [len(m) for _, m, _ in rend]
    assert sizes == [16] * 6 + [4] and rend.n_chunks == 7
    res = synthesize(tmp_path, cfg, formats=())
    assert res.n_chunks == 7 and res.chunk_frames == 16
    assert tifffile.imread(res.files["movie"]).shape == (100, 64, 80)


def test_motion_bounded(tmp_path):
    cfg = dataclasses.replace(SMALL, n_frames=60, motion_px=2.0, n_cells=4, n_false_positives=4)
    res = synthesize(tmp_path, cfg, formats=("suite2p",))
    t = load_truth(res.files["truth"])
    assert np.abs(t["motion"]).max() == 2 and np.all(t["motion"] == np.rint(t["motion"]))
    ops = np.load(tmp_path / "suite2p/plane0/ops.npy", allow_pickle=True).item()
    np.testing.assert_array_equal(ops["yoff"], t["motion"][:, 0])


def test_fragments_are_small_active_sources():
    cfg = dataclasses.replace(SMALL, fp_fractions=(0,) * 7 + (1.0,), n_false_positives=20)
    scene = build_scene(cfg)
    frag = np.flatnonzero(scene.cand_kind == "fragment")
    assert len(frag) == 20 and (scene.cand_kind == "cell").sum() == SMALL.n_cells
    area = np.diff(scene.cand_footprints.indptr)
    cell_area = area[scene.cand_kind == "cell"]
    assert area[frag].min() >= 3 and area[frag].max() <= 80
    assert np.median(area[frag]) < cell_area.min()
    # each fragment is its own light source in the movie, with its own transients
    src = scene.cand_source[frag]
    assert len(set(src)) == 20 and np.all(scene.src_kind[src] == "fragment")
    assert sum(len(scene.cand_spike_frames[i]) > 0 for i in frag) >= 15


def test_fragment_share():
    cfg = SynthConfig()
    assert cfg.with_fragment_share(0) == cfg  # the default recording is unchanged
    assert cfg.with_fragment_share(0.4).fp_counts()["fragment"] == 60
    assert set(cfg.with_fragment_share(1).fp_counts().values()) == {0, 150}
    with pytest.raises(ValueError, match="fragment share"):
        cfg.with_fragment_share(1.5)


def test_fragment_recordings_keep_the_2p_draws():
    from actsort_gpu.embed.benchdata import training_recording_config

    plain = training_recording_config(5, size_px=96, n_frames=50, kind="2p")
    frag = training_recording_config(5, size_px=96, n_frames=50, kind="2p_fragments")
    assert plain.fp_fractions[-1] == 0
    assert 0.3 <= frag.fp_fractions[-1] / sum(frag.fp_fractions) <= 0.6  # the fragment share
    assert dataclasses.replace(frag, fp_fractions=plain.fp_fractions) == plain
    a, b = build_scene(plain), build_scene(frag)
    cells = lambda sc: sc.cand_footprints[np.flatnonzero(sc.cand_kind == "cell")]
    assert sorted(map(tuple, cells(a).toarray())) == sorted(map(tuple, cells(b).toarray()))
    assert (b.cand_kind == "fragment").sum() == frag.fp_counts()["fragment"] > 0
    # one-photon-like recordings never have fragments
    assert training_recording_config(5, size_px=96, kind="1p").fp_fractions[-1] == 0


def test_annotators_leniency_and_noise():
    rng = np.random.default_rng(0)
    n = 20000
    kind = np.array(["cell", "duplicate", "noise", "edge"])[rng.integers(0, 4, n)]
    truth = np.where(kind == "cell", 1, -1).astype(np.int8)
    specs = [
        AnnotatorSpec("strict", 0.0, 0.0),
        AnnotatorSpec("lenient", 0.5, 0.0),
        AnnotatorSpec("noisy", 0.0, 0.2),
    ]
    lab = simulate_annotators(truth, kind, specs, rng)
    np.testing.assert_array_equal(lab[0], truth)
    border = np.isin(kind, ["duplicate", "edge"])
    assert abs((lab[1][border] == 1).mean() - 0.5) < 0.02
    np.testing.assert_array_equal(lab[1][~border], truth[~border])
    assert abs((lab[2] != truth).mean() - 0.2) < 0.01


def test_default_annotators_majority_near_truth(small):
    _, _, t = small
    assert list(t["annotator_names"]) == ["ann0", "ann1", "ann2", "ann3"]
    assert t["annotators"].shape == (4, len(t["kind"])) and t["annotators"].dtype == np.int8
    majority = np.sign(t["annotators"][:3].sum(0))
    assert (majority == t["is_cell"]).mean() > 0.85


def test_errors(tmp_path, small):
    out, _, _ = small
    with pytest.raises(ValueError, match="formats"):
        synthesize(tmp_path, SMALL, formats=("caiman",))
    with pytest.raises(FileExistsError, match="movie.tif"):
        synthesize(out, SMALL)
    with pytest.raises(ValueError, match="n_frames"):
        SynthConfig(n_frames=0)
    with pytest.raises(ValueError, match="fp_fractions"):
        SynthConfig(fp_fractions=(1.0,))
    with pytest.raises(ValueError, match="height/width"):
        SynthConfig(height=20)
    with pytest.raises(ValueError, match="annotators"):
        SynthConfig(annotators=(AnnotatorSpec("a", leniency=2.0),))


def test_cli(tmp_path, capsys):
    from actsort_gpu.cli import main

    rc = main(
        [
            "synth",
            "--out",
            str(tmp_path),
            "--frames",
            "40",
            "--height",
            "48",
            "--width",
            "48",
            "--cells",
            "3",
            "--false-positives",
            "4",
            "--fragments",
            "0.5",
            "--annotators",
            "2",
            "--formats",
            "extract",
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "7 candidates" in text and "extract_output.mat" in text
    assert not (tmp_path / "suite2p").exists()
    truth = load_truth(tmp_path / "truth.npz")
    assert truth["annotators"].shape == (2, 7) and (truth["kind"] == "fragment").sum() == 2
    assert (
        main(
            [
                "synth",
                "--out",
                str(tmp_path),
                "--frames",
                "40",
                "--height",
                "48",
                "--width",
                "48",
                "--annotators",
                "-1",
            ]
        )
        == 1
    )


def test_ingest_with_truth_and_simulate(tmp_path, small, capsys):
    """`actsort synth` prints the ingest command with --truth; that store then simulates on
    the truth. Without it the store's journal is empty and simulate says where labels come
    from (it reported BA 0.500 everywhere and human BA 0.000); another recording's truth,
    or a file that is no truth, is refused and leaves no store behind."""
    from actsort_gpu.cli import main
    from actsort_gpu.features import compute_features
    from actsort_gpu.preprocess import preprocess
    from actsort_gpu.store import SortStore

    out, res, truth = small
    movie, plane = str(res.files["movie"]), str(res.files["suite2p"])
    plain = tmp_path / "plain.actsort"
    assert main(["ingest", "--movie", movie, "--extraction", plane, "--out", str(plain)]) == 0
    preprocess(plain, device="cpu", progress=False)
    compute_features(plain, device="cpu", progress=False)
    capsys.readouterr()
    assert main(["simulate", "--features", str(plain), "--json", str(tmp_path / "p.json")]) == 1
    err = capsys.readouterr().err
    assert "labels 'journal' hold 0 cells and 0 not cells" in err and "--truth" in err
    assert not (tmp_path / "p.json").exists()

    other = tmp_path / "other"
    synthesize(other, dataclasses.replace(SMALL, seed=4), formats=("suite2p",))
    store = tmp_path / "s.actsort"
    args = ["ingest", "--movie", movie, "--extraction", plane, "--out", str(store)]
    assert main([*args, "--truth", str(other / "truth.npz")]) == 1
    err = capsys.readouterr().err
    assert "its footprints do not match" in err and "the truth of another recording" in err
    assert not store.exists()
    assert main([*args, "--truth", movie]) == 1
    assert "not the truth.npz of `actsort synth` (not an .npz file)" in capsys.readouterr().err
    assert not store.exists()

    assert main([*args, "--truth", str(out / "truth.npz")]) == 0
    s = SortStore.open(store)
    src = s.source_index()
    np.testing.assert_array_equal(s.truth_labels(), truth["is_cell"][src])
    ann, names = s.truth_annotators()
    np.testing.assert_array_equal(ann, truth["annotators"][:, src])
    assert names == [str(n) for n in truth["annotator_names"]]
    preprocess(store, device="cpu", progress=False)
    compute_features(store, device="cpu", progress=False)
    capsys.readouterr()
    rc = main(
        [
            "simulate",
            "--features",
            str(store),
            "--json",
            str(tmp_path / "s.json"),
            "--repeats",
            "1",
            "--budgets",
            "20",
            "--strategies",
            "random",
        ]
    )
    assert rc == 0
    assert "human BA" in capsys.readouterr().out


def test_cli_prints_the_ingest_command(tmp_path, capsys):
    from actsort_gpu.cli import main

    args = ["synth", "--out", str(tmp_path), "--frames", "40", "--height", "48", "--width", "48"]
    assert main([*args, "--cells", "3", "--false-positives", "4", "--no-progress"]) == 0
    text = capsys.readouterr().out
    expected = (
        f"next: actsort ingest --movie {tmp_path / 'movie.tif'} --extraction "
        f"{tmp_path / 'suite2p' / 'plane0'} --out {tmp_path / 'recording.actsort'} "
        f"--truth {tmp_path / 'truth.npz'}"
    )
    assert expected in text


def test_never_writes_over_a_real_extraction(tmp_path):
    """Only movie.tif was checked: `actsort synth --out` a folder holding a real Suite2p plane
    (but no movie.tif) replaced its stat.npy, F.npy, ... without a word. Now any file it
    would write refuses the run, and --overwrite replaces only an earlier synthetic recording."""
    tiny = dataclasses.replace(SMALL, n_frames=40, n_cells=3, n_false_positives=3)
    real = tmp_path / "mouse1"
    plane = real / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    np.save(plane / "stat.npy", np.arange(5))
    (real / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="suite2p/plane0/stat.npy"):
            synthesize(real, tiny, overwrite=overwrite)
    assert np.load(plane / "stat.npy").tolist() == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in real.rglob("*")) == ["notes.txt", "plane0", "stat.npy", "suite2p"]
    # an earlier synthetic recording: refused without overwrite, replaced with it
    syn = tmp_path / "syn"
    synthesize(syn, tiny, formats=("suite2p",))
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        synthesize(syn, tiny, formats=("suite2p",))
    again = synthesize(syn, dataclasses.replace(tiny, seed=9), formats=("suite2p",), overwrite=True)
    assert again.n_candidates == len(load_truth(syn / "truth.npz")["is_cell"])
