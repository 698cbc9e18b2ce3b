"""Carry human labels from one sort store to another of the same field of view, matching
candidates by footprint overlap: after the extraction is run again (other parameters, another
version, another extractor) the labels already given are not lost.

A candidate of the target gets the label of the source candidate whose footprint overlaps it
best, when each is the other's best match and their intersection over union (IoU) is at least
``min_iou``; footprints are compared as the pixels at or above ``mask_level`` of their peak
(stores keep footprints max-normalised). The labels go into the target's journal as one
``import`` action (one undo reverts it), never over a label the target already has.

:func:`import_labels` also takes a file with one label per extraction row (ActSort's
``_LABELS.mat``, the exported CSV, an ``.npy``: ``io.label_files``), the MATLAB app's *Load
labels*. The ``carry_from*`` functions find the labels without writing them, for a caller that
holds the store's journal itself (the page's *Load labels*).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .labels import Journal, JournalLockedError, read_labels
from .store import SortStore

__all__ = [
    "ImportReport",
    "LabelCarry",
    "carry_from",
    "carry_from_file",
    "carry_from_journal",
    "carry_from_store",
    "import_labels",
    "mask_iou",
    "match_footprints",
]

#: default minimum IoU of a match (0.5: the usual "same cell" criterion of ROI matching)
MIN_IOU = 0.5
#: default share of a footprint's peak that makes its mask
MASK_LEVEL = 0.2


def _masks(footprints: sp.csr_matrix, level: float) -> sp.csr_matrix:
    """(N, P) CSR float32 of 0 / 1: the pixels at or above ``level`` of each row's peak (rows are
    max-normalised in a store, so of 1)."""
    fp = sp.csr_matrix(footprints, dtype=np.float32, copy=True)
    fp.data = (fp.data >= level).astype(np.float32)
    fp.eliminate_zeros()
    return fp


def mask_iou(
    target: sp.csr_matrix, source: sp.csr_matrix, *, mask_level: float = MASK_LEVEL
) -> sp.coo_matrix:
    """(Nt, Ns) COO float64: the intersection over union of the masks of each overlapping pair
    of rows of ``target`` (Nt, P) and ``source`` (Ns, P); pairs that share no pixel are absent."""
    a, b = _masks(target, mask_level), _masks(source, mask_level)
    inter = (a @ b.T).tocoo()  # shared pixels, only where they overlap
    area_a = np.asarray(a.sum(axis=1)).ravel()
    area_b = np.asarray(b.sum(axis=1)).ravel()
    union = area_a[inter.row] + area_b[inter.col] - inter.data
    iou = inter.data / np.maximum(union, 1.0)
    return sp.coo_matrix((iou.astype(np.float64), (inter.row, inter.col)), shape=inter.shape)


def match_footprints(
    target: sp.csr_matrix,
    source: sp.csr_matrix,
    *,
    min_iou: float = MIN_IOU,
    mask_level: float = MASK_LEVEL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual best matches between the rows of ``target`` (Nt, P) and ``source`` (Ns, P) by
    mask IoU. Returns (target indices, source indices, IoU), each (M,), IoU >= ``min_iou``,
    ordered by target index."""
    pairs = mask_iou(target, source, mask_level=mask_level)
    keep = pairs.data >= min_iou
    rows, cols, iou = pairs.row[keep], pairs.col[keep], pairs.data[keep]
    if rows.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    best_for_row = _best(rows, cols, iou, target.shape[0])
    best_for_col = _best(cols, rows, iou, source.shape[0])
    mutual = (best_for_row[rows] == cols) & (best_for_col[cols] == rows)
    order = np.argsort(rows[mutual], kind="stable")
    return (
        rows[mutual][order].astype(np.int64),
        cols[mutual][order].astype(np.int64),
        iou[mutual][order],
    )


