"""Classifiers that carry over between animals: ``actsort train``, the zero-shot start, the
fine-tuning policy, ``simulate --classifier`` / ``--leave-one-out``, and the page's read-out."""

import json

import numpy as np
import pytest

from actsort_gpu import CELL, NOT_CELL
from actsort_gpu.active.engine import Engine, Policy
from actsort_gpu.active.learner import Learner
from actsort_gpu.active.linear import zscore_columns
from actsort_gpu.active.simulate import leave_one_out, simulate
from actsort_gpu.active.sources import load_labelled, majority_labels
from actsort_gpu.active.transfer import domain_auc, load_classifier, train_classifier
from actsort_gpu.cli import main
from actsort_gpu.store import SortStore

NAMES = [f"f{k}" for k in range(6)]


def _animal(seed, n=300, *, shift=0.0, flip=False):
    """(features (n, 6), truth (n,)): the first column separates the classes; ``shift`` moves
    every feature (another microscope), ``flip`` reverses the relation (a classifier trained
    elsewhere is then wrong here)."""
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n) < 0.4, CELL, NOT_CELL).astype(np.int8)
    x = rng.normal(size=(n, len(NAMES))).astype(np.float32) + shift
    x[:, 0] += (-2.5 if flip else 2.5) * (truth == CELL)
    return x, truth


def _store(path, x, *, version="test-v1", names=NAMES):
    store = SortStore.create(path)
    store.update_attrs(n_candidates=len(x), n_frames=10, height=8, width=8)
    store.write_array(
        "features/matrix",
        x,
        dims=["candidates", "features"],
        attrs={"names": list(names), "version": version},
    )
    return path


