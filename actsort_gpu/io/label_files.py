"""Label files from elsewhere, one label per row of the extraction (the order of Suite2p's
``stat.npy``, EXTRACT's and CaImAn's components):

- ActSort's ``<name>_LABELS.mat`` (the MATLAB app's *Save*, or ``actsort export --format
  actsort-mat``): ``labels.labels_ex`` (N x 1: +1 cell, -1 not, 0 unlabelled), MATLAB v5 / v7
  (scipy) or v7.3 (HDF5);
- the table of ``actsort export --format csv``: its ``source_index`` and ``human_label`` columns;
- an ``.npy`` of N labels +1 / -1 / 0;
- Suite2p's ``iscell.npy`` (N x 2: is-cell 1 / 0, probability), as its GUI leaves it after a
  person curated the plane: every ROI becomes a cell (+1) or not a cell (-1). Only a curated
  file holds human labels (Suite2p's classifier writes the same file): logged.

``read_label_file(path)`` returns a :class:`LabelFile`: (N,) int8 labels +1 / -1 / 0 and a note
for the user ("" or what to know about the file's labels); every error names the file.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .numpy_files import load_numpy

__all__ = ["read_label_file", "LabelFile", "LABEL_FILE_SUFFIXES"]

#: what the user is told about a Suite2p ``iscell.npy`` taken as labels
ISCELL_NOTE = (
    "Suite2p's iscell.npy: every ROI taken as labelled, cell or not a cell; human labels only "
    "if a person curated the plane in Suite2p's GUI (its classifier writes the same file)"
)


class LabelFile(NamedTuple):
    """A label file's labels: (N,) int8 +1 / -1 / 0, and a note ("" or a caution)."""

    labels: np.ndarray
    note: str = ""


LABEL_FILE_SUFFIXES = (".mat", ".csv", ".npy")


def read_label_file(path: str | Path) -> LabelFile:
    """The human labels (+1 / -1 / 0) of the extraction's rows in ``path``, and a note."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected a label file)")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        values = _labels_mat(path)
    elif suffix == ".csv":
        values = _labels_csv(path)
    elif suffix == ".npy":
        values = load_numpy(path, "an .npy of labels +1 / -1 / 0")
        if _is_iscell(values):
            labels = np.where(np.asarray(values)[:, 0] > 0.5, 1, -1).astype(np.int8)
            return LabelFile(labels, ISCELL_NOTE)
    else:
        raise ValueError(
            f"{path}: expected a sort store, an ActSort _LABELS.mat, an exported .csv or an "
            f".npy of labels ({', '.join(LABEL_FILE_SUFFIXES)})"
        )
    return LabelFile(_as_labels(np.asarray(values), path))


def _is_iscell(values) -> bool:
    """Whether an array is Suite2p's ``iscell.npy``: (N, 2), column 0 all 0 / 1, column 1 in
    [0, 1]."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != 2 or values.dtype.kind not in "biuf":
        return False
    return bool(
        np.isin(values[:, 0], (0, 1)).all() and ((values[:, 1] >= 0) & (values[:, 1] <= 1)).all()
    )


def _as_labels(values: np.ndarray, path: Path) -> np.ndarray:
    if values.ndim == 2 and 1 in values.shape:
        values = values.ravel()
    if values.ndim != 1 or values.dtype.kind not in "biuf":
        raise ValueError(
            f"{path}: labels of shape {values.shape} and type {values.dtype}; expected one "
            "number per extraction row"
        )
    if not np.isin(values, (-1, 0, 1)).all():
        bad = values[~np.isin(values, (-1, 0, 1))]
        raise ValueError(
            f"{path}: {bad.size} labels are not +1 (cell), -1 (not a cell) or 0 (unlabelled), "
            f"e.g. {bad[0]:g}"
        )
    return values.astype(np.int8)


def _labels_mat(path: Path) -> np.ndarray:
    import h5py
    from scipy.io import loadmat

    if h5py.is_hdf5(path):  # MATLAB v7.3
        return _labels_mat73(path)
    try:
        labels = loadmat(path, variable_names=["labels"]).get("labels")
    except (ValueError, OSError, TypeError, NotImplementedError) as exc:
        raise ValueError(f"{path}: not a readable MATLAB file ({exc})") from None
    if labels is None or "labels_ex" not in (labels.dtype.names or ()):
        raise ValueError(f"{path}: no struct 'labels' with 'labels_ex' (an ActSort _LABELS.mat)")
    return np.asarray(labels["labels_ex"][0, 0], np.float64)


def _labels_mat73(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        node = f.get("labels")
        if not isinstance(node, h5py.Group) or "labels_ex" not in node:
            raise ValueError(
                f"{path}: no struct 'labels' with 'labels_ex' (an ActSort _LABELS.mat)"
            )
        return np.asarray(node["labels_ex"][()], np.float64)


def _labels_csv(path: Path) -> np.ndarray:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"source_index", "human_label"} <= set(rows[0]):
        raise ValueError(
            f"{path}: expected the table of `actsort export --format csv` (columns "
            "source_index and human_label)"
        )
    try:
        src = np.array([int(r["source_index"]) for r in rows], np.int64)
        lab = np.array([float(r["human_label"] or 0) for r in rows])
    except ValueError as exc:
        raise ValueError(f"{path}: a source_index or human_label is not a number ({exc})") from None
    if (src < 0).any() or len(np.unique(src)) != len(src):
        raise ValueError(f"{path}: source_index values must be distinct and >= 0")
    out = np.zeros(int(src.max()) + 1, np.float64)
    out[src] = lab
    return out
