"""How far can a classifier from other animals go on a new one? Zero-shot and 1 %-label variants.

For each of the three ActSort benchmark animals (../shared/data/actsort_benchmark), a model is
trained on the other two (majority labels, ties = "not a cell") and scored on the target the way
``actsort simulate`` scores it: the mean over the target's annotators of the balanced accuracy
against the majority of the other three. Rows:

- zero-shot variants: the product's classifier (L1-logistic, class-balanced, C = 1, features
  z-scored per animal) and alternatives: other normalisations (rank-Gauss, median / IQR), other
  penalties, non-linear models, one classifier per source averaged, every annotator's rows
  instead of the majority, dropping the features whose distribution moved most (KS statistic,
  target vs sources: uses the target's unlabelled features only), covariate-shift importance
  weights from a source-vs-target logistic;
- ``best threshold``: the product's classifier with the decision threshold chosen on the
  target's own truth (an upper bound for any recalibration, not a usable method);
- fine-tuning with 1 % of the target labelled at random by the oracle (20 draws per target: 4
  oracles x 5): the labels alone (L1, C = 1), and a logistic fit on them whose weights are pulled
  to the classifier's by an L2 prior of strength s (s -> infinity is the classifier);
- ``in-animal, all labels``: the issue's reference (an L1-logistic trained on all of one
  annotator's labels of the target, scored as above).

    python scripts/transfer_ceiling.py [--data ../shared/data/actsort_benchmark] [--draws 5]

Prints a markdown table (mean over oracles; for the 1 % rows mean ± SD over the draws).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ANIMALS = ("twophoton_motion", "m1_hemisphere", "m2_hemisphere")
PRIOR_STRENGTHS = (0.1, 1.0, 10.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "actsort_benchmark"))
    ap.add_argument("--draws", type=int, default=5, help="random 1 % draws per oracle")
    ap.add_argument("--fraction", type=float, default=0.01, help="share of the target labelled")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")  # liblinear / sklearn deprecation chatter

    from actsort_gpu.active.sources import load_labelled

    folder = Path(args.data)
    missing = [a for a in ANIMALS if not (folder / f"{a}.mat").exists()]
    if missing:
        print(f"{folder}: missing {', '.join(m + '.mat' for m in missing)}", file=sys.stderr)
        return 1
    animals = {a: load_labelled(folder / f"{a}.mat") for a in ANIMALS}
    rows: dict[str, dict[str, str]] = {}
    for target in ANIMALS:
        for name, value in _target_rows(animals, target, args.draws, args.fraction):
            rows.setdefault(name, {})[target] = value
        print(f"{target}: done", file=sys.stderr, flush=True)
    print("| model | " + " | ".join(ANIMALS) + " |")
    print("|---|" + "---|" * len(ANIMALS))
    for name, per_target in rows.items():
        print(f"| {name} | " + " | ".join(per_target.get(a, "") for a in ANIMALS) + " |")
    return 0


# ----------------------------------------------------------------------------- scoring
def _oracle_truths(annotations: np.ndarray) -> list[np.ndarray]:
    """For each annotator, the majority of the others (ties -> not a cell)."""
    from actsort_gpu.active.sources import majority_labels

    return [majority_labels(np.delete(annotations, a, 0)) for a in range(len(annotations))]


def _score(pred: np.ndarray, truths: list[np.ndarray]) -> float:
    """Mean balanced accuracy of +1 / -1 predictions over the oracles' truths."""
    from actsort_gpu.labels import balanced_accuracy

    return float(np.mean([balanced_accuracy(pred, t) for t in truths]))


def _sign(decision: np.ndarray) -> np.ndarray:
    return np.where(decision > 0, 1, -1).astype(np.int8)


# ----------------------------------------------------------------------------- models
def _l1(c: float = 1.0, balanced: bool = True):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        penalty="l1",
        C=c,
        solver="liblinear",
        class_weight="balanced" if balanced else None,
        max_iter=3000,
        random_state=0,
    )


