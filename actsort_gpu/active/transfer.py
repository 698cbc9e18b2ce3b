"""Portable classifier files, training them from labelled recordings, and fine-tuning from
other animals (reference section 6).

A portable classifier is a ``.npz`` written with ``allow_pickle=False`` (no code execution on
load) holding: the training rows (z-scored per source dataset, float32) and their labels, the
feature names and feature-set version, the weights [coef..., intercept] (float64), the decision
threshold and a small JSON header (format version, policy, provenance). Loading it as a
``pretrained`` set into a ``Learner`` combines its rows with the new labels by the paper-era
rule (each new human label discards the most conflicting pretrained row; ``Engine``), with
optional CORAL alignment of the new features to the pretrained ones.

:func:`train_classifier` builds one from several labelled recordings (``actsort train``):
features z-scored per recording, an L1-logistic (class-balanced, lam = 1 / n: scikit-learn
``C = 1``) on all their labelled rows, with its cross-validated balanced accuracy and, given two
or more recordings, the leave-one-recording-out balanced accuracy (the honest estimate of how
it will do on a new animal).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..labels import balanced_accuracy
from .linear import L1Logistic, zscore_columns
from .model_select import balanced_weights
from .sources import LabelledFeatures

log = logging.getLogger(__name__)

__all__ = [
    "PortableClassifier",
    "save_classifier",
    "classifier_path",
    "load_classifier",
    "coral_align",
    "train_classifier",
    "domain_auc",
    "TrainingReport",
    "FORMAT",
    "FORMAT_VERSION",
]

FORMAT = "actsort-gpu-classifier"
FORMAT_VERSION = 1


@dataclass
class PortableClassifier:
    features: np.ndarray  # (M, F) float32 training rows (z-scored per dataset)
    labels: np.ndarray  # (M,) int8 +1/-1
    feature_names: list[str]
    feature_version: str
    weights: np.ndarray  # (F + 1,) float64: coef..., intercept
    threshold: float
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Short content hash (12 hex) of the weights and training rows: names the classifier
        in simulation results and provenance."""
        h = hashlib.sha256(np.ascontiguousarray(self.weights, np.float64).tobytes())
        h.update(np.ascontiguousarray(self.features, np.float32).tobytes())
        h.update(np.ascontiguousarray(self.labels, np.int8).tobytes())
        return h.hexdigest()[:12]

    @property
    def sources(self) -> list[dict]:
        """The recordings it was trained on: ``{name, path, n_rows, n_cells, n_not_cells}``
        (empty for a classifier saved from a page session before this was recorded)."""
        return list(self.meta.get("sources", []))

    def logits(self, features_z: np.ndarray) -> np.ndarray:
        """(N,) float64 x . coef + intercept of z-scored features (N, F)."""
        z = np.asarray(features_z, dtype=np.float64)
        return z @ self.weights[:-1] + self.weights[-1]

    def predict_proba(self, features_z: np.ndarray) -> np.ndarray:
        """(N,) float64 P(cell) of z-scored features (N, F): the classifier alone."""
        return 1.0 / (1.0 + np.exp(-self.logits(features_z)))

    def save(self, path) -> Path:
        """Write the ``.npz`` (``allow_pickle=False`` format; :func:`classifier_path`), whole
        (``outputs.replace_whole``); returns the path written."""
        from ..outputs import replace_whole

        return replace_whole(classifier_path(path), self._write)

    def _write(self, path: Path) -> None:
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.meta}
        meta["id"] = self.id
        np.savez_compressed(
            path,
            features=np.asarray(self.features, np.float32),
            labels=np.asarray(self.labels, np.int8),
            feature_names=np.array(self.feature_names, dtype=str),
            feature_version=np.array(self.feature_version, dtype=str),
            weights=np.asarray(self.weights, np.float64),
            threshold=np.array(self.threshold, dtype=np.float64),
            meta=np.array(json.dumps(meta), dtype=str),
        )

    def check_compatible(self, feature_names: list[str], feature_version: str) -> None:
        """Raise ValueError unless the data's feature set is the classifier's."""
        if feature_version and self.feature_version and feature_version != self.feature_version:
            raise ValueError(
                f"pretrained classifier was trained on feature set version "
                f"{self.feature_version!r}, the data has {feature_version!r}: recompute the "
                "features with the same version or train a new classifier"
            )
        if feature_names and self.feature_names and list(feature_names) != list(self.feature_names):
            missing = sorted(set(self.feature_names) - set(feature_names))[:5]
            extra = sorted(set(feature_names) - set(self.feature_names))[:5]
            raise ValueError(
                f"pretrained classifier expects {len(self.feature_names)} features "
                f"{'in another order' if not missing and not extra else ''}"
                f"(missing here: {missing}, unknown to it: {extra}); the data has "
                f"{len(feature_names)}: the feature sets differ"
            )
        n_feat = self.features.shape[1]
        if feature_names and len(feature_names) != n_feat:
            raise ValueError(
                f"pretrained classifier has {n_feat} features, the data {len(feature_names)}"
            )


