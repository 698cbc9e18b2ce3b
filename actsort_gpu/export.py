"""Export the curation of a sort store: label table (CSV / Parquet), Suite2p ``iscell.npy``,
NWB columns (ours and the ``Accepted`` / ``Rejected`` that roiextractors / neuroconv read), an
ActSort-compatible ``*_LABELS.mat``, CaImAn-style accepted / rejected indices, and the portable
classifier file.

The table has one row per candidate::

    candidate, source_index, human_label, unsure, probability, decision, final_label,
    annotator, label_time, disagreement

human_label : +1 / -1 / 0 (the replay of labels/journal.jsonl); unsure : 1 where the candidate
was marked unsure (key U; its human_label is 0: it is no label, and its final_label is the
model's decision), else 0; probability : P(cell) of the
classifier trained on all human labels (NaN while a class has no label), or of the applied
classifier (``export_predictions``, after ``actsort apply``); decision : +1 / -1 at the
threshold, 0 while the classifier is untrained; final_label : the human label where given, else
the decision (``labels.final_labels``): 0 (none) for a candidate without a human label while the
classifier is untrained, never a made-up "not a cell"; annotator / label_time : of the latest
human label ('' if none); disagreement : labels that replaced another annotator's different
label, "ana +1 -> bob -1" ('' if none; ``labels.disagreement_column``).

Formats are the rows of :data:`EXPORTERS` (the CLI's choices, :data:`EXPORT_FORMATS` and
:data:`TABLE_FORMATS` come from it). Used by the page's export buttons (with the running
session's learner), by ``actsort export`` (which replays the journal read-only, so it works
beside a running page) and by ``actsort apply --export``.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from . import schema
from .labels import disagreement_column, final_labels
from .outputs import check_replaceable, replace_whole

log = logging.getLogger(__name__)

__all__ = [
    "EXPORTERS",
    "EXPORT_FORMATS",
    "FORMATS",
    "TABLE_FORMATS",
    "Exporter",
    "export_labels",
    "export_predictions",
    "label_table",
    "prediction_table",
    "write_actsort_labels",
    "write_caiman_indices",
    "write_suite2p_iscell",
    "write_table_csv",
]

COLUMNS = (
    "candidate",
    "source_index",
    "human_label",
    "unsure",
    "probability",
    "decision",
    "final_label",
    "annotator",
    "label_time",
    "disagreement",
)


def _read_only_learner(store_path: Path, config=None, pretrained=None):
    """A learner over one store with its journal replayed read-only (no lock: works beside a
    running page), with the inputs the page uses (``learner.dataset_from_store``)."""
    from .active.engine import product_policy
    from .active.learner import Learner

    active = config.active if config is not None else None
    return Learner.read_only(
        store_path,
        product_policy(active),
        pretrained=pretrained,
    )


def _table(store, human, proba, decision, sources, unsure=None) -> dict:
    """The export table's columns from (n,) human labels, P(cell) (or None: untrained; the
    decisions are then ignored: no decision, and no final label without a human one),
    decisions, (annotator, time) per candidate and the (n,) unsure mask (None: none)."""
    n = len(human)
    decision = np.zeros(n, np.int8) if proba is None else np.asarray(decision, np.int8)
    src = store.read(schema.SOURCE_INDEX) if store.has(schema.SOURCE_INDEX) else np.arange(n)
    info = [sources[i] or ("", "") for i in range(n)]
    return {
        "candidate": np.arange(n),
        "source_index": np.asarray(src, np.int64),
        "human_label": np.asarray(human, np.int8),
        "unsure": np.zeros(n, np.int8) if unsure is None else np.asarray(unsure, np.int8),
        "probability": (
            np.full(n, np.nan, np.float32) if proba is None else np.asarray(proba, np.float32)
        ),
        "decision": decision,
        "final_label": final_labels(human, None if proba is None else decision),
        "annotator": [a for a, _ in info],
        "label_time": [t for _, t in info],
        # labels that replaced another annotator's different label ("ana +1 -> bob -1")
        "disagreement": disagreement_column(store.journal_path, Path(store.path).name, n),
    }


def label_table(store_path, *, learner=None, dataset: int = 0, config=None) -> dict:
    """The export table of one store as a dict of equal-length columns (numpy arrays / lists).

    learner : a running ``Learner`` covering the store as dataset ``dataset`` (the page);
        None: the journal is replayed read-only and a classifier trained on its labels.
    """
    from .store import SortStore

    store_path = Path(store_path)
    store = SortStore.open(store_path)
    if learner is None:
        learner, dataset = _read_only_learner(store_path, config), 0
    sl = learner.dataset_slice(dataset)
    if sl.stop - sl.start != store.n_candidates:
        raise ValueError(
            f"{store_path}: {store.n_candidates} candidates, the learner's dataset "
            f"{dataset} has {sl.stop - sl.start}"
        )
    proba, decision = learner.model(dataset)
    sources = [learner.label_source(i) for i in range(sl.start, sl.stop)]
    return _table(store, learner.human(dataset), proba, decision, sources, learner.unsure(dataset))


def prediction_table(store_path) -> dict:
    """The export table of a store classified by ``actsort apply``: its ``predictions/``
    arrays, with the human labels (and who gave them) from the journal."""
    from .store import SortStore, StoreError

    store_path = Path(store_path)
    store = SortStore.open(store_path)
    if not store.has(schema.PREDICTED_FINAL):
        raise StoreError(
            f"{store_path}: no predictions in the store; run `actsort apply "
            f"--classifier FILE {store_path}` first"
        )
    learner = _read_only_learner(store_path)
    sources = [learner.label_source(i) for i in range(learner.n)]
    return _table(
        store,
        learner.human(),
        store.read(schema.PREDICTED_PROBABILITY),
        store.read(schema.PREDICTED_DECISION),
        sources,
        learner.unsure(),
    )


def write_table_csv(table: dict, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for k in range(len(table["candidate"])):
            row = [table[c][k] for c in COLUMNS]
            k_p = COLUMNS.index("probability")
            row[k_p] = "" if np.isnan(row[k_p]) else f"{float(row[k_p]):.6f}"
            w.writerow([int(v) if isinstance(v, (np.integer,)) else v for v in row])
    return out


def _write_parquet(table: dict, out: Path) -> Path:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            "Parquet export needs pyarrow: pip install 'actsort-gpu[parquet]'"
        ) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({c: table[c] for c in COLUMNS}), out)
    return out


def write_suite2p_iscell(table: dict, suite2p_dir: Path, store_path: Path | None = None) -> Path:
    """Write ``iscell.npy`` (n_rois, 2): column 0 = final label (1 cell / 0 not), column 1 =
    P(cell) (1 / 0 for human labels), rows in Suite2p ROI order (``source_index``). A
    candidate without a final label (no human label while the classifier is untrained) keeps
    the row the file had (Suite2p's own classification; 0 and 0.5 in a new file). The original
    file is kept once as ``iscell.actsort-backup.npy`` (never overwritten by later exports).
    With ``store_path``, the folder's ``stat.npy`` must hold the store's ROIs
    (``io.suite2p.rois_differ``), else ValueError and nothing is written."""
    suite2p_dir = Path(suite2p_dir)
    target = suite2p_dir / "iscell.npy"
    src = np.asarray(table["source_index"], np.int64)
    n_rois = _source_rows(table)
    if store_path is not None:
        from .io.suite2p import rois_differ
        from .store import SortStore

        store = SortStore.open(store_path)
        problem = rois_differ(suite2p_dir, store.footprints(), src, store.width)
        if problem is not None:
            raise ValueError(f"{problem}; nothing written")
    if target.exists():
        iscell = _read_iscell(target, n_rois)
        backup = suite2p_dir / "iscell.actsort-backup.npy"
        if not backup.exists():
            shutil.copy2(target, backup)
            log.info("%s: the original kept as %s", target, backup.name)
    else:
        iscell = np.zeros((n_rois, 2), np.float64)
        iscell[:, 1] = 0.5
    human = np.asarray(table["human_label"])
    final = np.asarray(table["final_label"])
    known = final != 0  # the others keep the file's row
    prob = np.where(human > 0, 1.0, np.where(human < 0, 0.0, table["probability"]))
    iscell[src[known], 0] = (final[known] > 0).astype(np.float64)
    iscell[src[known], 1] = prob[known]
    return replace_whole(target, lambda tmp: np.save(tmp, iscell))


def _read_iscell(path: Path, n_needed: int) -> np.ndarray:
    """Suite2p's ``iscell.npy`` at ``path`` as (n_rois, 2) float64, checked before anything is
    written: a file NumPy cannot read, another shape, or fewer ROIs than the store's
    candidates come from (``n_needed``: another extraction's folder) raises ValueError."""
    from .io.numpy_files import load_numpy

    iscell = load_numpy(path, "a Suite2p iscell.npy")
    if iscell.ndim != 2 or iscell.shape[1] < 2 or iscell.dtype.kind not in "biuf":
        raise ValueError(
            f"{path}: a {iscell.dtype} array of shape {iscell.shape}; Suite2p's iscell.npy is "
            "(n_rois, 2) numbers"
        )
    if iscell.shape[0] < n_needed:
        raise ValueError(
            f"{path}: {iscell.shape[0]} ROIs, but this store's candidates come from "
            f"{n_needed} Suite2p ROIs: is it the folder the store was ingested from?"
        )
    return np.array(iscell[:, :2], dtype=np.float64)


def _source_rows(table: dict) -> int:
    """How many rows the extraction has at least: the table's largest source index + 1."""
    src = np.asarray(table["source_index"], np.int64)
    return int(src.max()) + 1 if len(src) else 0


def _by_source(table: dict, column: str, fill=0, dtype=np.int8, n: int | None = None):
    """A table column in the extraction's order (row ``source_index``), ``fill`` where the
    store has no candidate; ``n`` rows (default: :func:`_source_rows`)."""
    src = np.asarray(table["source_index"], np.int64)
    n = _source_rows(table) if n is None else n
    out = np.full(n, fill, dtype)
    out[src] = np.asarray(table[column], dtype)
    return out


#: the NWB columns that roiextractors (``NwbSegmentationExtractor.get_accepted_list`` /
#: ``get_rejected_list``: rows == 1), neuroconv and nwbwidgets read as the curation
NWB_CURATION = {
    "Accepted": "1 = accepted as a cell (actsort final label: your label, else the classifier's)",
    "Rejected": "1 = rejected, not a cell (actsort final label); 0 and 0: no decision yet",
}


def _write_nwb(table: dict, out: Path, store_path: Path) -> Path:
    """Add the table's columns to the PlaneSegmentation of an NWB file (``out``: the source NWB
    file of the extraction, edited in place after a backup copy): ``actsort_human_label``,
    ``actsort_probability``, ``actsort_final_label`` and the community's ``Accepted`` /
    ``Rejected`` (0 / 1 from the final label; both 0 where there is none: an unsure or
    unlabelled candidate before the classifier is trained). An ``Accepted`` / ``Rejected``
    column the file already had is kept (a warning says so). Exporting again (more labels)
    overwrites the values of the columns an earlier export added, in place; a table with
    fewer rows than the store's candidates come from raises ValueError before any change."""
    try:
        from pynwb import NWBHDF5IO
    except ImportError as exc:
        raise ImportError("NWB export needs pynwb: pip install 'actsort-gpu[nwb]'") from exc
    out = Path(out)
    if not out.is_file():
        raise FileNotFoundError(f"{out}: NWB file not found (pass the extraction's .nwb file)")
    backup = out.with_name(out.stem + ".actsort-backup.nwb")
    with NWBHDF5IO(str(out), "r") as io:
        _nwb_plane(io.read(), out, table)  # checked before the backup or any change
    if not backup.exists():
        shutil.copy2(out, backup)
    with NWBHDF5IO(str(out), "a") as io:
        nwb = io.read()
        plane = _nwb_plane(nwb, out, table)
        n = len(plane.id)
        final = _by_source(table, "final_label", n=n)
        cols = {
            "actsort_human_label": _by_source(table, "human_label", n=n),
            "actsort_probability": _by_source(table, "probability", np.nan, np.float32, n),
            "actsort_final_label": final,
            "Accepted": (final > 0).astype(np.uint8),
            "Rejected": (final < 0).astype(np.uint8),
        }
        added = {}
        for name, values in cols.items():
            ours = not name.startswith("actsort_") and NWB_CURATION[name]
            if name not in plane.colnames:
                description = f"{ours}; from {store_path}" if ours else f"{name} from {store_path}"
                added[name] = (description, values)
            elif ours and not str(plane[name].description).startswith(ours):
                log.warning("%s: kept its own %s column (actsort_final_label has ours)", out, name)
            else:  # an earlier export's column: new values, same rows and type
                plane[name].data[:] = values
        for name, (description, values) in added.items():
            plane.add_column(name=name, description=description, data=values)
        if added:
            io.write(nwb)
    return out


def _nwb_plane(nwb, path: Path, table: dict):
    """The NWB file's first PlaneSegmentation; ValueError naming ``path`` when there is none
    or when it has fewer rows than the table's candidates come from."""
    planes = [obj for obj in nwb.objects.values() if type(obj).__name__ == "PlaneSegmentation"]
    if not planes:
        raise ValueError(f"{path}: no PlaneSegmentation table to add the labels to")
    needed = _source_rows(table)
    if len(planes[0].id) < needed:
        raise ValueError(
            f"{path}: its PlaneSegmentation has {len(planes[0].id)} ROIs, but this store's "
            f"candidates come from {needed}: is it the file the store was ingested from?"
        )
    return planes[0]


def write_actsort_labels(table: dict, out: Path) -> Path:
    """ActSort's label file (the MATLAB app's "Save": ``<name>_LABELS.mat``, loaded by its
    "Load labels"): struct ``labels`` with ``labels_ex`` (your labels +1 / -1 / 0),
    ``labels_ml`` (the classifier's decisions +1 / -1, 0 before it is trained) and
    ``labels_overall`` (your label where given, else the classifier's; yours alone before
    training), each (N, 1) double in
    the extraction's order (``source_index``), plus ``unsure`` (N, 1): 1 where you marked the
    candidate unsure (ActSort has no such label: there labels_ex is 0). MATLAB 5 format
    (``scipy.io.savemat``), which every MATLAB ``load`` reads."""
    from scipy.io import savemat

    col = lambda name: _by_source(table, name, 0, np.float64)[:, None]  # noqa: E731
    # before training the table's decisions are 0 (as ActSort's labels_ml) and its final
    # labels the human ones (labels_overall = labels_ex there)
    labels = {
        "labels_ex": col("human_label"),
        "labels_ml": col("decision"),
        "labels_overall": col("final_label"),
        "unsure": col("unsure"),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh:  # the name given, never with ".mat" added
        savemat(fh, {"labels": labels}, do_compression=True)
    return out


def write_caiman_indices(table: dict, out: Path) -> Path:
    """CaImAn's accepted / rejected component lists, as ``estimates.idx_components`` and
    ``estimates.idx_components_bad`` name them: 0-based int64 indices into the extraction's
    components (``source_index``) whose final label is +1 / -1, in an ``.npz``; a candidate
    without a final label (unsure or unlabelled before training) is in neither."""
    src = np.asarray(table["source_index"], np.int64)
    final = np.asarray(table["final_label"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh:  # the name given, never with ".npz" added
        np.savez(
            fh,
            idx_components=np.sort(src[final > 0]),
            idx_components_bad=np.sort(src[final < 0]),
        )
    return out


def _suite2p_default(store_path: Path, store) -> Path:
    ext = store.attrs.get("extraction") or {}
    if ext.get("format") != "suite2p":
        raise ValueError(
            f"{store_path}: the extraction was {ext.get('format')!r}, not "
            "Suite2p; to write an iscell.npy anyway, name a Suite2p plane folder "
            "(`actsort export --format suite2p --out FOLDER`)"
        )
    out = Path(ext["path"])
    if not out.exists():  # moved or deleted: never write into whatever its parent is now
        raise FileNotFoundError(
            f"{store_path}: the Suite2p folder it was ingested from ({out}) is gone; name the "
            "plane folder to write iscell.npy into (`actsort export --format suite2p --out "
            "FOLDER`)"
        )
    return out if out.is_dir() else out.parent


def _nwb_default(store_path: Path, store) -> Path:
    ext = store.attrs.get("extraction") or {}
    if ext.get("format") != "nwb":
        raise ValueError(f"{store_path}: the extraction was not NWB; pass --out FILE.nwb")
    return Path(ext["path"])


@dataclass(frozen=True)
class Exporter:
    """One export format.

    description : one line for the CLI help and the README
    file_name : the file it writes inside an export folder (``<store>/exports/`` by default;
        ``{store}`` stands for the store's name); None for formats that write into the
        extraction's own files (suite2p, nwb)
    locate : (store path, store) -> the extraction file or folder to write, for those
    write : (table, out, store path) -> path written; None for the classifier, which is
        written from the learner, not from the table
    is_own : path -> whether that existing file is an earlier export of this format, the
        only kind of file an export replaces (formats with a ``file_name``)
    """

    description: str
    file_name: str | None
    locate: Callable[[Path, object], Path] | None
    write: Callable[[dict, Path, Path], Path] | None
    is_own: Callable[[Path], bool] | None = None

    def name_for(self, store_path) -> str | None:
        """The file name for the store at ``store_path`` (None: written in place)."""
        if self.file_name is None:
            return None
        return self.file_name.format(store=Path(store_path).name.removesuffix(".actsort"))

    def default_out(self, store_path: Path, store) -> Path:
        if self.file_name is not None:
            return Path(store_path) / "exports" / self.name_for(store_path)
        return self.locate(Path(store_path), store)


def _is_own_csv(path: Path) -> bool:
    with open(path, newline="", errors="replace") as fh:
        return fh.readline().startswith(",".join(COLUMNS[:3]) + ",")


def _is_own_parquet(path: Path) -> bool:
    import pyarrow.parquet as pq

    return pq.read_schema(path).names[:3] == list(COLUMNS[:3])


def _is_own_labels_mat(path: Path) -> bool:
    """Ours carry ``unsure`` beside labels_ex (the MATLAB app's own files do not: they hold
    labels given there, which an export must not replace)."""
    from scipy.io import loadmat

    labels = loadmat(path, variable_names=["labels"]).get("labels")
    return labels is not None and {"labels_ex", "unsure"} <= set(labels.dtype.names or ())


def _is_own_caiman(path: Path) -> bool:
    with np.load(path, allow_pickle=False) as z:
        return set(z.files) == {"idx_components", "idx_components_bad"}


def _is_own_classifier(path: Path) -> bool:
    from .active.transfer import load_classifier

    load_classifier(path)
    return True


EXPORTERS: dict[str, Exporter] = {
    "csv": Exporter(
        "label table, one row per candidate (CSV)",
        "labels.csv",
        None,
        lambda t, out, p: write_table_csv(t, out),
        _is_own_csv,
    ),
    "parquet": Exporter(
        "the same table as Parquet (needs pyarrow)",
        "labels.parquet",
        None,
        lambda t, out, p: _write_parquet(t, out),
        _is_own_parquet,
    ),
    "suite2p": Exporter(
        "iscell.npy in the Suite2p plane folder (original backed up once)",
        None,
        _suite2p_default,
        lambda t, out, p: write_suite2p_iscell(t, out, p),
    ),
    "nwb": Exporter(
        "actsort_* columns and Accepted / Rejected (0/1, read by roiextractors and neuroconv) "
        "added to the NWB file's PlaneSegmentation",
        None,
        _nwb_default,
        _write_nwb,
    ),
    "actsort-mat": Exporter(
        "ActSort's <name>_LABELS.mat (labels_ex / labels_ml / labels_overall) for the MATLAB "
        "app's Load labels",
        "{store}_LABELS.mat",
        None,
        lambda t, out, p: write_actsort_labels(t, out),
        _is_own_labels_mat,
    ),
    "caiman": Exporter(
        "CaImAn-style idx_components / idx_components_bad (accepted / rejected, 0-based) .npz",
        "caiman_idx_components.npz",
        None,
        lambda t, out, p: write_caiman_indices(t, out),
        _is_own_caiman,
    ),
    "classifier": Exporter(
        "portable classifier (.npz) to fine-tune or apply elsewhere",
        "classifier.npz",
        None,
        None,
        _is_own_classifier,
    ),
}
EXPORT_FORMATS = tuple(EXPORTERS)
FORMATS = EXPORT_FORMATS  # the former name (ui.layout imports it)
TABLE_FORMATS = tuple(f for f, e in EXPORTERS.items() if e.write is not None)


def _check_format(fmt: str, allowed: tuple[str, ...]) -> Exporter:
    if fmt not in allowed:
        raise ValueError(f"format must be one of {allowed}, got {fmt!r}")
    return EXPORTERS[fmt]


def _out_path(exporter: Exporter, out, store_path: Path, store) -> Path:
    """Where to write: ``out``, or the format's file inside it when it is a folder or ends
    with a slash (as ``cp`` does; made if missing), or the format's default without one."""
    if out is None:
        return exporter.default_out(store_path, store)
    folder = str(out).endswith(("/", os.sep))
    out = Path(out)
    if (folder or out.is_dir()) and exporter.file_name is not None:
        return out / exporter.name_for(store_path)
    return out


def _write(table: dict, fmt: str, out, store_path: Path, store) -> Path:
    exporter = EXPORTERS[fmt]
    out = _out_path(exporter, out, store_path, store)
    if exporter.is_own is None:  # written into the extraction's own files, backed up there
        path = exporter.write(table, out, store_path)
    else:
        check_replaceable(out, exporter.is_own, f"{fmt} export")
        path = replace_whole(out, lambda tmp: exporter.write(table, tmp, store_path))
    n_h = int((table["human_label"] != 0).sum())
    log.info(
        "%s: exported %d candidates (%d human labels) to %s at %s",
        store_path,
        len(table["candidate"]),
        n_h,
        path,
        datetime.now(UTC).isoformat(),
    )
    return path


def export_labels(
    store_path, format: str, out=None, *, learner=None, dataset: int = 0, config=None
) -> Path:
    """Export one store's curation; returns the path written.

    format : one of :data:`EXPORT_FORMATS` (the keys of :data:`EXPORTERS`)
    out : file (csv, parquet, classifier .npz, nwb: the NWB file to annotate) or folder (suite2p:
        the Suite2p plane folder; default the store's recorded extraction path). Default for the
        table formats: ``<store>/exports/labels.<ext>``.
    learner : the page's running learner (the store is its dataset ``dataset``); None replays
        the journal read-only.
    """
    from .store import SortStore

    exporter = _check_format(format, EXPORT_FORMATS)
    store_path = Path(store_path)
    store = SortStore.open(store_path)
    if exporter.write is None:
        from .active.transfer import classifier_path, save_classifier

        out = classifier_path(_out_path(exporter, out, store_path, store))
        check_replaceable(out, exporter.is_own, f"{format} export")
        if learner is None:
            learner = _read_only_learner(store_path, config)
        return save_classifier(out, learner)  # whole, and naming ``out`` when untrained
    table = label_table(store_path, learner=learner, dataset=dataset, config=config)
    return _write(table, format, out, store_path, store)


def export_predictions(store_path, format: str, out=None) -> Path:
    """Export the table of a store classified by ``actsort apply`` (``prediction_table``) in a
    table format (:data:`TABLE_FORMATS`: the exporters that write the table); returns the path
    written."""
    from .store import SortStore

    _check_format(format, TABLE_FORMATS)
    store_path = Path(store_path)
    return _write(prediction_table(store_path), format, out, store_path, SortStore.open(store_path))
