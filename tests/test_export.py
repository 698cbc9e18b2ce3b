"""Export: table (CSV / Parquet), Suite2p iscell.npy with backup, classifier file, CLI."""

from __future__ import annotations

import csv
from datetime import UTC

import numpy as np
import pytest
from ui_fixtures import make_test_store

from actsort_gpu.active.learner import Learner
from actsort_gpu.cli import main
from actsort_gpu.export import export_labels, label_table


def _label(path, picks):
    learner = Learner.open([path], annotator="ana", device="cpu")
    for i, y in picks:
        learner.label(i, y)
    learner.close()


@pytest.fixture
def store(tmp_path):
    path = make_test_store(tmp_path, n=30)
    truth = (
        __import__("actsort_gpu.store", fromlist=["SortStore"])
        .SortStore.open(path)
        .read("truth/labels")
    )
    picks = [(i, int(truth[i])) for i in range(8)]
    _label(path, picks)
    return path, dict(picks)


def test_table_columns_and_final_label(store):
    path, picks = store
    t = label_table(path)
    assert list(t["candidate"]) == list(range(30))
    for i, y in picks.items():
        assert t["human_label"][i] == y and t["final_label"][i] == y and t["annotator"][i] == "ana"
    rest = np.arange(8, 30)
    assert np.array_equal(t["final_label"][rest], t["decision"][rest])
    assert np.all((t["probability"] >= 0) & (t["probability"] <= 1))
    assert t["annotator"][10] == ""


