"""Headless ``actsort apply``: predictions written, feature sets checked, human labels kept."""

import numpy as np
import pytest

from actsort_gpu import CELL, NOT_CELL
from actsort_gpu.active.learner import Learner
from actsort_gpu.active.transfer import save_classifier
from actsort_gpu.apply import apply_classifier
from actsort_gpu.cli import main
from actsort_gpu.store import SortStore

NAMES = [f"f{k}" for k in range(6)]


def _feature_store(path, seed, *, names=NAMES, version="test-v1", n=200):
    """A store holding only a feature matrix whose first column separates the classes."""
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n) < 0.4, CELL, NOT_CELL).astype(np.int8)
    x = rng.normal(size=(n, len(names))).astype(np.float32)
    x[:, 0] += 2.5 * (truth == CELL)
    store = SortStore.create(path)
    store.update_attrs(n_candidates=n, n_frames=10, height=8, width=8)
    store.write_array(
        "features/matrix",
        x,
        dims=["candidates", "features"],
        attrs={"names": list(names), "version": version},
    )
    store.write_array("candidates/source_index", np.arange(n), dims=["candidates"])
    return path, truth


@pytest.fixture
def classifier(tmp_path):
    path, truth = _feature_store(tmp_path / "train.actsort", seed=0)
    learner = Learner.open([path], annotator="t", device="cpu")
    for i in range(60):
        learner.label(i, int(truth[i]))
    out = save_classifier(tmp_path / "clf.npz", learner)
    learner.close()
    return out


def test_apply_writes_predictions_that_match_truth(tmp_path, classifier):
    path, truth = _feature_store(tmp_path / "new.actsort", seed=1)
    [result] = apply_classifier(classifier, [path])
    store = SortStore.open(path)
    assert store.stage_status("apply") == "complete"
    np.testing.assert_array_equal(store.read("predictions/final"), result.final)
    p = store.read("predictions/probability")
    assert p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    ba = 0.5 * (
        (result.decision[truth == CELL] == CELL).mean()
        + (result.decision[truth == NOT_CELL] == NOT_CELL).mean()
    )
    assert ba > 0.85  # the planted feature separates the classes


def test_threshold_override_moves_decisions(tmp_path, classifier):
    path, _ = _feature_store(tmp_path / "new.actsort", seed=1)
    low = apply_classifier(classifier, [path], threshold=0.1)[0].n_cells
    high = apply_classifier(classifier, [path], threshold=0.9)[0].n_cells
    assert low > high
    with pytest.raises(ValueError, match="threshold"):
        apply_classifier(classifier, [path], threshold=1.5)


def test_mismatched_feature_set_refused_before_writing(tmp_path, classifier):
    good, _ = _feature_store(tmp_path / "good.actsort", seed=1)
    bad, _ = _feature_store(tmp_path / "bad.actsort", seed=2, names=[f"g{k}" for k in range(6)])
    with pytest.raises(ValueError, match="bad.actsort.*feature"):
        apply_classifier(classifier, [good, bad])
    assert not SortStore.open(good).has("predictions/final")  # nothing written anywhere


def test_human_labels_win_and_fine_tune(tmp_path, classifier):
    path, truth = _feature_store(tmp_path / "new.actsort", seed=1)
    learner = Learner.open([path], annotator="ana", device="cpu")
    learner.label(0, NOT_CELL if truth[0] == CELL else CELL)  # a deliberate disagreement
    learner.label(1, int(truth[1]))
    learner.close()
    [result] = apply_classifier(classifier, [path])
    assert result.n_human == 2
    assert result.final[0] == (NOT_CELL if truth[0] == CELL else CELL)


def test_cli_apply(tmp_path, classifier, capsys):
    path, _ = _feature_store(tmp_path / "new.actsort", seed=1)
    assert main(["apply", "--classifier", str(classifier), str(path)]) == 0
    assert "cells of 200 candidates" in capsys.readouterr().out
    assert main(["apply", "--classifier", str(tmp_path / "missing.npz"), str(path)]) == 1
    assert "missing.npz" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_apply_export_writes_the_table_of_the_predictions(tmp_path, classifier, fmt, capsys):
    import csv

    paths = [_feature_store(tmp_path / f"s{k}.actsort", seed=k + 1)[0] for k in range(2)]
    learner = Learner.open([paths[0]], annotator="ana", device="cpu")
    learner.label(3, CELL)
    learner.close()
    assert main(["apply", "--classifier", str(classifier), *map(str, paths), "--export", fmt]) == 0
    out = capsys.readouterr().out
    for path in paths:
        table = path / "exports" / f"labels.{fmt}"
        assert str(table) in out
        store = SortStore.open(path)
        if fmt == "csv":
            with open(table, newline="") as fh:
                rows = list(csv.DictReader(fh))
            final = np.array([int(r["final_label"]) for r in rows])
            proba = np.array([float(r["probability"]) for r in rows])
            human = np.array([int(r["human_label"]) for r in rows])
            who = [r["annotator"] for r in rows]
        else:
            import pyarrow.parquet as pq

            t = pq.read_table(table)
            final, proba = t["final_label"].to_numpy(), t["probability"].to_numpy()
            human, who = t["human_label"].to_numpy(), t["annotator"].to_pylist()
        assert len(final) == 200
        n_human = 1 if path == paths[0] else 0
        assert (human != 0).sum() == n_human and (who[3] == "ana") == bool(n_human)
        np.testing.assert_array_equal(final, store.read("predictions/final"))
        np.testing.assert_allclose(proba, store.read("predictions/probability"), atol=1e-6)
    with pytest.raises(ValueError, match="export must be one of"):
        apply_classifier(classifier, paths, export="classifier")
    # later, in another format: `actsort export --predictions` writes the same decisions
    later = tmp_path / "later.csv"
    assert (
        main(["export", str(paths[1]), "--format", "csv", "--predictions", "--out", str(later)])
        == 0
    )
    with open(later, newline="") as fh:
        final = np.array([int(r["final_label"]) for r in csv.DictReader(fh)])
    np.testing.assert_array_equal(final, SortStore.open(paths[1]).read("predictions/final"))
