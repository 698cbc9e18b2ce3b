"""Carrying labels between two stores of one recording (actsort import-labels): footprint
matching against known overlaps, the journal action it writes, and what it refuses."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.sparse as sp
from ui_fixtures import make_test_store

from actsort_gpu import CELL, NOT_CELL, schema
from actsort_gpu.active.learner import Learner
from actsort_gpu.cli import main
from actsort_gpu.label_import import import_labels, mask_iou, match_footprints
from actsort_gpu.labels import Journal, JournalLockedError, read_labels
from actsort_gpu.store import SortStore

H = W = 40


def _disks(centres, radius=3.0) -> sp.csr_matrix:
    yy, xx = np.mgrid[:H, :W]
    rows = [((yy - r) ** 2 + (xx - c) ** 2 <= radius**2).ravel() for r, c in centres]
    return sp.csr_matrix(np.array(rows, np.float32))


def test_matches_follow_overlap_not_order():
    """A re-extraction: the same cells in another order, one moved by 1 px (IoU 0.6: a match),
    one by 4 px (IoU 0.1: none), one new; mutual best matches only."""
    source = _disks([(5, 5), (5, 20), (20, 5), (20, 20), (32, 32)])
    target = _disks([(20, 20), (5, 6), (35, 8), (5, 5), (32, 28)])
    rows, cols, iou = match_footprints(target, source)
    assert rows.tolist() == [0, 3] and cols.tolist() == [3, 0]
    assert np.allclose(iou, 1.0)
    # (5, 6) overlaps (5, 5) at IoU ~0.6 but (5, 5) matches target 3 better: not mutual
    rows, cols, iou = match_footprints(target[[1, 2, 4]], source)
    assert rows.tolist() == [0] and cols.tolist() == [0] and 0.5 <= iou[0] < 0.8
    rows, _, _ = match_footprints(target, source, min_iou=1.0)
    assert rows.tolist() == [0, 3]


def test_import_carries_labels_to_a_reordered_extraction(tmp_path, capsys):
    source = make_test_store(tmp_path, n=12, name="old.actsort")
    learner = Learner.open([source], annotator="ana", device="cpu")
    learner.label_many([1, 2], CELL)
    learner.label(5, NOT_CELL)
    learner.label(7, CELL)
    learner.close()
    target = tmp_path / "new.actsort"
    shutil.copytree(source, target)
    shutil.rmtree(target / "labels")
    order = np.random.default_rng(0).permutation(12)  # new candidate k = old order[k]
    store = SortStore.open(target, "r+")
    fp = SortStore.open(source).footprints()
    store.write_csr(
        schema.FOOTPRINTS, fp[order], attrs={"height": store.height, "width": store.width}
    )
    with Journal(target / "labels" / "journal.jsonl", n_candidates=12) as j:
        j.append("new.actsort", int(np.flatnonzero(order == 7)[0]), NOT_CELL, "bob")
    report = import_labels(target, source)
    assert (report.source_labels, report.matched, report.kept, report.unmatched) == (4, 4, 1, 0)
    assert (report.imported_cells, report.imported_not_cells) == (2, 1)
    old = read_labels(source / "labels" / "journal.jsonl", "old.actsort", 12)
    new = read_labels(target / "labels" / "journal.jsonl", "new.actsort", 12)
    expected = old[order]
    expected[order == 7] = NOT_CELL  # bob's label there is kept
    np.testing.assert_array_equal(new, expected)
    with Journal(target / "labels" / "journal.jsonl", n_candidates=12) as j:
        assert {ev.origin for ev in j.undo_stack[-1]} == {"import"}
        assert {ev.annotator for ev in j.undo_stack[-1]} == {"import:old.actsort"}
        j.undo("ana")  # one undo reverts the whole import
        assert {c for _, c in j.labels} == {int(np.flatnonzero(order == 7)[0])}
    assert main(["import-labels", str(target), "--from", str(source)]) == 0
    assert "3 labels imported (2 cells, 1 not a cell" in capsys.readouterr().out
    # again: everything is labelled here already, and no "median IoU nan" is printed
    assert main(["import-labels", str(target), "--from", str(source)]) == 0
    out = capsys.readouterr().out
    assert "0 labels imported (0 cells, 0 not cells) of 4 in the source; 4 kept" in out


def test_import_refuses_another_field_of_view_and_bad_thresholds(tmp_path):
    a = make_test_store(tmp_path, n=6, name="a.actsort")
    b = make_test_store(tmp_path, n=6, name="b.actsort", height=64, width=64)
    with pytest.raises(ValueError, match="field of view 64 x 64, but .*a.actsort is 96 x 96"):
        import_labels(a, b)
    with pytest.raises(ValueError, match="min_iou must be in"):
        import_labels(a, a, min_iou=0)
    assert not (a / "labels").exists()


def test_mask_iou_equals_the_neurofinder_crops_own_figures(shared_data, tmp_path):
    """The crop's gt_best_iou.npy (each Suite2p ROI's best IoU with a human-drawn cell, all of
    its pixels) is reproduced by mask_iou to 1e-6."""
    import json

    from actsort_gpu.ingest import ingest_files

    crop = shared_data / "neurofinder_crop"
    store = ingest_files(crop / "movie.tif", crop / "suite2p", tmp_path / "nf.actsort")
    h, w = store.height, store.width
    drawn = np.zeros((0, h * w), np.float32)
    for region in json.loads((crop / "regions.json").read_text()):
        mask = np.zeros(h * w, np.float32)
        yx = np.asarray(region["coordinates"])
        mask[yx[:, 0] * w + yx[:, 1]] = 1
        drawn = np.vstack([drawn, mask])
    iou = mask_iou(store.footprints(), sp.csr_matrix(drawn), mask_level=1e-6).tocsr()
    best = iou.max(axis=1).toarray().ravel()
    np.testing.assert_allclose(best, np.load(crop / "gt_best_iou.npy"), atol=1e-6)


def test_label_files_give_a_store_its_labels(tmp_path, capsys):
    """The MATLAB app's Load labels: an ActSort _LABELS.mat (MATLAB v5, 3 fields as the app
    writes them, and v7.3 / HDF5), the exported CSV and an .npy give labels by extraction
    row; wrong lengths and values are refused naming the file, and nothing is written then."""
    import h5py
    from scipy.io import savemat

    store = make_test_store(tmp_path, n=12, name="s.actsort")
    journal = store / "labels" / "journal.jsonl"
    ex = np.zeros(12)
    ex[[1, 4]], ex[[2, 7, 9]] = 1, -1
    mat = tmp_path / "s_LABELS.mat"
    labels = {"labels_ex": ex[:, None], "labels_ml": np.zeros((12, 1))}
    savemat(mat, {"labels": {**labels, "labels_overall": ex[:, None]}})
    report = import_labels(store, mat)
    assert (report.imported_cells, report.imported_not_cells, report.kept) == (2, 3, 0)
    np.testing.assert_array_equal(read_labels(journal, "s.actsort", 12), ex)
    with Journal(journal, read_only=True) as j:
        assert {ev.origin for ev in j.events} == {"import"}
        assert {ev.annotator for ev in j.events} == {"import:s_LABELS.mat"}
        assert len(j.undo_stack) == 1  # one Z in the page reverts it
    assert main(["info", str(store)]) == 0  # what the store's labels are and who gave them
    out = capsys.readouterr().out
    assert "labels       5 of 12 candidates (cell 2, not a cell 3, unsure 0)" in out
    assert "given by import:s_LABELS.mat 5" in out and "(5 lines)" in out
    # v7.3 (MATLAB stores the N x 1 column as 1 x N); only unlabelled candidates take labels
    v73 = tmp_path / "v73_LABELS.mat"
    ex2 = np.zeros(12)
    ex2[[0, 1]] = -1
    with h5py.File(v73, "w") as f:
        f.create_group("labels").create_dataset("labels_ex", data=ex2[None, :])
    assert main(["import-labels", str(store), "--from", str(v73)]) == 0
    out = capsys.readouterr().out
    assert "1 label imported (0 cells, 1 not a cell) of 2" in out and "1 kept" in out
    assert "median IoU" not in out
    # the exported CSV round-trips into a fresh store of the same extraction
    assert main(["export", str(store), "--format", "csv", "--out", str(tmp_path / "t.csv")]) == 0
    fresh = tmp_path / "fresh.actsort"
    shutil.copytree(store, fresh, ignore=shutil.ignore_patterns("labels"))
    assert main(["import-labels", str(fresh), "--from", str(tmp_path / "t.csv")]) == 0
    np.testing.assert_array_equal(
        read_labels(fresh / "labels" / "journal.jsonl", "fresh.actsort", 12),
        read_labels(journal, "s.actsort", 12),
    )
    capsys.readouterr()
    other = tmp_path / "other.actsort"
    shutil.copytree(store, other, ignore=shutil.ignore_patterns("labels"))
    for content, message in [
        (
            np.ones(10),
            "labels for 10 extraction rows, but .*other.actsort's candidates come from 12",
        ),
        (np.full(12, 2.0), "12 labels are not \\+1 \\(cell\\), -1 \\(not a cell\\) or 0"),
        (np.ones((3, 4)), "labels of shape \\(3, 4\\)"),
    ]:
        np.save(tmp_path / "bad.npy", content)
        with pytest.raises(ValueError, match=message):
            import_labels(other, tmp_path / "bad.npy")
    with Journal(other / "labels" / "journal.jsonl", dataset="other.actsort"):  # a page, say
        np.save(tmp_path / "good.npy", ex.astype(np.int8))
        with pytest.raises(JournalLockedError, match="load the labels in its Load labels tab"):
            import_labels(other, tmp_path / "good.npy")
    # Suite2p's iscell.npy, curated in its GUI: every ROI labelled, and the log says whose
    iscell = np.stack([(np.arange(12) % 3 == 0).astype(float), np.linspace(0, 1, 12)], 1)
    np.save(tmp_path / "iscell.npy", iscell)
    fresh_s2p = tmp_path / "s2p.actsort"
    shutil.copytree(store, fresh_s2p, ignore=shutil.ignore_patterns("labels"))
    report = import_labels(fresh_s2p, tmp_path / "iscell.npy")
    assert (report.imported_cells, report.imported_not_cells) == (4, 8)
    assert "Note: Suite2p's iscell.npy" in report.summary() and "curated" in report.summary()
    savemat(tmp_path / "x.mat", {"something": np.ones(3)})
    with pytest.raises(ValueError, match="no struct 'labels' with 'labels_ex'"):
        import_labels(other, tmp_path / "x.mat")
    (tmp_path / "notes.txt").write_text("x")
    assert main(["import-labels", str(other), "--from", str(tmp_path / "notes.txt")]) == 1
    assert "expected a sort store, an ActSort _LABELS.mat" in capsys.readouterr().err
    assert (
        not (other / "labels" / "journal.jsonl").exists()
        or not read_labels(other / "labels" / "journal.jsonl", "other.actsort", 12).any()
    )


def test_a_conflicted_copy_of_the_journal_is_named_and_merged(tmp_path, capsys, caplog):
    """Two computers labelled one store in a synced folder: the sync left the second one's
    journal beside the first as a "conflicted copy". info and the page name it (its labels are
    not read); import-labels --from it merges its labels by candidate number, never over a
    label the store has; a journal of another store, or the store's own, is refused."""
    from actsort_gpu.ui import handlers as H
    from actsort_gpu.ui import open_workspace
    from actsort_gpu.ui.session import ViewState

    store = make_test_store(tmp_path, n=12, name="s.actsort")
    journal = store / "labels" / "journal.jsonl"
    with Journal(journal) as j:  # both computers' shared history, then this computer's
        j.append("s.actsort", 1, CELL, "ana")
        j.append("s.actsort", 2, NOT_CELL, "ana")
    copy = store / "labels" / "journal (bob's conflicted copy 2026-12-07).jsonl"
    shutil.copy(journal, copy)
    with Journal(journal) as j:
        j.append("s.actsort", 5, CELL, "ana")
    with Journal(copy) as j:  # the other computer's labels since
        j.append("s.actsort", 2, CELL, "bob")  # a disagreement: the store's label stays
        j.append("s.actsort", 8, NOT_CELL, "bob")
    assert main(["info", str(store)]) == 0
    assert "NOT READ: " in capsys.readouterr().out
    with caplog.at_level("WARNING", logger="actsort_gpu.active.learner"):
        assert (
            main(["export", str(store), "--format", "csv", "--out", str(tmp_path / "e.csv")]) == 0
        )
    assert "conflicted copy 2026-12-07).jsonl: another copy of the label journal" in caplog.text
    ws = open_workspace([store])
    _, panels = H.on_load(ws, ViewState())
    ws.close()
    assert "Not read: " in panels.status and "conflicted copy" in panels.status
    assert main(["import-labels", str(store), "--from", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "1 label imported (0 cells, 1 not a cell) of 3" in out and "2 kept" in out
    want = np.zeros(12, np.int8)
    want[[1, 5]], want[[2, 8]] = CELL, NOT_CELL
    np.testing.assert_array_equal(read_labels(journal, "s.actsort", 12), want)
    other = make_test_store(tmp_path / "o", n=12, name="o.actsort")
    with pytest.raises(ValueError, match="only a copy of .*o.actsort's own journal"):
        import_labels(other, copy)
    with pytest.raises(ValueError, match="is the store's own journal"):
        import_labels(store, journal)
