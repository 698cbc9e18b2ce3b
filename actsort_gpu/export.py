"""Export the curation of a sort store: label table (CSV / Parquet), Suite2p ``iscell.npy``,
NWB columns, and the portable classifier file.

The table has one row per candidate::

    candidate, source_index, human_label, probability, decision, final_label, annotator, label_time

human_label : +1 / -1 / 0 (the replay of labels/journal.jsonl); probability : P(cell) of the
classifier trained on all human labels (NaN while a class has no label); decision : +1 / -1 at
the threshold; final_label : the human label where given, else the decision (ActSort's
``labels_overall``); annotator / label_time : of the latest human label ('' if none).

Used by the page's export buttons (with the running session's learner) and by
``actsort export`` (which replays the journal read-only, so it works beside a running page).
"""

from __future__ import annotations

import csv
import logging
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "label_table", "export_labels", "write_table_csv", "write_suite2p_iscell"]

FORMATS = ("csv", "parquet", "suite2p", "nwb", "classifier")
COLUMNS = ("candidate", "source_index", "human_label", "probability", "decision", "final_label",
           "annotator", "label_time")


def _session_learner(store_path: Path, config=None):
    """A learner over one store (``learner.dataset_from_store``) with the journal replayed
    read-only: no lock is taken, so this works beside a running page."""
    from .active.engine import product_policy
    from .active.learner import Learner, dataset_from_store, read_journal

    active = config.active if config is not None else None
    ds = dataset_from_store(store_path, use_embeddings=bool(getattr(active, "use_embeddings",
                                                                    False)))
    labels, journal = read_journal(ds)
    # The learner must not take the journal's lock.
    learner = Learner([replace(ds, journal_path=None)], product_policy(active), device="cpu")
    learner.engine.set_labels(labels)
    for ev in journal.events if journal is not None else ():
        if ev.dataset == ds.name and ev.label != 0:
            learner.label_info[int(ev.candidate)] = (ev.annotator, ev.time)
    return learner


def label_table(store_path, *, learner=None, dataset: int = 0, config=None) -> dict:
    """The export table of one store as a dict of equal-length columns (numpy arrays / lists).

    learner : a running ``Learner`` covering the store as dataset ``dataset`` (the page);
        None: the journal is replayed read-only and a classifier trained on its labels.
    """
    from .store import SortStore

    store_path = Path(store_path)
    store = SortStore.open(store_path)
    if learner is None:
        learner, dataset = _session_learner(store_path, config), 0
    lo, hi = int(learner.offsets[dataset]), int(learner.offsets[dataset + 1])
    if hi - lo != store.n_candidates:
        raise ValueError(f"{store_path}: {store.n_candidates} candidates, the learner's dataset "
                         f"{dataset} has {hi - lo}")
    human = learner.engine.labels[lo:hi].astype(np.int8)
    p = learner.probabilities()
    proba = np.full(hi - lo, np.nan, np.float32) if p is None else p[lo:hi]
    dec = learner.decisions()[lo:hi].astype(np.int8)
    final = np.where(human != 0, human, dec).astype(np.int8)
    info = [learner.label_info.get(lo + i, ("", "")) if human[i] != 0 else ("", "")
            for i in range(hi - lo)]
    src = (store.read("candidates/source_index") if store.has("candidates/source_index")
           else np.arange(hi - lo))
    return {"candidate": np.arange(hi - lo), "source_index": np.asarray(src, np.int64),
            "human_label": human, "probability": proba, "decision": dec, "final_label": final,
            "annotator": [a for a, _ in info], "label_time": [t for _, t in info]}


def write_table_csv(table: dict, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for k in range(len(table["candidate"])):
            row = [table[c][k] for c in COLUMNS]
            row[3] = "" if np.isnan(row[3]) else f"{float(row[3]):.6f}"
            w.writerow([int(v) if isinstance(v, (np.integer,)) else v for v in row])
    return out


def _write_parquet(table: dict, out: Path) -> Path:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("Parquet export needs pyarrow: pip install 'actsort-gpu[parquet]'") \
            from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({c: table[c] for c in COLUMNS}), out)
    return out


