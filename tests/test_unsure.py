"""The "unsure" label (key U, issue 15): journalled like a label, never a training label, out of
the queries and of the accuracy estimate, listed in a review queue, exported as its own column."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ui_fixtures import make_test_store

from actsort_gpu import CELL, NOT_CELL, UNLABELLED, UNSURE
from actsort_gpu.active.learner import DatasetInput, Learner
from actsort_gpu.labels import LABEL_VALUES, read_labels
from actsort_gpu.ui import handlers as H
from actsort_gpu.ui import open_workspace
from actsort_gpu.ui.session import STRATEGY_CHOICES, ViewState


def _learner(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(n) % 2 == 0, CELL, NOT_CELL)
    x = rng.normal(0, 1, (n, 5)) + 2.0 * y[:, None]
    return Learner([DatasetInput("d", x.astype(np.float32))], device="cpu"), y


def test_code_is_a_journal_value():
    assert UNSURE not in (CELL, NOT_CELL, UNLABELLED) and UNSURE in LABEL_VALUES


def test_unsure_is_not_a_training_label_and_not_queried():
    learner, y = _learner()
    for i in range(8):
        learner.label(i, int(y[i]))
    x_before, y_before = learner.training_rows()
    p_before = learner.probabilities()
    learner.label(8, UNSURE)  # was unlabelled: no change for the classifier
    assert learner.human()[8] == UNLABELLED and learner.unsure()[8]
    x_after, y_after = learner.training_rows()
    assert np.array_equal(y_after, y_before) and np.array_equal(x_after, x_before)
    np.testing.assert_allclose(learner.probabilities(), p_before)
    # a labelled candidate marked unsure leaves the training rows
    learner.label(0, UNSURE)
    assert learner.human()[0] == UNLABELLED and len(learner.training_rows()[1]) == 7
    # never queried, never audited, but listed in its own queue (earliest marked first)
    for strategy in ("random", "cal", "dcal", "ordered"):
        learner.set_strategy(strategy)
        for _ in range(3):
            assert not set(learner.next_query(5)) & {0, 8}
    for mode in ("cells", "non-cells", "uncertain"):
        assert not set(learner.audit(mode).tolist()) & {0, 8}
    assert learner.audit("unsure").tolist() == [8, 0]
    # a real label later clears it; the unsure one stays browsable in the history
    assert 8 in [learner.locate(i)[1] for i in learner.labelled_order(0)]
    learner.label(8, CELL)
    assert not learner.unsure()[8] and learner.human()[8] == CELL
    assert learner.label_source(0) is not None  # who marked it unsure
    with pytest.raises(ValueError, match="unsure"):
        learner.label(1, 3)


def test_queries_skip_unsure_even_when_the_engine_prefers_them():
    learner, y = _learner(n=30)
    for i in range(20, 30):  # past the cold start (random, then DAL)
        learner.label(i, int(y[i]))
    learner.set_strategy("ordered")  # the engine picks the lowest unlabelled index
    assert learner.next_query(1) == [0]
    for i in range(5):
        learner.label(i, UNSURE)
    assert learner.next_query(1) == [5]
    learner.MAX_UNSURE_SKIP = 2  # past the skip budget: the first open candidates in order
    assert learner.next_query(2) == [5, 6]


def test_unsure_survives_a_restart_and_training_readers_see_zero(tmp_path):
    path = make_test_store(tmp_path, n=30)
    ws = open_workspace([path], annotator="ana")
    st, _ = H.on_load(ws, ViewState())
    first = st.current
    st, p = H.on_label(ws, st, UNSURE)
    assert "unsure" in p.status and st.current != first
    assert ws.unsure(0)[first] and ws.human(0)[first] == UNLABELLED
    ws.close()
    lines = [json.loads(x) for x in (path / "labels" / "journal.jsonl").read_text().splitlines()]
    assert lines[-1]["label"] == UNSURE and lines[-1]["candidate"] == first
    # readers that want training labels (simulate, transfer, embed) see 0
    assert read_labels(path / "labels" / "journal.jsonl", path.name, 30)[first] == 0
    ws = open_workspace([path], annotator="ana")
    try:
        assert ws.unsure(0)[first]
        st, p = H.on_load(ws, ViewState())
        assert "1 unsure" in p.status and "unsure (not used for training): 1" in p.progress
        # undo after the restart: back to unlabelled, out of the queue
        st, p = H.on_undo(ws, st)
        assert not ws.unsure(0)[first] and "unlabelled" in p.status
        st, p = H.on_redo(ws, st)
        assert ws.unsure(0)[first] and "unsure" in p.status
    finally:
        ws.close()


def test_unsure_excluded_from_accuracy_estimate_and_reviewed_later(tmp_path):
    path = make_test_store(tmp_path, n=40)
    ws = open_workspace([path], annotator="ana")
    try:
        truth = ws.stores[0].store.read("truth/labels")
        st, _ = H.on_load(ws, ViewState())
        for _ in range(10):
            st, _ = H.on_label(ws, st, int(truth[st.current]))
        before = ws.trackers[0].state()
        marked = []
        for _ in range(3):
            marked.append(st.current)
            st, p = H.on_label(ws, st, UNSURE)
            assert st.current not in marked
        after = ws.trackers[0].state()
        assert (after.n_scored, after.n_labels) == (before.n_scored, before.n_labels)
        assert "not used for training" in p.status
        # the review queue walks the unsure candidates, earliest first
        st, p = H.on_strategy(ws, st, "Review: unsure candidates", 0.5)
        assert STRATEGY_CHOICES["Review: unsure candidates"] == "audit:unsure"
        st, _ = H.on_next(ws, st)
        assert st.current == marked[0]
        assert "Unsure" in H.render_panels(ws, st).info
        st, _ = H.on_label(ws, st, CELL)  # decided: leaves the queue
        assert st.current == marked[1] and ws.human(0)[marked[0]] == CELL
        assert sorted(np.flatnonzero(ws.unsure(0)).tolist()) == sorted(marked[1:])
    finally:
        ws.close()


def test_export_writes_unsure_as_its_own_column(tmp_path):
    from actsort_gpu.export import export_labels, label_table

    path = make_test_store(tmp_path, n=30)
    learner = Learner.open([path], annotator="ana", device="cpu")
    truth = np.asarray(learner.datasets[0].features[:, 0] > 0)  # any two classes
    for i in range(6):
        learner.label(i, CELL if truth[i] else NOT_CELL)
    learner.label(6, UNSURE)
    learner.close()
    t = label_table(path)
    assert t["unsure"][6] == 1 and t["human_label"][6] == 0 and t["unsure"].sum() == 1
    assert t["final_label"][6] == t["decision"][6]  # the model decides an unsure candidate
    assert t["annotator"][6] == "ana"
    rows = list(csv.DictReader(export_labels(path, "csv", tmp_path / "t.csv").open()))
    assert rows[6]["unsure"] == "1" and rows[6]["human_label"] == "0"
    assert rows[0]["unsure"] == "0" and float(rows[0]["probability"]) >= 0
