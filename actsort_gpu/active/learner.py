"""Learner state for a labelling session: one classifier over one or more datasets (animals).

The page (``actsort_gpu.ui``) and the CLI call these methods; each returns in milliseconds
(warm-started fit on the labelled rows + one matmul over all N):

    learner = Learner.open(["m1.actsort", "m2.actsort"], annotator="ana")
    i = learner.next_query()[0]         # global candidate index (datasets concatenated)
    learner.label(i, CELL)              # journal line fsynced before this returns
    learner.undo(); learner.redo(); learner.unlabel(i)
    p = learner.probabilities()         # (N,) float32 numpy, P(cell)
    d = learner.decisions()             # (N,) int8 +1/-1

Labels live in each store's journal (``labels/journal.jsonl``); the state is its replay. A
global index i maps to (dataset, local candidate) with ``locate(i)``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import CELL, NOT_CELL, UNLABELLED
from .engine import Engine, Policy, product_policy
from .journal import Journal
from .linear import zscore_columns

log = logging.getLogger(__name__)

__all__ = ["Learner", "DatasetInput", "QueryRecord", "dataset_from_store", "read_journal"]


@dataclass
class DatasetInput:
    """One animal/session: name, raw features (N_d, F), feature names/version, journal path."""

    name: str
    features: np.ndarray
    feature_names: list[str] = field(default_factory=list)
    feature_version: str = ""
    journal_path: Path | None = None


def dataset_from_store(path, *, use_embeddings: bool = False) -> DatasetInput:
    """The learner's view of one sort store: raw features (N, F) with names and version, plus
    ``embeddings/matrix`` appended (names ``emb<k>``, version ``+emb:<encoder id>``) when
    ``use_embeddings`` and present, and the path of the store's label journal."""
    from ..store import SortStore

    store = SortStore.open(path)
    if not store.has("features/matrix"):
        raise ValueError(f"{path}: no features/matrix in the store; run `actsort features {path}`")
    arr = store.array("features/matrix")
    x = np.asarray(arr[...], dtype=np.float32)
    names = list(arr.attrs.get("names", []))
    version = str(arr.attrs.get("version", ""))
    if use_embeddings and store.has("embeddings/matrix"):
        emb = store.array("embeddings/matrix")
        x = np.concatenate([x, np.asarray(emb[...], dtype=np.float32)], axis=1)
        names = names + [f"emb{k}" for k in range(emb.shape[1])]
        version = f"{version}+emb:{emb.attrs.get('encoder_id', '')}"
    return DatasetInput(Path(path).name, x, names, version,
                        Path(store.path) / "labels" / "journal.jsonl")


def read_journal(dataset: DatasetInput):
    """Replay the dataset's journal read-only (no lock: works beside a running page).

    Returns (labels (N,) int8 of +1/-1/0, the journal or None when there is none).
    """
    labels = np.zeros(dataset.features.shape[0], np.int8)
    if dataset.journal_path is None or not Path(dataset.journal_path).exists():
        return labels, None
    journal = Journal(dataset.journal_path, read_only=True)
    for (name, cand), lab in journal.labels.items():
        if name == dataset.name and 0 <= cand < len(labels):
            labels[cand] = lab
    return labels, journal


@dataclass(frozen=True)
class QueryRecord:
    candidate: int        # global index
    strategy: str         # strategy actually used (cold start may differ from the policy)
    time: str


