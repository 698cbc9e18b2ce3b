"""Learner (several datasets, undo/redo, threshold/strategy), portable classifier, store, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from actsort_gpu import CELL, NOT_CELL
from actsort_gpu.active.engine import Policy
from actsort_gpu.active.learner import DatasetInput, Learner
from actsort_gpu.active.transfer import coral_align, load_classifier, save_classifier
from actsort_gpu.labels import JournalLockedError

NAMES = [f"f{i}" for i in range(4)]


def _data(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32) + shift
    y = np.where(x[:, 0] - shift > 0, CELL, NOT_CELL).astype(np.int8)
    return x, y


def test_two_datasets_one_classifier_and_undo(tmp_path):
    (xa, ya), (xb, yb) = _data(120, 0), _data(80, 1, shift=3.0)
    ds = [
        DatasetInput("a", xa, NAMES, "v1", tmp_path / "a" / "journal.jsonl"),
        DatasetInput("b", xb, NAMES, "v1", tmp_path / "b" / "journal.jsonl"),
    ]
    lrn = Learner(ds, Policy(strategy="dcal"), annotator="ana", device="cpu")
    truth = np.r_[ya, yb]
    assert lrn.n == 200 and lrn.locate(130) == (1, 10) and lrn.global_index(1, 10) == 130
    for _ in range(25):
        i = lrn.next_query()[0]
        lrn.label(i, int(truth[i]))
    assert ((lrn.decisions() > 0) == (truth > 0)).mean() > 0.85
    assert {r.strategy for r in lrn.queries[:3]} <= {"random", "dal"}
    last = lrn.queries[-1].candidate
    assert lrn.label_source(last)[0] == "ana"
    before = lrn.labels
    assert lrn.undo() == [last] and lrn.labels[last] == 0
    assert lrn.redo() == [last] and (lrn.labels == before).all()
    lrn.set_threshold(0.9)
    assert (lrn.decisions() > 0).sum() <= (lrn.probabilities() > 0.5).sum()
    lrn.set_strategy("cal")
    assert lrn.strategy == "cal" and len(lrn.next_query(3)) == 3
    assert lrn.audit("uncertain").shape[0] == (lrn.labels == 0).sum()
    with pytest.raises(ValueError, match="label must be"):
        lrn.label(0, 5)
    with pytest.raises(IndexError, match="out of range"):
        lrn.label(10_000, 1)
    journal = [d.journal_path.read_bytes() for d in ds]
    for bad in (1.5, "3", True):  # int() would have labelled candidates 1, 3 and 1
        with pytest.raises(TypeError, match="a candidate index is an integer"):
            lrn.label(bad, 1)
    assert [d.journal_path.read_bytes() for d in ds] == journal
    lrn.label(np.int64(lrn.queries[-1].candidate), 1)  # NumPy integers are indices
    lrn.undo()
    lrn.close()
    # Reopen: labels are the replay of both journals; undo still works across the restart.
    lrn2 = Learner(ds, device="cpu")
    assert (lrn2.labels == before).all()
    assert lrn2.undo() is not None and (lrn2.labels != 0).sum() == (before != 0).sum() - 1
    with pytest.raises(JournalLockedError, match="another process"):
        Learner(ds, device="cpu")
    lrn2.close()


def test_redo_across_datasets_follows_one_timeline(tmp_path):
    """Undo and redo over two stores behave as over one: last undone, first redone, and a new
    label in either store ends what can be redone (an undone label of store b does not come
    back after a label in store a), also after the session is reopened."""
    (xa, _), (xb, _) = _data(30, 0), _data(30, 1)
    ds = [
        DatasetInput("a", xa, NAMES, "v1", tmp_path / "a" / "journal.jsonl"),
        DatasetInput("b", xb, NAMES, "v1", tmp_path / "b" / "journal.jsonl"),
    ]
    lrn = Learner(ds, annotator="ana", device="cpu")
    lrn.label(3, CELL)  # store a
    lrn.label(35, NOT_CELL)  # store b
    assert lrn.undo() == [35] and lrn.undo() == [3]
    assert lrn.redo() == [3] and lrn.redo() == [35] and lrn.redo() is None
    assert lrn.undo() == [35]  # b's label undone, redoable ...
    lrn.label(4, NOT_CELL)  # ... until a new label, here in store a
    assert lrn.redo() is None
    assert lrn.human()[[3, 4, 35]].tolist() == [CELL, NOT_CELL, 0]
    lrn.close()
    again = Learner(ds, annotator="ana", device="cpu")
    assert again.redo() is None and again.human()[35] == 0
    assert again.undo() == [4] and again.redo() == [4]  # redo of a's own undo still works
    again.close()


def test_feature_count_mismatch_rejected():
    with pytest.raises(ValueError, match="different feature counts"):
        Learner([DatasetInput("a", np.zeros((5, 3))), DatasetInput("b", np.zeros((5, 4)))])


def test_portable_classifier_round_trip_and_fine_tune(tmp_path):
    x, y = _data(150, 2)
    lrn = Learner([DatasetInput("src", x, NAMES, "v1")], Policy(balance="none"), device="cpu")
    for i in range(40):
        lrn.label(i, int(y[i]))
    path = save_classifier(tmp_path / "clf", lrn)
    assert path.suffix == ".npz"
    clf = load_classifier(path)
    assert clf.features.shape == (40, 4) and clf.feature_names == NAMES
    np.testing.assert_allclose(clf.weights, lrn._engine.clf.theta_.numpy())
    assert clf.threshold == lrn.threshold
    # Fine-tune on a new animal: pretrained rows alone already classify well.
    xn, yn = _data(100, 3)
    tgt = Learner(
        [DatasetInput("new", xn, NAMES, "v1")],
        Policy(balance="none", transfer="discard"),  # the paper-era rule
        device="cpu",
        pretrained=clf,
    )
    tgt.label(0, int(yn[0]))
    assert ((tgt.decisions() > 0) == (yn > 0)).mean() > 0.85
    assert tgt._engine.pre_active.sum() == 39  # one pretrained row discarded
    tgt_c = Learner(
        [DatasetInput("new2", xn, NAMES, "v1")], device="cpu", pretrained=clf, coral=True
    )
    assert tgt_c._engine.x.shape == (100, 4)
    # Mismatching feature sets are refused with a clear message.
    with pytest.raises(ValueError, match="feature set version"):
        Learner([DatasetInput("n", xn, NAMES, "v2")], pretrained=clf)
    with pytest.raises(ValueError, match="feature sets differ"):
        Learner([DatasetInput("n", xn, ["a", "b", "c", "d"], "v1")], pretrained=clf)


def test_load_classifier_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not an actsort-gpu classifier"):
        load_classifier(bad)
    obj = tmp_path / "obj.npz"
    np.savez(obj, features=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not an actsort-gpu classifier"):
        load_classifier(obj)
    (tmp_path / "notes.npz").write_text("my notes")  # NumPy would speak of pickles
    with pytest.raises(ValueError, match="notes.npz: not a NumPy .npz file .*classifier file"):
        load_classifier(tmp_path / "notes.npz")
    (tmp_path / "cut.npz").write_bytes(bad.read_bytes()[:40])
    with pytest.raises(ValueError, match="cut.npz: not a readable .npz file"):
        load_classifier(tmp_path / "cut.npz")


def test_save_without_both_classes_refused(tmp_path):
    x, _ = _data(20, 4)
    lrn = Learner([DatasetInput("s", x, NAMES, "v1")], device="cpu")
    lrn.label(0, CELL)
    with pytest.raises(ValueError, match="at least one cell and one non-cell"):
        save_classifier(tmp_path / "c.npz", lrn)


def test_coral_known_answer():
    # Diagonal covariances: each column is scaled by sqrt((var_t + 1) / (var_s + 1)).
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20000, 2)) * [1.0, 3.0]
    tgt = rng.normal(size=(20000, 2)) * [2.0, 1.0]
    out = coral_align(src, tgt)
    vs, vt = src.var(0, ddof=1), tgt.var(0, ddof=1)
    scale = np.sqrt((vt + 1) / (vs + 1))
    np.testing.assert_allclose(out, src * scale, rtol=0.05, atol=0.05)
    # General case: cov(out) + A'A = C_t - I + A'A ... i.e. A' C_s A = C_t exactly.
    src = rng.normal(size=(3000, 3)) @ np.array([[1, 0.4, 0], [0, 2, 0], [0.3, 0, 1.0]])
    tgt = rng.normal(size=(3000, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0], [0, 0, 2.0]])
    out = coral_align(src, tgt).astype(np.float64)
    a = np.linalg.lstsq(src, out, rcond=None)[0]
    cs = np.cov(src, rowvar=False) + np.eye(3)
    np.testing.assert_allclose(a.T @ cs @ a, np.cov(tgt, rowvar=False) + np.eye(3), atol=1e-3)


def test_learner_open_store(tmp_path):
    from actsort_gpu.store import SortStore

    x, y = _data(60, 5)
    store = SortStore.create(tmp_path / "s.actsort")
    store.write_array("features/matrix", x, dims=("candidates", "features"))
    store.array("features/matrix").attrs.update({"names": NAMES, "version": "v1"})
    store.write_array("truth/labels", y, dims=("candidates",))
    lrn = Learner.open(tmp_path / "s.actsort", annotator="ana", device="cpu")
    lrn.label(3, CELL)
    lrn.close()
    assert (tmp_path / "s.actsort" / "labels" / "journal.jsonl").is_file()
    from actsort_gpu.active.simulate import load_labelled_features

    name, xf, ann, names = load_labelled_features(tmp_path / "s.actsort")
    assert xf.shape == (60, 4) and ann.shape == (1, 60) and names == ["truth"]


def test_simulate_cli_small_subset(tmp_path, shared_data):
    import h5py

    from actsort_gpu.cli import main

    src = shared_data / "actsort_benchmark" / "twophoton_motion.mat"
    with h5py.File(src, "r") as f:
        x = f["metrics"][()][:400]
        labs = {k: f[k + "_choices"][()].ravel()[:400] for k in ("cheetah", "dragon", "koala")}
    csv = tmp_path / "sub.csv"
    header = [f"m{i}" for i in range(x.shape[1])] + [f"label_{k}" for k in labs]
    rows = np.column_stack([x] + list(labs.values()))
    np.savetxt(csv, rows, delimiter=",", header=",".join(header), comments="", fmt="%.6g")
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(
        [
            "simulate",
            "--features",
            str(csv),
            "--oracle",
            "all",
            "--strategies",
            "random,cal,faithful-dcal,default",
            "--budgets",
            "2,5",
            "--repeats",
            "1",
            "--seed",
            "0",
            "--threshold",
            "0.65",
            "--json",
            str(out),
            "--plot",
            str(png),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and png.stat().st_size > 1000
    res = json.loads(out.read_text())
    assert res["dataset"] == "sub" and res["n_candidates"] == 400
    assert set(res["human"]) >= {"ba", "tpr", "tnr"}
    assert set(res["results"]) == {"random", "cal", "faithful-dcal", "default"}
    for r in res["results"].values():
        assert r["budgets_pct"] == [2.0, 5.0]
        for k in ("ba", "ba_sd", "tpr", "tnr", "auc"):
            assert len(r[k]) == 2 and all(0 <= v <= 1 for v in r[k])
    assert res["policies"]["random"]["threshold"] == 0.65
    assert main(["simulate", "--features", str(csv), "--oracle", "nobody", "--json", str(out)]) == 1


def test_labels_follow_a_renamed_store(tmp_path):
    """A store's journal lives in its folder: after the folder is renamed, every label given
    under the old name is still its label (the learner, export's table, train's sources), a
    relabel under the new name records the right previous label, and undo crosses names."""
    import shutil

    from ui_fixtures import make_test_store

    from actsort_gpu.active.sources import load_labelled
    from actsort_gpu.export import label_table

    old = make_test_store(tmp_path, n=12, name="day1.actsort")
    lrn = Learner.open([old], annotator="ana", device="cpu")
    lrn.label(2, CELL)
    lrn.label(5, NOT_CELL)
    lrn.close()
    new = tmp_path / "mouse3_day1.actsort"
    shutil.move(old, new)
    lrn = Learner.open([new], annotator="ana", device="cpu")
    assert lrn.labels[2] == CELL and lrn.labels[5] == NOT_CELL
    assert lrn.label_source(2)[0] == "ana"
    lrn.label(2, NOT_CELL)  # relabel under the new name
    assert json.loads(lrn.datasets[0].journal_path.read_text().splitlines()[-1])["previous"] == 1
    assert lrn.undo() == [2] and lrn.labels[2] == CELL
    assert lrn.undo() == [5] and lrn.labels[5] == 0  # an action written under the old name
    lrn.redo()
    lrn.close()
    assert label_table(new)["human_label"][[2, 5]].tolist() == [CELL, NOT_CELL]
    assert load_labelled(new, labels="journal").labels()[[2, 5]].tolist() == [CELL, NOT_CELL]
