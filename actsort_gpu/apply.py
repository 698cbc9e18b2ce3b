"""Headless classification: apply a portable classifier to many sort stores without a page.

For each store: check the feature set against the classifier's (refusing a mismatch before
anything is written), z-score the features per store as in training, compute P(cell) and the
decision at the threshold, and write ``predictions/`` into the store. Human labels already in a
store's journal are respected: they fine-tune the classifier by the same policy as the page
(``active.transfer`` in the config: by default the model with the best prequential accuracy on
those labels among the classifier, the classifier + the labels, and the labels alone; without
labels, the classifier's own predictions) and win over the model in ``final``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import schema
from .labels import final_labels

log = logging.getLogger(__name__)

__all__ = ["apply_classifier", "AppliedStore"]


@dataclass
class AppliedStore:
    """What ``apply_classifier`` wrote into one store (arrays are (N,))."""

    path: Path
    probability: np.ndarray  # float32 P(cell)
    decision: np.ndarray  # int8 +1 / -1 at the threshold
    final: np.ndarray  # int8: human label where given, else the decision
    n_human: int
    export_path: Path | None = None

    @property
    def n_cells(self) -> int:
        return int((self.final > 0).sum())


def apply_classifier(
    classifier_path: str | Path,
    store_paths,
    *,
    threshold: float | None = None,
    export: str | None = None,
    config=None,
    device: str = "auto",
) -> list[AppliedStore]:
    """Classify every candidate of ``store_paths`` with the classifier file at ``classifier_path``.

    Parameters
    ----------
    classifier_path : a portable classifier (``.npz`` from the page or ``actsort export
        --format classifier``).
    store_paths : sort stores with ``features/matrix`` (and ``embeddings/matrix`` when the
        classifier was trained with embeddings).
    threshold : decision threshold on P(cell); default the classifier's own.
    export : also export each store's table: 'csv' | 'parquet' | 'suite2p' | 'nwb' (default
        locations of ``actsort export``).
    config : ``ActiveConfig`` (default: its defaults): the fine-tuning policy (``transfer``).
    device : 'auto' | 'cpu' | 'cuda' for the classifier (torch; ``backend.resolve_backend``).

    Returns one :class:`AppliedStore` per store, in order. Writes ``predictions/probability``
    (N,) float32, ``predictions/decision`` and ``predictions/final`` (N,) int8 with the
    classifier's path, hash and threshold in their attributes.
    """
    from .active.engine import product_policy
    from .active.learner import Learner, dataset_from_store
    from .active.transfer import load_classifier
    from .backend import resolve_backend
    from .export import TABLE_FORMATS, export_predictions
    from .store import SortStore

    backend = resolve_backend(device, uses="torch")
    classifier_path = Path(classifier_path)
    clf = load_classifier(classifier_path)
    thr = clf.threshold if threshold is None else float(threshold)
    if not 0.0 < thr < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {thr}")
    if export is not None and export not in TABLE_FORMATS:
        raise ValueError(f"export must be one of {TABLE_FORMATS}, got {export!r}")
    policy = product_policy(config)
    with_emb = "+emb:" in clf.feature_version  # the classifier's inputs include embeddings
    paths = [
        Path(p) for p in ([store_paths] if isinstance(store_paths, (str, Path)) else store_paths)
    ]
    if not paths:
        raise ValueError("apply: no sort store given")
    # Validate every store before writing into any of them.
    datasets = []
    for path in paths:
        ds = dataset_from_store(path, use_embeddings=with_emb)
        try:
            clf.check_compatible(ds.input_names(with_emb), ds.input_version(with_emb))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc} (classifier {classifier_path})") from None
        datasets.append(ds)
    digest = hashlib.sha256(classifier_path.read_bytes()).hexdigest()[:16]
    results = []
    for path, ds in zip(paths, datasets):
        t0 = time.perf_counter()
        learner = Learner([ds], policy, device=backend.name, pretrained=clf, read_only=True)
        human = learner.human()
        proba = np.asarray(learner.probabilities(), dtype=np.float32)
        decision = np.where(proba > thr, 1, -1).astype(np.int8)
        final = final_labels(human, decision)
        store = SortStore.open(path, "r+")
        store.begin_stage(
            "apply",
            {"classifier": str(classifier_path), "threshold": thr, **backend.provenance()},
        )
        attrs = {
            "classifier": str(classifier_path),
            "classifier_sha256": digest,
            "threshold": thr,
            "n_human_labels": int((human != 0).sum()),
        }
        store.write_array(
            schema.PREDICTED_PROBABILITY, proba, dims=["candidates"], units="P(cell)", attrs=attrs
        )
        store.write_array(
            schema.PREDICTED_DECISION,
            decision,
            dims=["candidates"],
            units="+1 cell / -1 not",
            attrs=attrs,
        )
        store.write_array(
            schema.PREDICTED_FINAL,
            final,
            dims=["candidates"],
            units="+1 cell / -1 not",
            attrs=attrs,
        )
        store.finish_stage(
            "apply",
            time.perf_counter() - t0,
            n_cells=int((final > 0).sum()),
            n_candidates=len(final),
            device=backend.name,
        )
        result = AppliedStore(path, proba, decision, final, int((human != 0).sum()))
        if export is not None:
            result.export_path = export_predictions(path, export)
        log.info(
            "%s: %d of %d candidates are cells (%d human labels, threshold %.2f; on %s)",
            path,
            result.n_cells,
            len(final),
            result.n_human,
            thr,
            backend.name,
        )
        results.append(result)
    return results
