"""Export: table (CSV / Parquet), Suite2p iscell.npy with backup, classifier file, CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from actsort_gpu.active.learner import Learner
from actsort_gpu.cli import main
from actsort_gpu.export import export_labels, label_table
from ui_fixtures import make_test_store


def _label(path, picks):
    learner = Learner.open([path], annotator="ana", device="cpu")
    for i, y in picks:
        learner.label(i, y)
    learner.close()


@pytest.fixture
def store(tmp_path):
    path = make_test_store(tmp_path, n=30)
    truth = __import__("actsort_gpu.store", fromlist=["SortStore"]).SortStore.open(path).read(
        "truth/labels")
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
    rows = list(csv.DictReader(open(out)))
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