def classifier_path(path) -> Path:
    """Where a classifier named ``path`` is written: with the ``.npz`` suffix (added or put in
    place of another)."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_suffix(".npz")


def save_classifier(path, learner) -> Path:
    """Write the learner's labelled rows, model and threshold to ``path`` (.npz, whole:
    :meth:`PortableClassifier.save`); ValueError naming ``path`` while it is untrained."""
    theta = learner.weights()
    if theta is None:
        raise ValueError(
            f"{path}: nothing to save: the classifier needs at least one cell and "
            "one non-cell label"
        )
    x, y = learner.training_rows()
    meta = {
        "policy": asdict(learner.policy),
        "datasets": [d.name for d in learner.datasets],
        "sources": [
            {"name": d.name, "path": str(d.journal_path or ""), **_class_counts(lab)}
            for d, lab in zip(learner.datasets, _per_dataset(learner))
        ],
        "n_rows": int(len(y)),
        "labels": "journal",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    clf = PortableClassifier(
        x, y, learner.feature_names, learner.feature_version, theta, learner.policy.threshold, meta
    )
    return clf.save(path)


def _per_dataset(learner) -> list[np.ndarray]:
    return [learner.human(d) for d in range(len(learner.datasets))]


def _class_counts(labels: np.ndarray) -> dict:
    labels = np.asarray(labels)
    return {
        "n_rows": int((labels != 0).sum()),
        "n_cells": int((labels > 0).sum()),
        "n_not_cells": int((labels < 0).sum()),
    }


def load_classifier(path) -> PortableClassifier:
    """Read a file written by ``save_classifier`` (never unpickles)."""
    from ..io.numpy_files import load_numpy

    path = Path(path)
    with load_numpy(path, "an actsort-gpu classifier file", kind="npz") as z:
        try:
            data = {k: z[k] for k in z.files}
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: not an actsort-gpu classifier file ({exc})") from exc
    need = {
        "features",
        "labels",
        "feature_names",
        "feature_version",
        "weights",
        "threshold",
        "meta",
    }
    if not need <= set(data):
        raise ValueError(
            f"{path}: not an actsort-gpu classifier file (missing {sorted(need - set(data))})"
        )
    meta = json.loads(str(data["meta"]))
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format {meta.get('format')!r} v{meta.get('format_version')}, "
            f"expected {FORMAT!r} v<={FORMAT_VERSION}"
        )
    x = np.asarray(data["features"], dtype=np.float32)
    y = np.asarray(data["labels"], dtype=np.int8)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"{path}: features {x.shape} and labels {y.shape} disagree")
    return PortableClassifier(
        x,
        y,
        [str(s) for s in data["feature_names"]],
        str(data["feature_version"]),
        np.asarray(data["weights"], dtype=np.float64),
        float(data["threshold"]),
        meta,
    )


def coral_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """CORAL (ActSort utils/align_features.m): X_s C_s^-1/2 C_t^1/2 with C = cov + I and no
    re-centring; source (N, F), target (M, F). Returns float32 (N, F).

    The reference writes the product transposed, (C_s^-1/2 C_t^1/2)^T; that equals this only
    when C_s and C_t commute, and only this form maps the source covariance onto the target's
    (Sun et al. 2016), so we use it (docs/differences.md).
    """
    xs = np.asarray(source, dtype=np.float64)
    xt = np.asarray(target, dtype=np.float64)
    cs = np.cov(xs, rowvar=False) + np.eye(xs.shape[1])
    ct = np.cov(xt, rowvar=False) + np.eye(xt.shape[1])

    def mpow(c, power):
        w, v = np.linalg.eigh(c)
        return (v * np.clip(w, 1e-12, None) ** power) @ v.T

    a = mpow(cs, -0.5) @ mpow(ct, 0.5)
    return (xs @ a).astype(np.float32)


# ---------------------------------------------------------------------- training
@dataclass
class TrainingReport:
    """What ``train_classifier`` learned from: rows per source and class, and its accuracy.

    sources : per recording ``{name, path, n_rows, n_cells, n_not_cells}``
    cv_ba : 5-fold stratified cross-validated balanced accuracy on all rows
    loso_ba : per recording, the balanced accuracy on it of a classifier trained on the other
        recordings (empty with one recording): what to expect on a new animal
    """

    sources: list[dict]
    cv_ba: float
    loso_ba: dict[str, float]

    def lines(self) -> list[str]:
        out = [
            f"  {s['name']}: {s['n_rows']} labelled rows ({s['n_cells']} cells, "
            f"{s['n_not_cells']} not cells)"
            for s in self.sources
        ]
        out.append(f"cross-validated balanced accuracy (5-fold, own rows): {self.cv_ba:.3f}")
        for name, ba in self.loso_ba.items():
            out.append(f"trained on the others, applied to {name}: balanced accuracy {ba:.3f}")
        return out


def _fit(x: np.ndarray, y: np.ndarray, lambda_scale: float) -> np.ndarray:
    """[coef..., intercept] of the class-balanced L1-logistic on rows x (n, F), y +1 / -1."""
    model = L1Logistic(lambda_scale=lambda_scale, tol=1e-7)
    model.fit(x, np.asarray(y, np.float64), balanced_weights(y))
    return model.theta_.cpu().numpy().astype(np.float64)


def _predict(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(x, np.float64) @ theta[:-1] + theta[-1] > 0, 1, -1)


def _cv_ba(x: np.ndarray, y: np.ndarray, lambda_scale: float, folds: int = 5) -> float:
    rng = np.random.default_rng(0)
    fold = np.empty(len(y), dtype=np.int64)
    for c in (1, -1):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % folds
    pred = np.zeros(len(y), dtype=np.int64)
    for f in range(folds):
        tr = fold != f
        pred[~tr] = _predict(_fit(x[tr], y[tr], lambda_scale), x[~tr])
    return balanced_accuracy(pred, y)


def train_classifier(
    sources: list[LabelledFeatures],
    *,
    labels: str = "majority",
    lambda_scale: float = 1.0,
    threshold: float = 0.5,
) -> tuple[PortableClassifier, TrainingReport]:
    """One portable classifier from labelled recordings (``actsort train``).

    sources : recordings with the same feature names and version (a mismatch is refused naming
        the file); each recording's features are z-scored on its own (ddof 1, as the learner
        does), so the rows of different animals are comparable.
    labels : ``"majority"`` (ties count as not a cell, as the protocol's ground truth) or an
        annotator's name; candidates without a label (0) are left out.
    lambda_scale : L1 weight x n (1 = scikit-learn ``C = 1``)
    threshold : decision threshold stored with it (0.5: class-balanced weights make it the
        balanced-accuracy threshold)
    """
    if not sources:
        raise ValueError("train: no labelled recording given")
    first = sources[0]
    for src in sources[1:]:
        if src.feature_names != first.feature_names or src.feature_version != first.feature_version:
            raise ValueError(
                f"{src.path}: feature set {src.feature_version!r} ({len(src.feature_names)} "
                f"columns) differs from {first.path}'s {first.feature_version!r} "
                f"({len(first.feature_names)} columns): train on recordings whose features were "
                "computed the same way"
            )
    xs, ys, counts = [], [], []
    for src in sources:
        y = src.labels(labels)
        keep = y != 0
        if not keep.any():
            hint = (
                ": its journal holds no human label yet (label with `actsort sort`; a synthetic "
                "store's truth: --labels truth)"
                if Path(src.path).is_dir() and not src.annotations.any()
                else f" ({labels} labels)"
            )
            raise ValueError(f"{src.path}: no labelled candidate{hint}")
        xs.append(zscore_columns(src.features)[keep])
        ys.append(y[keep].astype(np.int8))
        counts.append({"name": src.name, "path": str(src.path), **_class_counts(y)})
    x, y = np.concatenate(xs), np.concatenate(ys)
    if (y > 0).sum() < 5 or (y < 0).sum() < 5:
        raise ValueError(
            f"train: {int((y > 0).sum())} cells and {int((y < 0).sum())} not cells labelled in "
            f"{[str(s.path) for s in sources]}; each class needs at least 5"
        )
    theta = _fit(x, y.astype(np.float64), lambda_scale)
    loso = {}
    if len(sources) > 1:
        for k, src in enumerate(sources):
            rest = [i for i in range(len(sources)) if i != k]
            xr = np.concatenate([xs[i] for i in rest])
            yr = np.concatenate([ys[i] for i in rest]).astype(np.float64)
            if (yr > 0).any() and (yr < 0).any():
                loso[src.name] = balanced_accuracy(
                    _predict(_fit(xr, yr, lambda_scale), xs[k]), ys[k]
                )
    report = TrainingReport(counts, _cv_ba(x, y.astype(np.float64), lambda_scale), loso)
    meta = {
        "sources": counts,
        "labels": labels,
        "n_rows": int(len(y)),
        "lambda_scale": float(lambda_scale),
        "balance": "weights",
        "cv_ba": report.cv_ba,
        "loso_ba": loso,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    clf = PortableClassifier(
        x.astype(np.float32),
        y,
        list(first.feature_names),
        first.feature_version,
        theta,
        float(threshold),
        meta,
    )
    return clf, report


def domain_auc(source: np.ndarray, target: np.ndarray, *, max_rows: int = 4000) -> float:
    """Cross-validated ROC AUC of an L1-logistic telling ``target`` rows (N, F) from ``source``
    rows (M, F), both z-scored as the learner uses them: 0.5 when the new recording looks like
    the training recordings, near 1 when a linear model separates them (domain shift).
    At most ``max_rows`` rows of each are used (a seeded subsample)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    parts = []
    for rows in (np.asarray(source, np.float32), np.asarray(target, np.float32)):
        take = rng.choice(len(rows), min(len(rows), max_rows), replace=False)
        parts.append(rows[np.sort(take)])
    x = np.concatenate(parts)
    y = np.r_[-np.ones(len(parts[0])), np.ones(len(parts[1]))]
    fold = rng.permutation(len(y)) % 3
    score = np.zeros(len(y))
    for f in range(3):
        tr = fold != f
        theta = _fit(x[tr], y[tr], 1.0)
        score[~tr] = x[~tr].astype(np.float64) @ theta[:-1] + theta[-1]
    return float(roc_auc_score(y, score))