def test_csv_and_parquet(store, tmp_path):
    path, picks = store
    out = export_labels(path, "csv", tmp_path / "t.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 30 and int(rows[3]["human_label"]) == picks[3]
    pq = pytest.importorskip("pyarrow.parquet")
    out = export_labels(path, "parquet", tmp_path / "t.parquet")
    tab = pq.read_table(out).to_pydict()
    assert tab["human_label"][:8] == [picks[i] for i in range(8)]


def test_suite2p_iscell_backup_kept_once(store, tmp_path):
    path, picks = store
    folder = tmp_path / "suite2p"
    folder.mkdir()
    original = np.zeros((30, 2))
    original[:, 1] = 0.25
    np.save(folder / "iscell.npy", original)
    export_labels(path, "suite2p", folder)
    export_labels(path, "suite2p", folder)
    assert np.array_equal(np.load(folder / "iscell.actsort-backup.npy"), original)
    new = np.load(folder / "iscell.npy")
    t = label_table(path)
    assert np.array_equal(new[:, 0], (t["final_label"] > 0).astype(float))
    assert all(new[i, 1] == (1.0 if picks[i] > 0 else 0.0) for i in range(8))


def test_suite2p_needs_folder_for_other_sources(store):
    path, _ = store
    with pytest.raises(ValueError, match="not Suite2p"):
        export_labels(path, "suite2p")


def test_classifier_file_roundtrip(store, tmp_path):
    from actsort_gpu.active.transfer import load_classifier

    path, _ = store
    out = export_labels(path, "classifier", tmp_path / "clf.npz")
    clf = load_classifier(out)
    assert clf.features.shape[0] == 8 and clf.feature_names[0] == "snr"


def test_bad_format_and_cli(store, tmp_path, capsys):
    path, _ = store
    with pytest.raises(ValueError, match="format"):
        export_labels(path, "xlsx")
    assert main(["export", str(path), "--format", "csv", "--out", str(tmp_path / "c.csv")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "c.csv").exists()


def test_nwb_needs_an_existing_file(store, tmp_path):
    path, _ = store
    with pytest.raises((FileNotFoundError, ImportError), match="nwb|pynwb"):
        export_labels(path, "nwb", tmp_path / "missing.nwb")
    with pytest.raises(ValueError, match="not NWB"):
        export_labels(path, "nwb")


def test_export_beside_running_session(store, tmp_path):
    """The CLI export replays the journal read-only while a page holds the lock."""
    path, picks = store
    learner = Learner.open([path], annotator="bob", device="cpu")
    try:
        learner.label(20, 1)
        t = label_table(path)
        assert t["human_label"][20] == 1 and t["annotator"][20] == "bob"
    finally:
        learner.close()


def _nwb_with_rois(path, n=6, h=16, w=18, t=40):
    """A small NWB file: n square 3x3 ROIs (image masks) in a PlaneSegmentation, and a movie."""
    pynwb = pytest.importorskip("pynwb")
    from datetime import datetime

    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel

    rng = np.random.default_rng(3)
    nwb = pynwb.NWBFile("export test", "id", datetime(2024, 1, 1, tzinfo=UTC))
    device = nwb.create_device("scope")
    channel = OpticalChannel(name="ch", description="green", emission_lambda=510.0)
    plane = nwb.create_imaging_plane(
        name="plane",
        optical_channel=channel,
        description="test",
        device=device,
        excitation_lambda=500.0,
        imaging_rate=10.0,
        indicator="GCaMP",
        location="cortex",
    )
    seg = ImageSegmentation()
    ophys = nwb.create_processing_module("ophys", "optical physiology")
    ophys.add(seg)
    ps = seg.create_plane_segmentation(
        description="rois", imaging_plane=plane, name="PlaneSegmentation"
    )
    for i in range(n):
        mask = np.zeros((h, w), np.float32)
        r, c = 2 + 4 * (i // 3), 2 + 5 * (i % 3)
        mask[r : r + 3, c : c + 3] = 1.0
        ps.add_roi(image_mask=mask)
    region = ps.create_roi_table_region("all", region=list(range(n)))
    fl = Fluorescence(name="Fluorescence")
    fl.create_roi_response_series(
        name="F", data=rng.random((t, n)).astype(np.float32), rois=region, rate=10.0, unit="a.u."
    )
    ophys.add(fl)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    np.save(path.with_suffix(".movie.npy"), rng.random((t, h, w)).astype(np.float32))
    return path, path.with_suffix(".movie.npy")


def _nwb_store(tmp_path, nwb_path, movie, n_features=3, seed=2):
    """A store ingested from the NWB file, with random features (enough to label and export)."""
    from actsort_gpu.ingest import ingest_files
    from actsort_gpu.store import SortStore

    store_path = tmp_path / "s.actsort"
    ingest_files(movie, nwb_path, store_path)
    store = SortStore.open(store_path, "r+")
    store.write_array(
        "features/matrix",
        np.random.default_rng(seed).normal(0, 1, (store.n_candidates, n_features)).astype("f4"),
        dims=["candidates", "features"],
        attrs={"names": list("abcd"[:n_features]), "version": "test"},
    )
    return store_path


def test_nwb_export_writes_columns(tmp_path):
    """Ingest an NWB extraction, label a few, export: the PlaneSegmentation gains the columns
    (rows in NWB order), the original is backed up once, a second export is refused."""
    pynwb = pytest.importorskip("pynwb")
    from actsort_gpu.ingest import ingest_files
    from actsort_gpu.store import SortStore

    nwb_path, movie = _nwb_with_rois(tmp_path / "session.nwb")
    store_path = tmp_path / "s.actsort"
    ingest_files(movie, nwb_path, store_path)
    store = SortStore.open(store_path, "r+")
    n = store.n_candidates
    src = store.read("candidates/source_index")
    assert n == 6 and sorted(src.tolist()) == list(range(6))
    feats = np.random.default_rng(0).normal(0, 1, (n, 4)).astype(np.float32)
    store.write_array(
        "features/matrix",
        feats,
        dims=["candidates", "features"],
        attrs={"names": ["a", "b", "c", "d"], "version": "test"},
    )
    _label(store_path, [(0, 1), (1, -1), (4, 1)])
    out = export_labels(store_path, "nwb")  # default: the ingested NWB file
    assert out == nwb_path and (tmp_path / "session.actsort-backup.nwb").exists()
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        plane = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        human = np.asarray(plane["actsort_human_label"].data[:])
        final = np.asarray(plane["actsort_final_label"].data[:])
        proba = np.asarray(plane["actsort_probability"].data[:])
    expected = np.zeros(6, np.int8)
    expected[src[[0, 1, 4]]] = [1, -1, 1]
    assert np.array_equal(human, expected)
    t = label_table(store_path)
    assert np.array_equal(final[src], t["final_label"])
    assert np.allclose(proba[src], t["probability"]) and np.all((proba >= 0) & (proba <= 1))
    # more labels, exported again: the same columns get the new values
    _label(store_path, [(2, -1), (0, -1)])
    export_labels(store_path, "nwb")
    t = label_table(store_path)
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        plane = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert plane.colnames.count("actsort_human_label") == 1
        human = np.asarray(plane["actsort_human_label"].data[:])
        final = np.asarray(plane["actsort_final_label"].data[:])
        rejected = np.asarray(plane["Rejected"].data[:])
    expected[src[[0, 2]]] = [-1, -1]
    assert np.array_equal(human, expected) and np.array_equal(final[src], t["final_label"])
    assert np.array_equal(rejected == 1, final < 0)
    with pynwb.NWBHDF5IO(str(tmp_path / "session.actsort-backup.nwb"), "r") as io:
        plane = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert "actsort_human_label" not in plane.colnames


def test_nwb_export_refuses_a_smaller_table(tmp_path):
    """An NWB file whose PlaneSegmentation has fewer ROIs than the store's candidates come
    from is named and left as it was (no backup)."""
    pytest.importorskip("pynwb")
    nwb_path, movie = _nwb_with_rois(tmp_path / "session.nwb")
    store_path = _nwb_store(tmp_path, nwb_path, movie)
    other, _ = _nwb_with_rois(tmp_path / "other.nwb", n=4)
    before = other.read_bytes()
    with pytest.raises(ValueError, match="has 4 ROIs, but this store's candidates come from 6"):
        export_labels(store_path, "nwb", other)
    assert other.read_bytes() == before
    assert not (tmp_path / "other.actsort-backup.nwb").exists()


def test_export_learner_matches_page_inputs_with_embeddings(store, tmp_path):
    """The export builds the learner input as the page does (``dataset_from_store``): with
    ``active.use_embeddings`` the store's embeddings are appended; without, they are not."""
    from dataclasses import replace

    from actsort_gpu.active.transfer import load_classifier
    from actsort_gpu.config import load_config
    from actsort_gpu.store import SortStore

    path, _ = store
    emb = np.random.default_rng(1).normal(0, 1, (30, 3)).astype(np.float32)
    SortStore.open(path, "r+").write_array(
        "embeddings/matrix",
        emb,
        dims=["candidates", "embedding"],
        attrs={"encoder_id": "test-encoder"},
    )
    cfg = load_config()
    cfg_on = replace(cfg, active=replace(cfg.active, use_embeddings=True))
    with_emb = load_classifier(export_labels(path, "classifier", tmp_path / "a.npz", config=cfg_on))
    assert with_emb.features.shape[1] == 15 and with_emb.feature_names[-1] == "emb2"
    cfg_off = replace(cfg, active=replace(cfg.active, use_embeddings=False))
    without = load_classifier(export_labels(path, "classifier", tmp_path / "b.npz", config=cfg_off))
    assert without.features.shape[1] == 12


def test_nwb_export_accepted_rejected_read_back_as_roiextractors_does(tmp_path):
    """Accepted / Rejected (0/1) beside our columns, from the final label, in NWB row order;
    read back with pynwb the way roiextractors' NwbSegmentationExtractor does (rows == 1)."""
    pynwb = pytest.importorskip("pynwb")
    from actsort_gpu import UNSURE
    from actsort_gpu.ingest import ingest_files
    from actsort_gpu.store import SortStore

    nwb_path, movie = _nwb_with_rois(tmp_path / "session.nwb")
    store_path = tmp_path / "s.actsort"
    ingest_files(movie, nwb_path, store_path)
    store = SortStore.open(store_path, "r+")
    src = store.read("candidates/source_index")
    store.write_array(
        "features/matrix",
        np.random.default_rng(1).normal(0, 1, (6, 3)).astype(np.float32),
        dims=["candidates", "features"],
        attrs={"names": ["a", "b", "c"], "version": "test"},
    )
    _label(store_path, [(0, 1), (1, -1), (2, 1), (3, -1), (5, UNSURE)])
    export_labels(store_path, "nwb")
    t = label_table(store_path)
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        ophys = io.read().processing["ophys"]
        ps = ophys.data_interfaces["ImageSegmentation"].plane_segmentations["PlaneSegmentation"]
        assert {"Accepted", "Rejected", "actsort_final_label"} <= set(ps.colnames)
        accepted = np.asarray(ps["Accepted"].data[:])
        rejected = np.asarray(ps["Rejected"].data[:])
        final = np.asarray(ps["actsort_final_label"].data[:])
    assert set(np.unique(accepted)) <= {0, 1} and set(np.unique(rejected)) <= {0, 1}
    assert np.where(accepted == 1)[0].tolist() == sorted(src[t["final_label"] > 0].tolist())
    assert np.where(rejected == 1)[0].tolist() == sorted(src[t["final_label"] < 0].tolist())
    assert np.array_equal(accepted == 1, final > 0) and not (accepted & rejected).any()
    assert accepted[src[0]] == 1 and rejected[src[1]] == 1  # the human labels win


def test_actsort_labels_mat_and_caiman_indices(store, tmp_path):
    """ActSort's <name>_LABELS.mat (struct labels: labels_ex / labels_ml / labels_overall, N x 1)
    and CaImAn's idx_components / idx_components_bad, in the extraction's order."""
    from scipy.io import loadmat

    from actsort_gpu import UNSURE
    from actsort_gpu.export import EXPORTERS

    path, picks = store
    _label(path, [(9, UNSURE)])
    t = label_table(path)
    out = export_labels(path, "actsort-mat")
    assert out.name == f"{path.name.removesuffix('.actsort')}_LABELS.mat"
    assert out == path / "exports" / EXPORTERS["actsort-mat"].name_for(path)
    labels = loadmat(out, squeeze_me=False)["labels"][0, 0]
    src = np.asarray(t["source_index"])
    for field, column in (
        ("labels_ex", "human_label"),
        ("labels_ml", "decision"),
        ("labels_overall", "final_label"),
        ("unsure", "unsure"),
    ):
        values = labels[field]
        assert values.shape == (src.max() + 1, 1), field
        assert np.array_equal(values[src, 0], np.asarray(t[column], np.float64)), field
    assert labels["labels_ex"][src[9], 0] == 0 and labels["unsure"][src[9], 0] == 1
    out = export_labels(path, "caiman", tmp_path / "idx.npz")
    idx = np.load(out)
    assert idx["idx_components"].tolist() == sorted(src[t["final_label"] > 0].tolist())
    assert idx["idx_components_bad"].tolist() == sorted(src[t["final_label"] < 0].tolist())
    assert idx["idx_components"].dtype.kind == "i"


def test_actsort_labels_mat_before_training(tmp_path):
    """ActSort writes labels_ml = 0 before its classifier is trained."""
    from scipy.io import loadmat

    path = make_test_store(tmp_path, n=12)
    _label(path, [(0, 1)])  # one class: no classifier yet
    labels = loadmat(export_labels(path, "actsort-mat"))["labels"][0, 0]
    assert not labels["labels_ml"].any() and labels["labels_overall"][0, 0] == 1
    assert (labels["labels_overall"][1:] == 0).all()


def test_exports_before_training_make_no_label_up(tmp_path):
    """With one class labelled (no classifier yet) a candidate without a human label has no
    final label: 0 in the table, Suite2p's own row kept in iscell.npy, in neither of CaImAn's
    lists; the human labels are written."""
    path = make_test_store(tmp_path, n=12)
    _label(path, [(0, 1), (3, 1)])
    t = label_table(path)
    assert np.isnan(t["probability"]).all() and not t["decision"].any()
    assert t["final_label"].tolist() == [1, 0, 0, 1] + [0] * 8
    folder = tmp_path / "suite2p"
    folder.mkdir()
    original = np.column_stack([np.arange(12) % 2, np.linspace(0.1, 0.9, 12)])
    np.save(folder / "iscell.npy", original)
    new = np.load(export_labels(path, "suite2p", folder))
    src = np.asarray(t["source_index"])
    expected = original.copy()
    expected[src[[0, 3]]] = [1.0, 1.0]
    np.testing.assert_array_equal(new, expected)
    idx = np.load(export_labels(path, "caiman", tmp_path / "idx.npz"))
    assert sorted(idx["idx_components"].tolist()) == sorted(src[[0, 3]].tolist())
    assert idx["idx_components_bad"].size == 0
    # no classifier to save yet: said naming the file asked for (not its temporary twin)
    with pytest.raises(ValueError, match=r"^\S*/c\.npz: nothing to save"):
        export_labels(path, "classifier", tmp_path / "c.npz")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c.")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.zeros((10, 2)), "10 ROIs, but this store's candidates come from 30"),
        (b"not a numpy file", "not a NumPy .npy file"),
        (np.zeros(30), r"shape \(30,\); Suite2p's iscell.npy is \(n_rois, 2\)"),
    ],
)
def test_suite2p_export_refuses_another_folders_iscell(store, tmp_path, content, message):
    """An iscell.npy that cannot be this extraction's (too few ROIs, unreadable, another shape)
    stops the export with its name, before the backup or the file is touched."""
    path, _ = store
    folder = tmp_path / "other"
    folder.mkdir()
    target = folder / "iscell.npy"
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        np.save(target, content)
    before = target.read_bytes()
    with pytest.raises(ValueError, match=message):
        export_labels(path, "suite2p", folder)
    assert target.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["iscell.npy"]


def test_nwb_export_keeps_the_files_own_accepted_column(tmp_path, caplog):
    """An Accepted column that another curation wrote is never overwritten, on the first
    export nor on the next."""
    pynwb = pytest.importorskip("pynwb")
    nwb_path, movie = _nwb_with_rois(tmp_path / "session.nwb")
    with pynwb.NWBHDF5IO(str(nwb_path), "a") as io:
        nwb = io.read()
        plane = nwb.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        plane.add_column("Accepted", "curated in another tool", data=np.ones(6, np.uint8))
        io.write(nwb)
    store_path = _nwb_store(tmp_path, nwb_path, movie)
    _label(store_path, [(0, -1), (1, 1)])
    for _ in range(2):
        export_labels(store_path, "nwb")
    assert "kept its own Accepted column" in caplog.text
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        plane = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert np.asarray(plane["Accepted"].data[:]).tolist() == [1] * 6
        assert int(np.asarray(plane["Rejected"].data[:]).sum()) >= 1


def test_suite2p_export_refuses_a_plane_folder_that_is_gone(store, tmp_path):
    """The Suite2p folder recorded at ingest was moved: the export names it and asks for
    --out instead of writing iscell.npy into the missing folder's parent."""
    from actsort_gpu.store import SortStore

    path, _ = store
    gone = tmp_path / "suite2p" / "plane0"
    SortStore.open(path, "r+").update_attrs(extraction={"format": "suite2p", "path": str(gone)})
    with pytest.raises(FileNotFoundError, match=r"plane0\) is gone; name the plane folder"):
        export_labels(path, "suite2p")
    assert not (tmp_path / "suite2p").exists()


def test_out_may_be_a_folder(store, tmp_path):
    """--out FOLDER puts the format's file inside it, as `cp` does ('Is a directory' before;
    the classifier went to FOLDER.npz beside it)."""
    path, _ = store
    folder = tmp_path / "exports"
    folder.mkdir()
    assert export_labels(path, "csv", folder) == folder / "labels.csv"
    assert export_labels(path, "classifier", folder) == folder / "classifier.npz"
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.npz", "labels.csv"]
    assert not (tmp_path / "exports.npz").exists()


def test_export_replaces_only_its_own_earlier_files(store, tmp_path, capsys):
    """A mistyped --out overwrote any file: notes, a movie (65 MB -> 6 kB of Parquet), the
    MATLAB app's own _LABELS.mat. Now only an earlier export of the same format is replaced,
    whole (no temporary file left); anything else is refused and left as it was."""
    from scipy.io import savemat

    path, _ = store
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    movie = tmp_path / "movie.tif"
    movie.write_bytes(b"II*\x00" + bytes(5000))
    matlab = tmp_path / "m1_LABELS.mat"  # the MATLAB app's: labels_ex / _ml / _overall only
    labels = {k: np.zeros((30, 1)) for k in ("labels_ex", "labels_ml", "labels_overall")}
    savemat(matlab, {"labels": labels})
    before = {p: p.read_bytes() for p in (notes, movie, matlab)}
    for fmt in ("csv", "parquet", "actsort-mat", "caiman"):
        for target in (notes, movie, matlab):
            with pytest.raises(FileExistsError, match=f"not an earlier {fmt} export"):
                export_labels(path, fmt, target)
    data = tmp_path / "data.npz"
    np.savez(data, traces=np.ones(3))
    before[data] = data.read_bytes()
    with pytest.raises(FileExistsError, match="not an earlier classifier export"):
        export_labels(path, "classifier", data)
    assert main(["export", str(path), "--format", "csv", "--out", str(movie)]) == 1
    assert "movie.tif: exists and is not an earlier csv export" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    # each format's own earlier file is replaced, exactly at the name given
    for fmt, name in [
        ("csv", "t.csv"),
        ("parquet", "t.parquet"),
        ("actsort-mat", "t_LABELS.mat"),
        ("caiman", "t"),  # no ".npz" appended behind the user's back
        ("classifier", "c.npz"),
    ]:
        first = export_labels(path, fmt, tmp_path / "out" / name)
        assert first == tmp_path / "out" / name
        assert export_labels(path, fmt, first) == first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "c.npz",
        "t",
        "t.csv",
        "t.parquet",
        "t_LABELS.mat",
    ]
    # a trailing slash names a folder, made if missing
    assert export_labels(path, "csv", f"{tmp_path / 'new'}/") == tmp_path / "new" / "labels.csv"


