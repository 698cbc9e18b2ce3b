"""Portable classifier files and fine-tuning from other animals (reference section 6).

A portable classifier is a ``.npz`` written with ``allow_pickle=False`` (no code execution on
load) holding: the training rows (z-scored per source dataset, float32) and their labels, the
feature names and feature-set version, the weights [coef..., intercept] (float64), the decision
threshold and a small JSON header (format version, policy, provenance). Loading it as a
``pretrained`` set into a ``Learner`` combines its rows with the new labels by the paper-era
rule (each new human label discards the most conflicting pretrained row; ``Engine``), with
optional CORAL alignment of the new features to the pretrained ones.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "PortableClassifier",
    "save_classifier",
    "load_classifier",
    "coral_align",
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


def save_classifier(path, learner) -> Path:
    """Write the learner's labelled rows, model and threshold to ``path`` (.npz)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    theta = learner.weights()
    if theta is None:
        raise ValueError(
            f"{path}: nothing to save: the classifier needs at least one cell and "
            "one non-cell label"
        )
    x, y = learner.training_rows()
    d0 = learner.datasets[0]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "policy": asdict(learner.policy),
        "datasets": [d.name for d in learner.datasets],
        "n_rows": int(len(y)),
    }
    np.savez_compressed(
        path,
        features=x,
        labels=y,
        feature_names=np.array(d0.feature_names, dtype=str),
        feature_version=np.array(d0.feature_version, dtype=str),
        weights=theta,
        threshold=np.array(learner.policy.threshold, dtype=np.float64),
        meta=np.array(json.dumps(meta), dtype=str),
    )
    return path


def load_classifier(path) -> PortableClassifier:
    """Read a file written by ``save_classifier`` (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: classifier file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
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