def _labelled_store(path, seed, n_labels=80):
    x, truth = _animal(seed)
    _store(path, x)
    learner = Learner.open([path], annotator="ana", device="cpu")
    learner.label_many(range(n_labels // 2), int(CELL))  # wrong on purpose, then corrected
    for i in range(n_labels):
        learner.label(i, int(truth[i]))
    learner.close()
    return path, truth


def _csv(path, x, ann):
    header = NAMES + [f"label_a{k}" for k in range(len(ann))]
    rows = [",".join(header)]
    rows += [
        ",".join([*(f"{v:.5f}" for v in x[i]), *(str(a[i]) for a in ann)]) for i in range(len(x))
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_majority_ties_count_as_not_cell_and_unknown_stays_unknown():
    ann = np.array([[1, 1, -1, 0], [1, -1, -1, 0]], np.int8)
    np.testing.assert_array_equal(majority_labels(ann), [1, -1, -1, 0])


def test_train_from_two_stores_with_journals(tmp_path, capsys):
    a, _ = _labelled_store(tmp_path / "a.actsort", 1)
    b, _ = _labelled_store(tmp_path / "b.actsort", 2)
    assert main(["train", str(a), str(b), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "a.actsort: 80 labelled rows" in out and "b.actsort: 80 labelled rows" in out
    assert "cross-validated balanced accuracy" in out and "applied to a.actsort" in out
    clf = load_classifier(tmp_path / "c.npz")
    assert clf.features.shape == (160, 6) and clf.feature_names == NAMES
    assert [s["name"] for s in clf.sources] == ["a.actsort", "b.actsort"]
    assert clf.meta["id"] == clf.id and clf.meta["cv_ba"] > 0.85
    # the rows are each store's z-scored features of its labelled candidates
    x = SortStore.open(a).feature_matrix().values
    np.testing.assert_allclose(clf.features[:80], zscore_columns(x)[:80], atol=1e-5)
    # an existing file is replaced only with --force, and only if it is a classifier
    assert main(["train", str(a), "--out", str(tmp_path / "c.npz")]) != 0
    assert "exists; pass --force" in capsys.readouterr().err
    (tmp_path / "notes.npz").write_text("my notes")
    assert main(["train", str(a), "--out", str(tmp_path / "notes.npz"), "--force"]) != 0
    err = capsys.readouterr().err
    assert "notes.npz: not a NumPy .npz file" in err and "actsort-gpu classifier" in err
    assert (tmp_path / "notes.npz").read_text() == "my notes"
    # a store nobody labelled yet: said so, with what to do
    x, _ = _animal(3)
    fresh = _store(tmp_path / "fresh.actsort", x)
    assert main(["train", str(fresh), "--out", str(tmp_path / "f.npz")]) != 0
    assert "its journal holds no human label yet" in capsys.readouterr().err


def test_train_from_benchmark_mat(shared_data, tmp_path, capsys):
    mat = shared_data / "actsort_benchmark" / "twophoton_motion.mat"
    assert main(["train", str(mat), "--labels", "cheetah", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "twophoton_motion: 5276 labelled rows" in out
    clf = load_classifier(tmp_path / "c.npz")
    assert clf.feature_version == "actsort76-matlab" and len(clf.feature_names) == 76
    assert clf.meta["labels"] == "cheetah" and clf.meta["cv_ba"] > 0.8
    assert main(["train", str(mat), "--labels", "nobody", "--out", str(tmp_path / "d")]) != 0
    assert "no annotator 'nobody'" in capsys.readouterr().err


def test_mixed_feature_sets_refused_naming_the_file(tmp_path, capsys):
    a, _ = _labelled_store(tmp_path / "a.actsort", 1)
    x, _ = _animal(3)
    other = _store(tmp_path / "other.actsort", x, version="test-v2")
    with pytest.raises(ValueError, match="other.actsort: feature set 'test-v2'"):
        train_classifier([load_labelled(a), load_labelled(other)])
    clf, _ = train_classifier([load_labelled(a)])
    with pytest.raises(ValueError, match="feature set version"):
        Learner.open([other], device="cpu", pretrained=clf)
    csv = _csv(tmp_path / "t.csv", x, [np.ones(len(x), np.int8)])
    args = ["simulate", "--features", str(csv), "--classifier", str(clf.save(tmp_path / "c"))]
    assert main([*args, "--json", str(tmp_path / "r.json")]) != 0
    assert "feature set version 'test-v1'" in capsys.readouterr().err


def test_budget_zero_is_the_classifier_alone(tmp_path):
    xa, ta = _animal(1)
    xb, tb = _animal(2)
    ann = np.stack([ta, ta, tb])  # three "annotators" of animal b (majority: ta)
    clf, _ = train_classifier(
        [
            load_labelled(_csv(tmp_path / "a.csv", xa, [ta])),
            load_labelled(_csv(tmp_path / "c.csv", xb, [tb])),
        ]
    )
    target = load_labelled(_csv(tmp_path / "b.csv", xb, ann))
    res = simulate(
        target.features,
        target.annotations,
        target.annotators,
        ["default"],
        [0],
        repeats=1,
        classifier=clf,
    )
    z = zscore_columns(target.features)
    own = np.where(clf.predict_proba(z) > 0.5, 1, -1)
    from actsort_gpu.active.simulate import _majority, binary_metrics

    expected = np.mean(
        [binary_metrics(own, _majority(np.delete(ann, o, 0)))["ba"] for o in range(3)]
    )
    assert res["results"]["default"]["ba"][0] == pytest.approx(expected, abs=1e-12)
    assert res["classifier"]["id"] == clf.id
    assert [s["name"] for s in res["classifier"]["sources"]] == ["a", "c"]


def test_select_falls_back_to_the_labels_when_the_classifier_is_wrong():
    xs, ts = _animal(1, n=400)
    xt, tt = _animal(2, n=400, flip=True)  # the relation is reversed on the new animal
    pre = (zscore_columns(xs), ts, None)
    eng = Engine(zscore_columns(xt), Policy(), seed=0, pretrained=pre)
    ba0 = _ba(eng.decisions(), tt)
    assert ba0 < 0.2 and eng.model_in_use == "classifier"
    for _ in range(80):  # 20 random probes among them: >= 4 of each class, a clear gain
        i = eng.next_query(1)[0]
        eng.set_label(i, int(tt[i]))
    assert eng.model_in_use in ("labels", "union")
    assert _ba(eng.decisions(), tt) > 0.85
    scores = eng.prequential_scores()
    assert scores["classifier"] < 0.5  # the classifier was wrong on the queries
    assert max(scores["labels"], scores["union"]) >= scores["classifier"] + 0.05


def test_select_keeps_a_good_classifier():
    xs, ts = _animal(1, n=400)
    xt, tt = _animal(2, n=400, shift=0.5)
    eng = Engine(zscore_columns(xt), Policy(), seed=0, pretrained=(zscore_columns(xs), ts, None))
    ba0 = _ba(eng.decisions(), tt)
    for _ in range(40):
        i = eng.next_query(1)[0]
        eng.set_label(i, int(tt[i]))
    assert _ba(eng.decisions(), tt) >= ba0 - 0.02


def _ba(pred, truth):
    return 0.5 * ((pred[truth > 0] > 0).mean() + (pred[truth < 0] < 0).mean())


def test_domain_auc_sees_a_shift():
    xs, _ = _animal(1, n=400)
    xt, _ = _animal(2, n=400)
    xshift, _ = _animal(3, n=400, shift=1.5)
    assert domain_auc(xs, xt) < 0.65
    assert domain_auc(xs, xshift) > 0.9


def test_leave_one_out_over_three_files(tmp_path):
    files = []
    for k in range(3):
        x, t = _animal(k + 1)
        files.append(_csv(tmp_path / f"animal{k}.csv", x, [t, t, t]))
    out = leave_one_out(
        files,
        strategies=["default", "default+noclf"],
        budgets_pct=[0, 5],
        repeats=1,
        json_out=tmp_path / "loo.json",
    )
    assert [r["dataset"] for r in out["leave_one_out"]] == ["animal0", "animal1", "animal2"]
    for res in out["leave_one_out"]:
        names = [s["name"] for s in res["classifier"]["sources"]]
        assert res["dataset"] not in names and len(names) == 2
        assert res["results"]["default"]["ba"][0] > 0.85  # zero-shot
        assert res["results"]["default+noclf"]["classifier"] is False
        assert len(res["results"]["default"]["ba_unlabelled"]) == 2
    assert json.loads((tmp_path / "loo.json").read_text())["files"] == [str(f) for f in files]


def test_page_shows_decisions_before_the_first_label(tmp_path):
    from actsort_gpu.ui import handlers as H
    from actsort_gpu.ui.session import ViewState
    from actsort_gpu.ui.workspace import Workspace
    from tests.ui_fixtures import make_test_store

    src = make_test_store(tmp_path, n=60, name="src.actsort", seed=1)
    truth = SortStore.open(src).truth_labels()
    learner = Learner.open([src], annotator="ana", device="cpu")
    for i in range(40):
        learner.label(i, int(truth[i]))
    learner.close()
    clf_path, _ = tmp_path / "c.npz", None
    main(["train", str(src), "--out", str(clf_path)])
    new = make_test_store(tmp_path, n=60, name="new.actsort", seed=2)
    ws = Workspace.open([new], annotator="bob", classifier=clf_path)
    try:
        st, panels = H.on_load(ws, ViewState())
        proba, dec = ws.model(0)
        assert proba is not None and (dec == CELL).any() and (dec == NOT_CELL).any()
        assert "pretrained classifier alone" in panels.progress
        new_truth = SortStore.open(new).truth_labels()
        st, panels = H.on_label(ws, st, int(new_truth[st.current]))
        assert "agreed with" in panels.progress and "of your last 1 labels" in panels.progress
    finally:
        ws.close()


def test_simulator_reads_embeddings_and_outside_labels(tmp_path, capsys):
    """A store whose embeddings carry the label and whose features do not: '+emb' learns,
    '+feat' does not; labels come from an outside .npy."""
    rng = np.random.default_rng(0)
    n = 300
    truth = np.where(rng.random(n) < 0.4, CELL, NOT_CELL).astype(np.int8)
    path = _store(tmp_path / "s.actsort", rng.normal(size=(n, 6)).astype(np.float32))
    emb = rng.normal(size=(n, 4)).astype(np.float32)
    emb[:, 0] += 3.0 * (truth == CELL)
    SortStore.open(path, "r+").write_array(
        "embeddings/matrix", emb, attrs={"names": [f"emb{k:02d}" for k in range(4)]}
    )
    np.save(tmp_path / "gt.npy", truth)
    args = ["simulate", "--features", str(path), "--labels", str(tmp_path / "gt.npy")]
    args += ["--strategies", "default+feat,default+emb,default+feat+emb,default"]
    assert (
        main([*args, "--budgets", "20", "--repeats", "2", "--json", str(tmp_path / "r.json")]) == 0
    )
    res = json.loads((tmp_path / "r.json").read_text())
    ba = {k: v["ba_unlabelled"][0] for k, v in res["results"].items()}
    assert ba["default+emb"] > 0.9 and ba["default+feat+emb"] > 0.85 and ba["default+feat"] < 0.65
    # the product chooses per run: here the embeddings win the cross-validation in every run
    assert res["policies"]["default"]["inputs"] == "auto" and ba["default"] > 0.9
    assert res["results"]["default"]["inputs_in_use"] == [{"both": 2}]
    assert res["policies"]["default+feat+emb"]["input_set"] == "feat+emb"
    assert res["policies"]["default+feat"]["input_set"] == "feat"
    assert "label_leaks" not in res  # the embeddings separate well, not perfectly
    # labels that one feature column gives away are named (Suite2p's iscell as --labels)
    features = rng.normal(size=(n, 6)).astype(np.float32)
    features[:, 2] = truth == CELL
    leak = _store(tmp_path / "leak.actsort", features)
    args_leak = ["simulate", "--features", str(leak), "--labels", str(tmp_path / "gt.npy")]
    out = tmp_path / "leak.json"
    assert main([*args_leak, "--budgets", "20", "--repeats", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["label_leaks"] == {NAMES[2]: 1.0}
    assert f"warning: feature {NAMES[2]} alone separates the labels (ROC AUC 1.000)" in (
        capsys.readouterr().out
    )
    np.save(tmp_path / "bad.npy", truth[:10])
    args[4] = str(tmp_path / "bad.npy")
    assert main([*args, "--json", str(tmp_path / "r2.json")]) != 0
    assert "bad.npy: labels of shape (10,), expected (300,)" in capsys.readouterr().err
    (tmp_path / "notes.npy").write_text("cell, cell, not")
    args[4] = str(tmp_path / "notes.npy")
    assert main([*args, "--json", str(tmp_path / "r3.json")]) != 0
    assert "notes.npy: not a NumPy .npy file" in capsys.readouterr().err


def test_stores_of_one_folder_name_are_told_apart(tmp_path, capsys):
    """Two animals' stores named alike (m1/plane0.actsort, m2/plane0.actsort): train reports
    both (the leave-one-out figures were keyed by folder name and one was lost), the learner
    and the page open both, and each journal's lines still name its own folder."""
    a, _ = _labelled_store(tmp_path / "m1" / "plane0.actsort", 1)
    b, _ = _labelled_store(tmp_path / "m2" / "plane0.actsort", 2)
    assert main(["train", str(a), str(b), "--out", str(tmp_path / "c.npz")]) == 0
    out = capsys.readouterr().out
    assert "m1/plane0.actsort: 80 labelled rows" in out
    assert "applied to m1/plane0.actsort" in out and "applied to m2/plane0.actsort" in out
    clf = load_classifier(tmp_path / "c.npz")
    assert sorted(clf.meta["loso_ba"]) == ["m1/plane0.actsort", "m2/plane0.actsort"]
    assert (
        main(
            [
                "train",
                str(a),
                str(tmp_path / "m1" / ".." / "m1" / "plane0.actsort"),
                "--out",
                str(tmp_path / "d.npz"),
            ]
        )
        != 0
    )
    assert "the same recording is given twice" in capsys.readouterr().err

    from actsort_gpu.labels import Journal
    from actsort_gpu.ui import open_workspace
    from tests.ui_fixtures import make_test_store

    learner = Learner.open([a, b], annotator="bo", device="cpu")
    try:
        assert [d.name for d in learner.datasets] == ["m1/plane0.actsort", "m2/plane0.actsort"]
        n_a = int(learner.offsets[1])
        before = learner.labels.copy()
        learner.label(n_a + 250, int(NOT_CELL))  # candidate 250 of the second store
        assert learner.labels[n_a + 250] == NOT_CELL
        assert (learner.labels[:n_a] == before[:n_a]).all()
        assert learner.history(1)[-1].candidate == n_a + 250
        assert learner.undo() == [n_a + 250] and learner.labels[n_a + 250] == before[n_a + 250]
    finally:
        learner.close()
    with Journal(b / "labels" / "journal.jsonl", read_only=True) as j:
        last = j.events[-2]
    assert (last.dataset, last.candidate, last.annotator) == ("plane0.actsort", 250, "bo")
    with Journal(a / "labels" / "journal.jsonl", read_only=True) as j:
        assert all(ev.annotator == "ana" for ev in j.events)
    # the page opens both and shows them apart
    pages = [make_test_store(tmp_path / m, n=40, name="plane0.actsort") for m in ("p1", "p2")]
    ws = open_workspace(pages, annotator="bo")
    try:
        assert ws.names == ["p1/plane0.actsort", "p2/plane0.actsort"]
    finally:
        ws.close()