def _best(keys: np.ndarray, values: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """(n,) the ``values`` entry of the highest ``score`` per key (-1 where a key has none;
    ties: the smaller value)."""
    order = np.lexsort((values, -score, keys))
    first = np.ones(order.size, bool)
    first[1:] = keys[order][1:] != keys[order][:-1]
    best = np.full(n, -1, np.int64)
    best[keys[order][first]] = values[order][first]
    return best


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_labels` did."""

    source_labels: int  # human labels (+1 / -1) in the source
    matched: int  # of those, candidates matched to a target candidate
    imported_cells: int
    imported_not_cells: int
    kept: int  # matched, but the target already had a label there (kept)
    unmatched: int  # source labels without a match (IoU below min_iou or not mutual)
    median_iou: float  # of the imported matches (NaN when none)
    note: str = ""  # what to know about the source's labels ("": nothing)

    def summary(self) -> str:
        n = self.imported_cells + self.imported_not_cells
        iou = f"; median IoU {self.median_iou:.2f}" if n and np.isfinite(self.median_iou) else ""
        not_cells = self.imported_not_cells
        return (
            f"{_count(n, 'label')} imported ({_count(self.imported_cells, 'cell')}, "
            f"{not_cells:,} not {'a cell' if not_cells == 1 else 'cells'}{iou}) "
            f"of {self.source_labels:,} in the source; "
            f"{self.kept:,} kept (already labelled here), {self.unmatched:,} without a match"
            + (f". Note: {self.note}" if self.note else "")
        )


def _count(n: int, word: str) -> str:
    """'1 label', '2 labels'."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class LabelCarry:
    """Labels found for a store's candidates, before they are written: the store's local
    candidates ``rows`` (M,) int64 and their labels ``values`` (M,) int8 (+1 / -1), out of
    ``source_labels`` human labels in the source, with each match's IoU (M,) (None: matched
    by extraction row) and the annotator name to write."""

    rows: np.ndarray
    values: np.ndarray
    source_labels: int
    iou: np.ndarray | None
    annotator: str
    note: str = ""

    def report(self, new: np.ndarray) -> ImportReport:
        """The report once written: ``new`` (M,) bool, which rows were unlabelled there and
        took their value (the others kept the label they had)."""
        given = self.values[new]
        return ImportReport(
            source_labels=self.source_labels,
            matched=int(len(self.rows)),
            imported_cells=int((given > 0).sum()),
            imported_not_cells=int((given < 0).sum()),
            kept=int((~new).sum()),
            unmatched=self.source_labels - int(len(self.rows)),
            median_iou=(
                float(np.median(self.iou[new]))
                if self.iou is not None and new.any()
                else float("nan")
            ),
            note=self.note,
        )


def carry_from_store(
    target_path,
    source_path,
    *,
    min_iou: float = MIN_IOU,
    mask_level: float = MASK_LEVEL,
    annotator: str | None = None,
) -> LabelCarry:
    """The human labels of the store at ``source_path`` carried to the candidates of the store
    at ``target_path`` they match (:func:`match_footprints`).

    annotator : to write with each label (default ``import:<source store name>``).
    Raises ValueError when the fields of view differ, or ``min_iou`` / ``mask_level`` are not
    in (0, 1].
    """
    for name, value in (("min_iou", min_iou), ("mask_level", mask_level)):
        if not 0 < value <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {value}")
    target_path, source_path = Path(target_path), Path(source_path)
    if source_path.resolve() == target_path.resolve():
        raise ValueError(f"{source_path}: the store the labels would go to (name another store)")
    target, source = SortStore.open(target_path), SortStore.open(source_path)
    if (target.height, target.width) != (source.height, source.width):
        raise ValueError(
            f"{source_path}: field of view {source.height} x {source.width}, but {target_path} "
            f"is {target.height} x {target.width}: labels are carried between extractions of "
            "the same recording"
        )
    src_labels = read_labels(source.journal_path, source_path.name, source.n_candidates)
    labelled = np.flatnonzero(np.isin(src_labels, (1, -1)))
    rows, cols, iou = match_footprints(
        target.footprints(), source.footprints(), min_iou=min_iou, mask_level=mask_level
    )
    carry = np.isin(cols, labelled)
    return LabelCarry(
        rows[carry],
        src_labels[cols[carry]].astype(np.int8),
        int(labelled.size),
        iou[carry],
        annotator or f"import:{source_path.name}",
    )


def carry_from_file(target_path, label_file, *, annotator: str | None = None) -> LabelCarry:
    """The labels of a file with one label per extraction row (``io.label_files``: ActSort's
    ``_LABELS.mat``, the exported CSV, an ``.npy``) for the candidates of the store at
    ``target_path``. Raises ValueError when the file's rows are not the store's extraction
    rows."""
    from .io.label_files import read_label_file

    target_path, label_file = Path(target_path), Path(label_file)
    target = SortStore.open(target_path)
    labels, note = read_label_file(label_file)
    src = target.source_index()
    n_rows = int(src.max()) + 1 if src.size else 0
    if labels.size != n_rows:
        raise ValueError(
            f"{label_file}: labels for {labels.size} extraction rows, but {target_path}'s "
            f"candidates come from {n_rows}: the labels of another extraction? (a store of "
            "another extraction of the recording: --from OLD.actsort matches by footprints)"
        )
    return _by_number(labels[src], int((labels != 0).sum()), label_file, annotator, note)


def _by_number(per_candidate: np.ndarray, source_labels: int, source: Path, annotator, note):
    """The :class:`LabelCarry` of labels already in the store's candidate order
    ((N,) +1 / -1 / 0; matched by number, not by footprint)."""
    rows = np.flatnonzero(per_candidate != 0)
    return LabelCarry(
        rows,
        per_candidate[rows].astype(np.int8),
        source_labels,
        None,
        annotator or f"import:{source.name}",
        note,
    )


#: what the user is told about a journal file merged into its store
JOURNAL_COPY_NOTE = (
    "another copy of this store's label journal (written on another computer of a synced "
    "folder?): its labels by candidate number, never over a label the store has"
)


def carry_from_journal(target_path, journal_file, *, annotator: str | None = None) -> LabelCarry:
    """The labels of another copy of the store's own journal (``labels.other_journals``),
    by candidate number. Refused for a journal outside the store's ``labels/`` folder: a
    journal names candidates of the store it was written for, so another store's would
    label the wrong candidates (that store itself is imported by footprints)."""
    target_path, journal_file = Path(target_path), Path(journal_file)
    target = SortStore.open(target_path)
    if journal_file.resolve() == target.journal_path.resolve():
        raise ValueError(f"{journal_file}: is the store's own journal; its labels are there")
    if journal_file.resolve().parent != target.labels_dir.resolve():
        raise ValueError(
            f"{journal_file}: a label journal names candidates by number, so only a copy of "
            f"{target_path}'s own journal (in its labels/ folder) is imported; for the labels "
            "of another store, give that store (--from OTHER.actsort, matched by footprints)"
        )
    labels = read_labels(journal_file, target_path.name, target.n_candidates)
    return _by_number(labels, int((labels != 0).sum()), journal_file, annotator, JOURNAL_COPY_NOTE)


def carry_from(
    target_path,
    source,
    *,
    min_iou: float = MIN_IOU,
    mask_level: float = MASK_LEVEL,
    annotator: str | None = None,
) -> LabelCarry:
    """:func:`carry_from_journal` for a ``.jsonl`` (a copy of the store's journal),
    :func:`carry_from_file` when ``source`` is another file (or names one: ``.mat``, ``.csv``,
    ``.npy``), else :func:`carry_from_store` (``min_iou`` and ``mask_level`` apply to it:
    a file's rows are matched by extraction row)."""
    from .io.label_files import LABEL_FILE_SUFFIXES

    if Path(source).suffix.lower() == ".jsonl":
        return carry_from_journal(target_path, source, annotator=annotator)
    if Path(source).is_file() or Path(source).suffix.lower() in LABEL_FILE_SUFFIXES:
        return carry_from_file(target_path, source, annotator=annotator)
    return carry_from_store(
        target_path, source, min_iou=min_iou, mask_level=mask_level, annotator=annotator
    )


def import_labels(
    target_path,
    source,
    *,
    min_iou: float = MIN_IOU,
    mask_level: float = MASK_LEVEL,
    annotator: str | None = None,
) -> ImportReport:
    """Give the candidates of the store at ``target_path`` the labels of ``source`` (an earlier
    store of the same recording, matched by footprints; or a label file: :func:`carry_from`)
    as one ``import`` action in its journal, never over a label it already has. The journal's
    write lock is taken: refused while a page has the store open (the page's *Load labels*
    imports through its own learner)."""
    target_path = Path(target_path)
    carry = carry_from(
        target_path, source, min_iou=min_iou, mask_level=mask_level, annotator=annotator
    )
    target = SortStore.open(target_path)
    try:
        journal = Journal(
            target.journal_path, n_candidates=target.n_candidates, dataset=target_path.name
        )
    except JournalLockedError as exc:
        raise JournalLockedError(
            f"{exc}; when that is a page (actsort sort), load the labels in its Load labels tab"
        ) from None
    with journal:
        _, new = journal.append_new(
            target_path.name, carry.rows.tolist(), carry.values.tolist(), carry.annotator
        )
    return carry.report(new)
