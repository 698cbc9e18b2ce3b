"""Training data: a Dataset over candidate inputs and a LightningDataModule over sort stores.

:func:`candidate_inputs` (the pure function that turns store arrays into encoder inputs) lives
in inputs.py, which imports neither torch nor lightning, and is re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .inputs import candidate_inputs, store_inputs

log = logging.getLogger(__name__)

__all__ = [
    "CandidateDataset",
    "EmbedDataModule",
    "candidate_inputs",
    "load_store_inputs",
    "store_labels",
]


class CandidateDataset(Dataset):
    """Candidates' encoder inputs held in memory.

    images : (n, C, S, S) float32 (kept as float16 in memory, half the RAM; inputs are in [0, 1])
    traces : (n, n_events * event_frames) float32
    valid : (n, n_events) bool
    labels : (n,) int8, +1 / -1 / 0 (unlabelled); None: all 0
    Items are ``(image, trace, valid, label)`` tensors.
    """

    def __init__(self, images, traces, valid, labels=None):
        n = len(images)
        for name, arr in (("traces", traces), ("valid", valid)):
            if len(arr) != n:
                raise ValueError(f"{name}: expected {n} rows (one per image), found {len(arr)}")
        if labels is not None and len(labels) != n:
            raise ValueError(f"labels: expected {n} values, found {len(labels)}")
        self.images = torch.from_numpy(np.asarray(images, dtype=np.float16))
        self.traces = torch.from_numpy(np.asarray(traces, dtype=np.float32))
        self.valid = torch.from_numpy(np.asarray(valid, dtype=bool))
        lab = np.zeros(n, np.int8) if labels is None else np.asarray(labels, dtype=np.int8)
        self.labels = torch.from_numpy(lab)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].float(), self.traces[i], self.valid[i], self.labels[i]


def store_labels(store) -> np.ndarray:
    """Labels for supervised fine-tuning, (N,) int8: the current labels of the store's label
    journal (replayed by :class:`actsort_gpu.labels.Journal`, read-only) when it holds
    any, else ``truth/labels``, else zeros."""
    n = store.n_candidates
    labels = np.zeros(n, np.int8)
    path = store.journal_path
    if path.exists():
        from ..labels import CELL, NOT_CELL, Journal

        current = Journal(path, read_only=True).labels  # {(dataset, candidate): +1/-1/2}
        for (_, candidate), label in current.items():
            if not 0 <= candidate < n:
                raise ValueError(
                    f"{path}: label for candidate {candidate}, but the store has {n} candidates"
                )
            labels[candidate] = label if label in (CELL, NOT_CELL) else 0  # unsure: no label
        if labels.any():
            return labels
    truth = store.truth_labels()
    if truth is not None:
        return truth.astype(np.int8)
    return labels


def load_store_inputs(
    path,
    image_size: int,
    *,
    max_candidates: int | None = None,
    seed: int = 0,
    with_labels: bool = False,
    block: int = 4096,
    n_events: int | None = None,
    event_frames: int | None = None,
):
    """Encoder inputs of one store (optionally a seeded random subset of ``max_candidates``).

    Returns images, traces, valid, labels ((n,) int8, zeros unless ``with_labels``) and the
    candidate indices used.
    """
    from ..store import SortStore

    store = SortStore.open(path, "r")
    store.require("preprocess")
    n = store.n_candidates
    chosen = np.arange(n)
    if max_candidates is not None and max_candidates < n:
        chosen = np.sort(np.random.default_rng(seed).choice(n, max_candidates, replace=False))
    parts = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        keep = chosen[(chosen >= start) & (chosen < stop)] - start
        if keep.size == 0:
            continue
        parts.append(
            store_inputs(
                store,
                slice(start, stop),
                image_size,
                n_events=n_events,
                event_frames=event_frames,
                keep=keep,
            )
        )
    images = np.concatenate([p[0] for p in parts])
    traces = np.concatenate([p[1] for p in parts])
    valid = np.concatenate([p[2] for p in parts])
    labels = store_labels(store)[chosen] if with_labels else np.zeros(len(chosen), np.int8)
    return images, traces, valid, labels, chosen


class EmbedDataModule(L.LightningDataModule):
    """Candidates from one or many sort stores (or from arrays, for tests), for training.

    Every store must be preprocessed with the same snapshot length and event count (the first
    store sets them). ``setup`` reads the stores block by block (4,096 candidates at a time) and
    keeps the inputs, a seeded subsample of ``max_candidates_per_store`` per store if given,
    in memory (about 3 kB per candidate at 32 px). Shuffling uses a generator seeded with
    ``seed``, so a run is reproducible.
    """

    def __init__(
        self,
        store_paths: Sequence[str | Path] = (),
        *,
        image_size: int = 32,
        batch_size: int = 256,
        max_candidates_per_store: int | None = None,
        seed: int = 0,
        with_labels: bool = False,
        arrays: tuple | None = None,
    ):
        super().__init__()
        if not store_paths and arrays is None:
            raise ValueError("store_paths: expected at least one sort store (or arrays=...)")
        self.store_paths = [Path(p) for p in store_paths]
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.max_candidates_per_store = max_candidates_per_store
        self.seed = int(seed)
        self.with_labels = with_labels
        self._arrays = arrays
        self.dataset: CandidateDataset | None = None
        self.n_events: int | None = None
        self.event_frames: int | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        if self._arrays is not None:
            images, traces, valid, *rest = self._arrays
            labels = rest[0] if rest else None
            self.n_events = int(np.asarray(valid).shape[1])
            self.event_frames = int(np.asarray(traces).shape[1]) // self.n_events
            self.dataset = CandidateDataset(images, traces, valid, labels)
            return
        parts = []
        for k, path in enumerate(self.store_paths):
            im, tr, va, lab, _ = load_store_inputs(
                path,
                self.image_size,
                max_candidates=self.max_candidates_per_store,
                seed=self.seed + k,
                with_labels=self.with_labels,
                n_events=self.n_events,
                event_frames=self.event_frames,
            )
            if self.n_events is None:
                self.n_events = va.shape[1]
                self.event_frames = tr.shape[1] // va.shape[1]
            parts.append((im, tr, va, lab))
            log.info("%s: %d candidates for training", path, len(lab))
        self.dataset = CandidateDataset(*(np.concatenate([p[i] for p in parts]) for i in range(4)))

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator()
        gen.manual_seed(self.seed)
        # drop_last keeps BatchNorm away from a batch of one
        drop_last = len(self.dataset) > self.batch_size
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            generator=gen,
            drop_last=drop_last,
            num_workers=0,
        )