def test_suite2p_export_checks_the_folders_rois_are_the_stores(store, tmp_path):
    """Suite2p run again in the plane folder (other ROIs, as many or more) would take the
    store's labels in its rows: stat.npy is compared with the store's footprints first, and
    the export refused naming it, nothing written; the folder's own ROIs pass."""
    from actsort_gpu.store import SortStore

    path, _ = store
    s = SortStore.open(path)
    fp, width = s.footprints(), s.width
    rois = []
    for i in range(fp.shape[0]):
        pix = fp[i].indices
        rois.append({"ypix": pix // width, "xpix": pix % width, "lam": fp[i].data})
    folder = tmp_path / "plane0"
    folder.mkdir()
    np.save(folder / "iscell.npy", np.zeros((30, 2)))

    def stat(items):
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        np.save(folder / "stat.npy", arr, allow_pickle=True)

    stat(rois)
    export_labels(path, "suite2p", folder)  # the store's own ROIs
    written = (folder / "iscell.npy").read_bytes()
    moved = [{**r, "ypix": (r["ypix"] + 9) % s.height} for r in rois]
    for items, message in [
        (moved, r"stat.npy: its ROIs are not the ones this store was ingested from"),
        (rois + rois[:2], r"stat.npy: 32 ROIs, but this store's candidates come from 30"),
    ]:
        stat(items)
        with pytest.raises(ValueError, match=message):
            export_labels(path, "suite2p", folder)
        assert (folder / "iscell.npy").read_bytes() == written