def _rank_gauss(x: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import QuantileTransformer

    qt = QuantileTransformer(n_quantiles=1000, output_distribution="normal")
    return qt.fit_transform(np.nan_to_num(np.asarray(x, np.float64)))


def _robust(x: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(np.asarray(x, np.float64))
    q1, med, q3 = np.percentile(x, [25, 50, 75], axis=0)
    iqr = np.where(q3 > q1, q3 - q1, 1.0)
    return np.clip((x - med) / iqr, -10, 10)


def _fit_with_prior(x, y, w0, b0, strength):
    """Class-balanced logistic on (x, y) + strength / 2 * ||w - w0||^2 (L-BFGS from w0)."""
    from scipy.optimize import minimize

    from actsort_gpu.active.model_select import balanced_weights

    t = (y > 0).astype(np.float64)
    share = balanced_weights(y) / len(y)  # each class carries half of the mean loss

    def objective(theta):
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        g = share * (1.0 / (1.0 + np.exp(-z)) - t)
        loss = (share * (np.logaddexp(0, z) - t * z)).sum()
        loss += 0.5 * strength * ((w - w0) ** 2).sum()
        return loss, np.concatenate([x.T @ g + strength * (w - w0), [g.sum()]])

    theta = minimize(objective, np.r_[w0, b0], jac=True, method="L-BFGS-B").x
    return theta[:-1], theta[-1]


def _target_rows(animals, target, draws, fraction):
    """(row name, formatted value) pairs for one target animal."""
    from scipy.stats import ks_2samp
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    from actsort_gpu.active.linear import zscore_columns

    sources = [a for a in ANIMALS if a != target]
    tgt = animals[target]
    truths = _oracle_truths(tgt.annotations)

    def stack(transform):
        xs, ys = [], []
        for s in sources:
            y = animals[s].labels("majority")
            xs.append(transform(animals[s].features)[y != 0])
            ys.append(y[y != 0])
        return np.vstack(xs).astype(np.float64), np.concatenate(ys)

    x, y = stack(zscore_columns)
    xt = zscore_columns(tgt.features).astype(np.float64)
    product = _l1().fit(x, y)
    decision = product.decision_function(xt)
    out = [("zero-shot: product (L1, C = 1, z-score)", f"{_score(_sign(decision), truths):.3f}")]

    def zero_shot(name, model, transform=None, fit_kw=None):
        xs, ys = stack(transform) if transform else (x, y)
        model.fit(xs, ys, **(fit_kw or {}))
        pred = model.predict(transform(tgt.features) if transform else xt)
        out.append((f"zero-shot: {name}", f"{_score(pred, truths):.3f}"))

    zero_shot("rank-Gauss per animal", _l1(), _rank_gauss)
    zero_shot("median / IQR per animal", _l1(), _robust)
    zero_shot("L1, C = 0.1", _l1(0.1))
    zero_shot("L2, C = 0.1", LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000))
    zero_shot(
        "gradient boosting",
        HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, class_weight="balanced", random_state=0
        ),
    )
    zero_shot("RBF SVM", SVC(C=1.0, class_weight="balanced"))

    per_source = []
    for s in sources:
        lab = animals[s].labels("majority")
        model = _l1().fit(zscore_columns(animals[s].features)[lab != 0], lab[lab != 0])
        per_source.append(model.decision_function(xt))
    avg = _sign(np.mean(per_source, axis=0))
    out.append(("zero-shot: one classifier per source, averaged", f"{_score(avg, truths):.3f}"))

    xa, ya = [], []
    for s in sources:
        z = zscore_columns(animals[s].features)
        for labels in animals[s].annotations:
            xa.append(z[labels != 0])
            ya.append(labels[labels != 0])
    zero_shot_all = _l1().fit(np.vstack(xa), np.concatenate(ya)).predict(xt)
    out.append(("zero-shot: every annotator's rows", f"{_score(zero_shot_all, truths):.3f}"))

    shift = np.array([ks_2samp(x[:, j], xt[:, j]).statistic for j in range(x.shape[1])])
    for drop in (10, 20):
        keep = np.argsort(shift)[: x.shape[1] - drop]
        pred = _l1().fit(x[:, keep], y).predict(xt[:, keep])
        name = f"zero-shot: without the {drop} most shifted features"
        out.append((name, f"{_score(pred, truths):.3f}"))

    domain = LogisticRegression(C=0.1, max_iter=3000).fit(
        np.vstack([x, xt]), np.r_[np.zeros(len(x)), np.ones(len(xt))]
    )
    p = domain.predict_proba(x)[:, 1]
    weight = np.clip(p / (1 - p) * len(x) / len(xt), 0, 20)
    pos = y > 0
    weight *= np.where(pos, 0.5 / weight[pos].sum(), 0.5 / weight[~pos].sum()) * len(y)
    zero_shot("importance-weighted sources", _l1(balanced=False), fit_kw={"sample_weight": weight})

    shifts = np.linspace(-2, 2, 41)
    best = max(_score(_sign(decision + b), truths) for b in shifts)
    out.append(("best threshold on the target's truth (upper bound)", f"{best:.3f}"))

    w0, b0 = product.coef_[0].astype(np.float64), float(product.intercept_[0])
    k = int(round(fraction * tgt.n))
    scores: dict[str, list[float]] = {}
    for oracle, truth in enumerate(truths):
        labelled = np.flatnonzero(tgt.annotations[oracle] != 0)
        for draw in range(draws):
            idx = np.random.default_rng(100 * oracle + draw).choice(labelled, k, replace=False)
            yk = tgt.annotations[oracle, idx]
            if len(np.unique(yk)) < 2:
                continue
            only = _l1().fit(xt[idx], yk).predict(xt)
            scores.setdefault("labels alone (L1, C = 1)", []).append(_score(only, [truth]))
            for s in PRIOR_STRENGTHS:
                w, b = _fit_with_prior(xt[idx], yk, w0, b0, s)
                name = f"labels + L2 prior to the classifier, s = {s:g}"
                scores.setdefault(name, []).append(_score(_sign(xt @ w + b), [truth]))
    out.append(("1 %: labels per draw", str(k)))
    for name, values in scores.items():
        out.append((f"1 %: {name}", f"{np.mean(values):.3f} ± {np.std(values):.3f}"))

    own = []
    for oracle, truth in enumerate(truths):
        labels = tgt.annotations[oracle]
        model = _l1().fit(xt[labels != 0], labels[labels != 0])
        own.append(_score(model.predict(xt), [truth]))
    out.append(("in-animal, all of one annotator's labels (reference)", f"{np.mean(own):.3f}"))
    return out


if __name__ == "__main__":
    sys.exit(main())
