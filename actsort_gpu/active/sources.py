"""Labelled feature sets: what ``actsort simulate`` replays and ``actsort train`` learns from.

One reader for the three kinds of input, so that the simulator and the trainer see the same
features, names and labels:

- an ActSort benchmark ``.mat`` (MATLAB v7.3: ``metrics`` (N, 76) or (76, N) and one
  ``<annotator>_choices`` (N,) per annotator, +1 / -1); its columns are ActSort's 76 features in
  the reference order, computed by the MATLAB app (feature-set version ``actsort76-matlab``);
- a CSV: feature columns (named by the header) and ``label_<annotator>`` columns (+1 / -1, 0 or
  empty = unknown), feature-set version ``csv``;
- a sort store: ``features/matrix`` with its names and version; labels from the store's label
  journal (``labels="journal"``: the human labels given on the page) or from
  ``truth/annotators`` / ``truth/labels`` (``labels="truth"``: synthetic recordings and
  benchmarks).

A store's learned embeddings (``embeddings/matrix``) come along when present, so the simulator
can measure them; labels for a store can also come from an outside ``.npy`` file
(``labels_file``: (N,) or (n_annotators, N), +1 / -1, 0 = unknown).

Label codes: +1 cell, -1 not a cell, 0 unknown (never labelled; excluded from training and
scoring).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import CELL, NOT_CELL, UNLABELLED, schema

__all__ = [
    "LabelledFeatures",
    "load_labelled",
    "load_labelled_many",
    "majority_labels",
    "MATLAB_FEATURE_VERSION",
]

# Feature-set version of matrices computed by ActSort's MATLAB app (the benchmark files): the
# same 76 columns as ours, computed with its known bugs (docs/differences.md), so a classifier
# trained on them is not applied to our matrices silently.
MATLAB_FEATURE_VERSION = "actsort76-matlab"
LABEL_SOURCES = ("auto", "journal", "truth")


def majority_labels(annotations: np.ndarray) -> np.ndarray:
    """(N,) int8 majority vote of (n_annotators, N) labels +1 / -1 / 0 (0 = no vote).

    A tie counts as "not a cell", as the protocol's ground truth does (MATLAB ``mode`` returns
    the smaller value; docs/actsort_reference.md section 7); a candidate nobody labelled stays 0.
    """
    ann = np.asarray(annotations, dtype=np.int64)
    votes = ann.sum(0)
    out = np.where(votes > 0, CELL, NOT_CELL).astype(np.int8)
    out[(ann != 0).sum(0) == 0] = UNLABELLED
    return out


@dataclass
class LabelledFeatures:
    """Features and labels of one recording (animal).

    name : short name (the file's stem or the store's folder name)
    path : where it came from
    features : (N, F) float32, raw (not z-scored)
    feature_names : F column names; feature_version : feature-set version string
    annotations : (n_annotators, N) int8 +1 / -1 / 0
    annotators : n_annotators names
    embeddings : (N, D) float32 learned embeddings of a sort store, or None
    embeddings_supervised : their encoder was trained with labels (``active.embeddings_start``)
    """

    name: str
    path: Path
    features: np.ndarray
    feature_names: list[str]
    feature_version: str
    annotations: np.ndarray
    annotators: list[str]
    embeddings: np.ndarray | None = None
    embeddings_supervised: bool = False

    @property
    def n(self) -> int:
        return self.features.shape[0]

    def labels(self, which: str = "majority") -> np.ndarray:
        """(N,) int8 +1 / -1 / 0: ``"majority"`` (ties -> -1, see :func:`majority_labels`) or
        one annotator's labels by name."""
        if which == "majority":
            return majority_labels(self.annotations)
        if which not in self.annotators:
            raise ValueError(
                f"{self.path}: no annotator {which!r}; expected 'majority' or one of "
                f"{self.annotators}"
            )
        return self.annotations[self.annotators.index(which)].astype(np.int8)


def load_labelled(path, *, labels: str = "auto", labels_file=None) -> LabelledFeatures:
    """Read a ``.mat``, a CSV or a sort store (module docstring).

    labels : for a sort store, where the labels come from: ``"journal"`` (the page's human
        labels), ``"truth"`` (``truth/annotators`` or ``truth/labels``) or ``"auto"`` (the
        truth when the store has one, else the journal). Ignored for files, whose labels are
        their annotator columns.
    labels_file : an ``.npy`` of (N,) or (n_annotators, N) labels +1 / -1 / 0 replacing the
        input's own (e.g. human-drawn cells matched to a store's candidates)
    """
    path = Path(path)
    if labels not in LABEL_SOURCES:
        raise ValueError(f"labels must be one of {LABEL_SOURCES}, got {labels!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: features file not found")
    if path.is_dir():
        data = _load_store(path, "journal" if labels_file is not None else labels)
    elif path.suffix.lower() == ".mat":
        data = _load_mat(path)
    elif path.suffix.lower() == ".csv":
        data = _load_csv(path)
    else:
        raise ValueError(f"{path}: expected an ActSort .mat, a .csv or a sort store directory")
    if labels_file is not None:
        data.annotations, data.annotators = _labels_file(Path(labels_file), data.n)
    return data


