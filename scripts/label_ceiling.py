"""How well can any classifier do on a store with ALL its labels, and which single inputs separate
the classes? The reference for what the active learner can reach at a few % of labels.

For each ``STORE:LABELS.npy`` pair (labels (N,) +1 / -1, 0 = unknown and left out) and each input
set (features, embeddings, both; each column z-scored):

- 5-fold stratified cross-validation, ``--repeats`` shuffles: balanced accuracy (BA) of an
  L2- and an L1-logistic regression (class-balanced) at the best C of a grid (chosen after the
  fact: an upper bound for a linear model) and of an RBF support-vector machine (same);
- the single features with the largest |AUC - 0.5| against the labels, with the median footprint
  area of each class when the store has footprints (real Suite2p false positives are small
  fragments; synthetic ones are not unless made with ``--fragments``).

    python scripts/label_ceiling.py W/neurofinder_crop.actsort:W/gt_label_pm.npy \
        W/eval_2p_2000/recording.actsort:W/truth_pm.npy [--repeats 5] [--top 6]

Prints markdown tables. The stores need ``actsort features`` (and ``actsort embed`` for the
embedding rows).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="+", metavar="STORE:LABELS.npy")
    ap.add_argument("--repeats", type=int, default=5, help="cross-validation shuffles")
    ap.add_argument("--top", type=int, default=6, help="single features to list")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")  # liblinear convergence chatter

    from actsort_gpu.active.sources import load_labelled

    print("| dataset | inputs | L2-logistic | L1-logistic | RBF SVM |\n|---|---|---|---|---|")
    singles = []
    for pair in args.pairs:
        store, sep, labels = pair.rpartition(":")
        if not sep:
            print(f"{pair}: expected STORE:LABELS.npy", file=sys.stderr)
            return 1
        data = load_labelled(store, labels_file=labels)
        y = data.annotations[0]
        known = y != 0
        y = y[known] > 0
        blocks = {"features": data.features[known]}
        if data.embeddings is not None:
            blocks["embeddings"] = data.embeddings[known]
            blocks["both"] = np.hstack([blocks["features"], blocks["embeddings"]])
        name = f"{Path(store).name} / {Path(labels).name} (N={known.sum()}, {y.sum()} cells)"
        for which, x in blocks.items():
            cells = [_best_cv(x, y, model, args.repeats) for model in ("l2", "l1", "rbf")]
            print(
                f"| {name} | {which} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in cells) + " |"
            )
        singles.append((name, _single_features(data, known, y, args.top), _areas(store, known, y)))
    print("\n| dataset | strongest single features (AUC) | median area px (cells / others) |")
    print("|---|---|---|")
    for name, top, area in singles:
        print(f"| {name} | {top} | {area} |")
    return 0


def _best_cv(x, y, model: str, repeats: int) -> tuple[float, float]:
    """(mean, SD over the shuffles) of the 5-fold CV BA at the best C of ``C_GRID`` (x 10 for
    the SVM, gamma "scale")."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x = np.nan_to_num(np.asarray(x, np.float64))
    best = (-1.0, 0.0)
    for c in C_GRID:
        if model == "rbf":
            make = lambda c=c: SVC(C=c * 10, kernel="rbf", class_weight="balanced")
        else:
            make = lambda c=c: LogisticRegression(
                C=c, penalty=model, solver="liblinear", class_weight="balanced", max_iter=2000
            )
        scores = []
        for r in range(repeats):
            pred = np.zeros(len(y), bool)
            for train, test in StratifiedKFold(5, shuffle=True, random_state=r).split(x, y):
                fit = make_pipeline(StandardScaler(), make()).fit(x[train], y[train])
                pred[test] = fit.predict(x[test])
            scores.append(balanced_accuracy_score(y, pred))
        if np.mean(scores) > best[0]:
            best = (float(np.mean(scores)), float(np.std(scores)))
    return best


def _single_features(data, known, y, top: int) -> str:
    from sklearn.metrics import roc_auc_score

    x = np.nan_to_num(data.features[known].astype(np.float64))
    auc = np.array([roc_auc_score(y, col) if np.ptp(col) > 0 else 0.5 for col in x.T])
    order = np.argsort(-np.abs(auc - 0.5))[:top]
    return ", ".join(f"{data.feature_names[i]} {auc[i]:.2f}" for i in order)


def _areas(store, known, y) -> str:
    from actsort_gpu.store import SortStore, StoreError

    try:
        fp = SortStore.open(store).footprints()
    except StoreError:  # a store made from features alone
        return "n/a"
    area = np.diff(fp.indptr)[known]
    return f"{np.median(area[y]):.0f} / {np.median(area[~y]):.0f}"


if __name__ == "__main__":
    sys.exit(main())