class Learner:
    """Labels per candidate (+1 / -1 / 0, with annotator and time), query history, threshold and
    strategy, for several datasets sharing one classifier.

    datasets : list of DatasetInput (features are z-scored per dataset here, ddof=1)
    policy : Policy (default: from ActiveConfig)
    annotator : name written on every journal line
    device : "cpu" | "cuda" | "auto"
    pretrained : optional ``transfer.PortableClassifier`` to fine-tune from
    """

    def __init__(self, datasets: list[DatasetInput], policy: Policy | None = None,
                 annotator: str = "anonymous", device: str = "auto", seed: int = 0,
                 pretrained=None, coral: bool = False):
        if not datasets:
            raise ValueError("Learner: at least one dataset is needed")
        n_feat = {d.features.shape[1] for d in datasets}
        if len(n_feat) != 1:
            raise ValueError(f"datasets have different feature counts {sorted(n_feat)}: "
                             + ", ".join(f"{d.name}: {d.features.shape[1]}" for d in datasets))
        names = {tuple(d.feature_names) for d in datasets if d.feature_names}
        if len(names) > 1:
            raise ValueError("datasets have different feature names: "
                             + ", ".join(d.name for d in datasets))
        if len({d.name for d in datasets}) != len(datasets):
            raise ValueError(f"dataset names must be unique, got {[d.name for d in datasets]}")
        self.datasets = datasets
        self.annotator = annotator
        self.policy = policy or product_policy()
        self.device = _torch_device(device)
        self.offsets = np.cumsum([0] + [d.features.shape[0] for d in datasets])
        z = np.concatenate([zscore_columns(d.features) for d in datasets]).astype(np.float32)
        pre = None
        self.pretrained = pretrained
        if pretrained is not None:
            pretrained.check_compatible(datasets[0].feature_names, datasets[0].feature_version)
            px = pretrained.features
            if coral:
                from .transfer import coral_align

                z = coral_align(z, px)
            pre = (px, pretrained.labels)
        self.engine = Engine(z, self.policy, device=self.device, seed=seed, pretrained=pre)
        self.history: list[QueryRecord] = []
        self.label_info: dict[int, tuple[str, str]] = {}   # global i -> (annotator, time)
        self.journals: list[Journal | None] = []
        for d_i, d in enumerate(datasets):
            if d.journal_path is None:
                self.journals.append(None)
                continue
            j = Journal(d.journal_path)
            self.journals.append(j)
            for (ds, cand), lab in j.labels.items():
                if ds != d.name:
                    log.warning("%s: journal line for dataset %r ignored (this store is %r)",
                                d.journal_path, ds, d.name)
                    continue
                self._check_local(d_i, cand)
                self.engine.labels[self.offsets[d_i] + cand] = lab
            for ev in j.events:
                if ev.dataset == d.name and ev.label != 0:
                    self.label_info[int(self.offsets[d_i] + ev.candidate)] = (ev.annotator,
                                                                               ev.time)
        self.engine._dirty = True
        self._memory_undo: list[tuple[int, int, int]] = []   # (i, previous, new) without journal
        self._memory_redo: list[tuple[int, int, int]] = []
        # Dataset of each undoable / redoable action, oldest first (rebuilt from the journals so
        # that undo works across sessions).
        undo_evs = sorted((ev.time, d) for d, j in enumerate(self.journals) if j is not None
                          for ev in j.undo_stack)
        redo_evs = sorted(((ev.time, d) for d, j in enumerate(self.journals) if j is not None
                           for ev in j.redo_stack), reverse=True)
        self._action_order: list[int] = [d for _, d in undo_evs]
        self._redo_order: list[int] = [d for _, d in redo_evs]

    # ------------------------------------------------------------------ construction
    @classmethod
    def open(cls, store_paths, policy: Policy | None = None, annotator: str = "anonymous",
             device: str = "auto", seed: int = 0, use_embeddings: bool = False,
             pretrained=None, coral: bool = False) -> "Learner":
        """A learner over sort stores (``features/matrix`` with attrs ``names``/``version``;
        ``embeddings/matrix`` appended when ``use_embeddings`` and present)."""
        paths = [store_paths] if isinstance(store_paths, (str, Path)) else store_paths
        datasets = [dataset_from_store(p, use_embeddings=use_embeddings) for p in paths]
        return cls(datasets, policy, annotator, device, seed, pretrained, coral)

    # ------------------------------------------------------------------ indexing
    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """Global index -> (dataset index, local candidate index)."""
        if not 0 <= i < self.n:
            raise IndexError(f"candidate {i} out of range [0, {self.n})")
        d = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return d, int(i - self.offsets[d])

    def global_index(self, dataset: int, local: int) -> int:
        self._check_local(dataset, local)
        return int(self.offsets[dataset] + local)

    def _check_local(self, d_i: int, cand: int) -> None:
        size = self.offsets[d_i + 1] - self.offsets[d_i]
        if not 0 <= cand < size:
            raise ValueError(f"dataset {self.datasets[d_i].name}: candidate {cand} out of "
                             f"range [0, {size})")

    # ------------------------------------------------------------------ labelling
    @property
    def labels(self) -> np.ndarray:
        """(N,) int8 expert labels (+1, -1, 0); a copy."""
        return self.engine.labels.copy()

    def label(self, i: int, y: int, origin: str = "human") -> None:
        """Set candidate i to y (CELL, NOT_CELL or UNLABELLED); durable before returning."""
        if y not in (CELL, NOT_CELL, UNLABELLED):
            raise ValueError(f"label must be {CELL}, {NOT_CELL} or {UNLABELLED}, got {y!r}")
        d, local = self.locate(int(i))
        previous = int(self.engine.labels[i])
        j = self.journals[d]
        if j is not None:
            ev = j.append(self.datasets[d].name, local, int(y), self.annotator, origin,
                          previous=previous)
            stamp = ev.time
        else:
            stamp = datetime.now(timezone.utc).isoformat()
            self._memory_undo.append((int(i), previous, int(y)))
            self._memory_redo.clear()
        self._action_order.append(d)
        self._redo_order = []
        self.engine.set_label(int(i), int(y))
        if y != UNLABELLED:
            self.label_info[int(i)] = (self.annotator, stamp)
        else:
            self.label_info.pop(int(i), None)

    def unlabel(self, i: int) -> None:
        self.label(i, UNLABELLED)

    def undo(self) -> int | None:
        """Revert the latest labelling action; returns the candidate or None."""
        if not self._action_order:
            return None
        d = self._action_order.pop()
        j = self.journals[d]
        if j is not None:
            ev = j.undo(self.annotator)
            if ev is None:
                return None
            i, value = self.offsets[d] + ev.candidate, ev.label
        else:
            i, previous, _new = self._memory_undo.pop()
            self._memory_redo.append((i, previous, _new))
            value = previous
        self._redo_order.append(d)
        self.engine.set_label(int(i), int(value))
        return int(i)

    def redo(self) -> int | None:
        """Re-apply the latest undone action; returns the candidate or None."""
        if not self._redo_order:
            return None
        d = self._redo_order.pop()
        j = self.journals[d]
        if j is not None:
            ev = j.redo(self.annotator)
            if ev is None:
                return None
            i, value = self.offsets[d] + ev.candidate, ev.label
        else:
            i, previous, new = self._memory_redo.pop()
            self._memory_undo.append((i, previous, new))
            value = new
        self._action_order.append(d)
        self.engine.set_label(int(i), int(value))
        return int(i)

    # ------------------------------------------------------------------ model
    def probabilities(self) -> np.ndarray | None:
        """(N,) float32 P(cell), or None until both classes have a label."""
        p = self.engine.fit()
        return None if p is None else p.detach().cpu().numpy().astype(np.float32)

    def decisions(self) -> np.ndarray:
        """(N,) int8: +1 where P(cell) > threshold, else -1 (all -1 before the first fit)."""
        return self.engine.decisions()

    def overall(self) -> np.ndarray:
        """(N,) int8: expert labels where given, classifier decisions elsewhere (the export)."""
        lab = self.engine.labels
        return np.where(lab != 0, lab, self.decisions()).astype(np.int8)

    @property
    def threshold(self) -> float:
        return self.policy.threshold

    def set_threshold(self, threshold: float) -> None:
        self._set_policy(replace(self.policy, threshold=float(threshold)))

    @property
    def strategy(self) -> str:
        return self.policy.strategy

    def set_strategy(self, strategy: str, dcal_weight: float | None = None) -> None:
        w = self.policy.dcal_weight if dcal_weight is None else float(dcal_weight)
        self._set_policy(replace(self.policy, strategy=strategy, dcal_weight=w))

    def _set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self.engine.set_policy(policy)

    def next_query(self, k: int = 1) -> list[int]:
        """Next k global indices to label (unlabelled; empty when all are labelled)."""
        from .strategies import cold_start_strategy

        used = cold_start_strategy(self.engine.labels, self.policy.strategy,
                                   self.policy.cold_start_per_class)
        picks = self.engine.next_query(k)
        now = datetime.now(timezone.utc).isoformat()
        self.history.extend(QueryRecord(int(i), used, now) for i in picks)
        return picks

    def audit(self, mode: str) -> np.ndarray:
        """Unlabelled global indices to review: 'cells', 'non-cells' or 'uncertain'."""
        return self.engine.audit(mode)

    def step_seconds(self, i: int, y: int) -> float:
        """Time of one full update (label, refit, rescore, next query), for diagnostics."""
        t0 = time.perf_counter()
        self.label(i, y)
        self.engine.fit()
        self.next_query()
        return time.perf_counter() - t0

    def close(self) -> None:
        for j in self.journals:
            if j is not None:
                j.close()


def _torch_device(device: str) -> str:
    if device in ("cpu", "cuda"):
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                log.warning("torch sees no CUDA device: using the CPU")
                return "cpu"
        return device
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