def load_labelled_many(paths, *, labels: str = "auto") -> list[LabelledFeatures]:
    """:func:`load_labelled` for each path, each file or store once, named apart in reports
    (``m1/plane0.actsort`` beside ``m2/plane0.actsort``: ``naming.distinct_names``)."""
    from ..naming import check_distinct_paths, distinct_names

    paths = list(paths)
    check_distinct_paths(paths)
    data = [load_labelled(p, labels=labels) for p in paths]
    names = distinct_names(paths, [d.name for d in data])
    return [replace(d, name=name) for d, name in zip(data, names)]


def _labels_file(path: Path, n: int) -> tuple[np.ndarray, list[str]]:
    """(n_annotators, N) int8 labels and names from an ``.npy`` (never unpickles)."""
    from ..io.numpy_files import load_numpy

    lab = np.asarray(load_numpy(path, "a labels file"))
    shape = lab.shape
    if lab.ndim == 1:
        lab = lab[None, :]
    if lab.ndim != 2 or lab.shape[1] != n:
        raise ValueError(
            f"{path}: labels of shape {shape}, expected ({n},) or "
            f"(n_annotators, {n}) (one per candidate)"
        )
    if lab.dtype.kind not in "biuf" or not np.isin(lab, (CELL, NOT_CELL, UNLABELLED)).all():
        raise ValueError(f"{path}: labels must be +1 (cell), -1 (not a cell) or 0 (unknown)")
    names = [path.stem] if len(lab) == 1 else [f"{path.stem}{k}" for k in range(len(lab))]
    return lab.astype(np.int8), names


def _load_mat(path: Path) -> LabelledFeatures:
    import h5py

    from ..features.registry import ACTSORT_NAMES

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a MATLAB v7.3 (HDF5) file ({exc})") from exc
    with f:
        if "metrics" not in f:
            raise ValueError(f"{path}: no 'metrics' dataset (found {sorted(f.keys())})")
        x = np.asarray(f["metrics"][()], dtype=np.float32)
        names = sorted(k[: -len("_choices")] for k in f if k.endswith("_choices"))
        if not names:
            raise ValueError(f"{path}: no '*_choices' annotator labels")
        labs = [np.asarray(f[n + "_choices"][()]).ravel() for n in names]
    n = labs[0].size
    if x.shape[0] != n and x.shape[1] == n:
        x = x.T
    if x.shape[0] != n:
        raise ValueError(f"{path}: metrics {x.shape} does not match {n} labels")
    columns = list(ACTSORT_NAMES) if x.shape[1] == len(ACTSORT_NAMES) else _numbered(x.shape[1])
    ann = np.sign(np.nan_to_num(np.stack(labs))).astype(np.int8)
    return LabelledFeatures(path.stem, path, x, columns, MATLAB_FEATURE_VERSION, ann, names)


def _numbered(n: int) -> list[str]:
    return [f"feature{k + 1}" for k in range(n)]


def _load_csv(path: Path) -> LabelledFeatures:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header and at least one row")
    header = rows[0]
    lab_cols = [i for i, h in enumerate(header) if h.startswith("label_")]
    feat_cols = [i for i, h in enumerate(header) if not h.startswith("label_")]
    if not lab_cols:
        raise ValueError(f"{path}: no 'label_<annotator>' column in the header")
    bad = [k + 2 for k, row in enumerate(rows[1:]) if len(row) != len(header)]
    if bad:
        raise ValueError(
            f"{path}: line {bad[0]} has another number of columns than the header ({len(header)})"
        )
    try:
        data = np.array([[v if v.strip() else "nan" for v in row] for row in rows[1:]], float)
    except ValueError as exc:
        raise ValueError(f"{path}: a value is not a number ({exc})") from None
    ann = np.sign(np.nan_to_num(data[:, lab_cols].T)).astype(np.int8)
    return LabelledFeatures(
        path.stem,
        path,
        data[:, feat_cols].astype(np.float32),
        [header[i] for i in feat_cols],
        "csv",
        ann,
        [header[i][len("label_") :] for i in lab_cols],
    )


def _load_store(path: Path, labels: str) -> LabelledFeatures:
    from ..labels import read_labels
    from ..store import SortStore

    store = SortStore.open(path)
    if not store.has(schema.FEATURE_MATRIX):
        raise ValueError(
            f"{path}: sort store has no {schema.FEATURE_MATRIX}; run `actsort features` first"
        )
    matrix = store.feature_matrix()
    truth = store.truth_annotators()
    if truth is None and store.truth_labels() is not None:
        truth = (store.truth_labels()[None, :], ["truth"])
    if labels == "truth" or (labels == "auto" and truth is not None):
        if truth is None:
            raise ValueError(
                f"{path}: sort store has no {schema.TRUTH_LABELS!r} or "
                f"{schema.TRUTH_ANNOTATORS!r} (use its journal's labels instead)"
            )
        ann, names = truth
        ann = np.where(np.asarray(ann) > 0, CELL, NOT_CELL).astype(np.int8)
    else:
        human = read_labels(store.journal_path, path.name, store.n_candidates)
        ann, names = human[None, :], ["journal"]
    emb = store.embedding_matrix() if store.has(schema.EMBEDDING_MATRIX) else None
    return LabelledFeatures(
        path.name,
        path,
        np.asarray(matrix.values, dtype=np.float32),
        matrix.names,
        matrix.version,
        ann,
        names,
        None if emb is None else np.asarray(emb.values, dtype=np.float32),
        emb is not None and emb.encoder_supervised,
    )