def write_suite2p_iscell(table: dict, suite2p_dir: Path) -> Path:
    """Write ``iscell.npy`` (n_rois, 2): column 0 = final label (1 cell / 0 not), column 1 =
    P(cell) (1 / 0 for human labels, 0.5 where the classifier is untrained), rows in Suite2p ROI
    order (``source_index``). The original file is kept once as ``iscell.actsort-backup.npy``
    (never overwritten by later exports)."""
    suite2p_dir = Path(suite2p_dir)
    target = suite2p_dir / "iscell.npy"
    src = np.asarray(table["source_index"], np.int64)
    n_rois = int(src.max()) + 1 if len(src) else 0
    if target.exists():
        original = np.load(target, allow_pickle=False)
        n_rois = max(n_rois, original.shape[0])
        backup = suite2p_dir / "iscell.actsort-backup.npy"
        if not backup.exists():
            shutil.copy2(target, backup)
        iscell = np.array(original, dtype=np.float64, copy=True).reshape(n_rois, -1)[:, :2]
    else:
        iscell = np.zeros((n_rois, 2), np.float64)
    human = np.asarray(table["human_label"])
    proba = np.asarray(table["probability"], np.float64)
    prob = np.where(human > 0, 1.0, np.where(human < 0, 0.0, np.nan_to_num(proba, nan=0.5)))
    iscell[src, 0] = (np.asarray(table["final_label"]) > 0).astype(np.float64)
    iscell[src, 1] = prob
    suite2p_dir.mkdir(parents=True, exist_ok=True)
    tmp = suite2p_dir / "iscell.actsort-tmp.npy"
    np.save(tmp, iscell)
    tmp.replace(target)
    return target


def _write_nwb(table: dict, out: Path, store_path: Path) -> Path:
    """Add the table's columns to the PlaneSegmentation of an NWB file (``out``: the source NWB
    file of the extraction, edited in place after a backup copy)."""
    try:
        from pynwb import NWBHDF5IO
    except ImportError as exc:
        raise ImportError("NWB export needs pynwb: pip install 'actsort-gpu[nwb]'") from exc
    out = Path(out)
    if not out.is_file():
        raise FileNotFoundError(f"{out}: NWB file not found (pass the extraction's .nwb file)")
    backup = out.with_name(out.stem + ".actsort-backup.nwb")
    if not backup.exists():
        shutil.copy2(out, backup)
    with NWBHDF5IO(str(out), "a") as io:
        nwb = io.read()
        planes = [obj for obj in nwb.objects.values()
                  if type(obj).__name__ == "PlaneSegmentation"]
        if not planes:
            raise ValueError(f"{out}: no PlaneSegmentation table to add the labels to")
        plane = planes[0]
        n = len(plane.id)
        src = np.asarray(table["source_index"], np.int64)
        cols = {"actsort_human_label": np.zeros(n, np.int8),
                "actsort_probability": np.full(n, np.nan, np.float32),
                "actsort_final_label": np.zeros(n, np.int8)}
        cols["actsort_human_label"][src] = table["human_label"]
        cols["actsort_probability"][src] = table["probability"]
        cols["actsort_final_label"][src] = table["final_label"]
        for name, values in cols.items():
            if name in plane.colnames:
                raise ValueError(f"{out}: column {name} exists already; export to a fresh copy")
            plane.add_column(name=name, description=f"{name} from {store_path}", data=values)
        io.write(nwb)
    return out


def export_labels(store_path, format: str, out=None, *, learner=None, dataset: int = 0,
                  config=None) -> Path:
    """Export one store's curation; returns the path written.

    format : csv | parquet | suite2p | nwb | classifier
    out : file (csv, parquet, classifier .npz, nwb: the NWB file to annotate) or folder (suite2p:
        the Suite2p plane folder; default the store's recorded extraction path). Default for the
        table formats: ``<store>/exports/labels.<ext>``.
    """
    from .store import SortStore

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    store_path = Path(store_path)
    store = SortStore.open(store_path)
    if format == "classifier":
        from .active.transfer import save_classifier

        if learner is None:
            learner = _session_learner(store_path, config)
        out = Path(out) if out is not None else store_path / "exports" / "classifier.npz"
        out.parent.mkdir(parents=True, exist_ok=True)
        return save_classifier(out, learner)
    table = label_table(store_path, learner=learner, dataset=dataset, config=config)
    if format in ("csv", "parquet"):
        out = Path(out) if out is not None else store_path / "exports" / f"labels.{format}"
        path = write_table_csv(table, out) if format == "csv" else _write_parquet(table, out)
    elif format == "suite2p":
        ext = store.attrs.get("extraction") or {}
        if out is None:
            if ext.get("format") != "suite2p":
                raise ValueError(f"{store_path}: the extraction was {ext.get('format')!r}, not "
                                 "Suite2p; pass --out FOLDER to write an iscell.npy anyway")
            out = Path(ext["path"])
            out = out if out.is_dir() else out.parent
        path = write_suite2p_iscell(table, Path(out))
    else:
        if out is None:
            ext = store.attrs.get("extraction") or {}
            if ext.get("format") != "nwb":
                raise ValueError(f"{store_path}: the extraction was not NWB; pass --out FILE.nwb")
            out = ext["path"]
        path = _write_nwb(table, Path(out), store_path)
    n_h = int((table["human_label"] != 0).sum())
    log.info("%s: exported %d candidates (%d human labels) to %s at %s", store_path,
             len(table["candidate"]), n_h, path, datetime.now(timezone.utc).isoformat())
    return path
