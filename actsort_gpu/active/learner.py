"""The labelling session: one classifier over one or more datasets (animals), behind one facade.

The page (``actsort_gpu.ui``), the exporters, ``apply`` and the demo use only these methods;
the active-learning engine behind them is private. Each call returns in milliseconds
(warm-started fit on the labelled rows + one matmul over all N)::

    learner = Learner.open(["m1.actsort", "m2.actsort"], annotator="ana")
    i = learner.next_query()[0]          # global candidate index (datasets concatenated)
    learner.label(i, CELL)               # journal line fsynced before this returns
    learner.label_many([4, 5, 9], NOT_CELL)   # one action: one undo reverts all three
    learner.undo(); learner.redo()
    human = learner.human()              # (N,) int8 +1 / -1 / 0
    learner.label(7, UNSURE)             # skipped for now: journalled, human() keeps 0
    unsure = learner.unsure()            # (N,) bool: the "unsure" queue (audit("unsure"))
    proba, decision = learner.model()    # (N,) float32 P(cell) (None before training), int8
    final = learner.final()              # human label where given, else the decision

    ro = Learner.read_only("m1.actsort")  # replays the journal without its lock (exports)

Labels live in each store's journal (``labels/journal.jsonl``, :mod:`actsort_gpu.labels`); the
state is its replay. A dataset without a journal path keeps an in-memory journal (headless
sessions). A global index i maps to (dataset, local candidate) with ``locate(i)``.

Unsure (``UNSURE``, key U on the page): journalled like a label, but the classifier sees 0
(unlabelled) and ``human()`` returns 0 for it, so it never trains and never enters the accuracy
estimate. ``unsure()`` is its mask; queries and the audits skip it; ``audit("unsure")`` lists
it (the page's review queue). Labelling it +1 / -1 later clears it.
"""

from __future__ import annotations

import logging
import operator
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .. import UNSURE, schema
from ..labels import (
    CELL,
    NOT_CELL,
    UNLABELLED,
    Journal,
    final_labels,
    other_journal_note,
    other_journals,
)
from .engine import (
    EMBEDDING_BLOCK_SCALE,
    INPUTS_MIN_PER_CLASS,
    Engine,
    Policy,
    product_policy,
    resolve_inputs_start,
)
from .linear import zscore_columns

log = logging.getLogger(__name__)

__all__ = [
    "DatasetInput",
    "LabelRecord",
    "Learner",
    "QueryRecord",
    "dataset_from_store",
    "top_contributions",
]


@dataclass
class DatasetInput:
    """One animal/session: name, raw features (N_d, F), feature names/version, journal path
    (None: an in-memory journal), and optionally the store's learned embeddings (N_d, D) with
    the encoder's id and whether that encoder was trained with labels.

    ``name`` is what reports and the page show (unique among a learner's datasets: it may carry
    parent folders, ``m1/plane0.actsort``); ``journal_name`` is what the journal's lines call
    the store (its folder name; "" = ``name``)."""

    name: str
    features: np.ndarray
    feature_names: list[str] = field(default_factory=list)
    feature_version: str = ""
    journal_path: Path | None = None
    embeddings: np.ndarray | None = None
    encoder_id: str = ""
    encoder_supervised: bool = False
    journal_name: str = ""

    @property
    def journal_dataset(self) -> str:
        """The dataset name written in (and read from) the journal's lines."""
        return self.journal_name or self.name

    def input_names(self, with_embeddings: bool) -> list[str]:
        """Names of the classifier's input columns: the features, then ``emb<k>``."""
        extra = [f"emb{k}" for k in range(self.embeddings.shape[1])] if with_embeddings else []
        return list(self.feature_names) + extra

    def input_version(self, with_embeddings: bool) -> str:
        """The feature-set version, with ``+emb:<encoder id>`` when embeddings are inputs."""
        return (
            f"{self.feature_version}+emb:{self.encoder_id}"
            if with_embeddings
            else (self.feature_version)
        )


def dataset_from_store(path, *, use_embeddings=False, name: str | None = None) -> DatasetInput:
    """The learner's view of one sort store: raw features (N, F) with names and version, the
    path of the store's label journal, and the embedding matrix (N, D) when ``use_embeddings``
    (true or "auto") and the store has one (the Learner decides whether the classifier uses
    it: ``active.use_embeddings``). ``name``: what to show (default: the folder name)."""
    from ..store import SortStore

    store = SortStore.open(path)
    if not store.has(schema.FEATURE_MATRIX):
        raise ValueError(
            f"{path}: no {schema.FEATURE_MATRIX} in the store; run `actsort features {path}`"
        )
    arr = store.array(schema.FEATURE_MATRIX)
    x = np.asarray(arr[...], dtype=np.float32)
    names = list(arr.attrs.get("names", []))
    version = str(arr.attrs.get("version", ""))
    emb, encoder, supervised = None, "", False
    if use_embeddings and store.has(schema.EMBEDDING_MATRIX):
        matrix = store.embedding_matrix()
        emb = np.asarray(matrix.values, dtype=np.float32)
        encoder, supervised = matrix.encoder_id, matrix.encoder_supervised
    journal = Path(store.path) / schema.JOURNAL_FILE
    folder = Path(path).name
    return DatasetInput(
        name or folder, x, names, version, journal, emb, encoder, supervised, journal_name=folder
    )


def _wants_embeddings(policy: Policy | None, pretrained) -> bool:
    """Whether the learner could use the stores' embeddings under ``policy`` (None: the
    product's) with ``pretrained`` (a classifier fixes its own inputs)."""
    if pretrained is not None:
        return "+emb:" in pretrained.feature_version
    return (policy or product_policy()).inputs != "features"


@dataclass(frozen=True)
class TransferStatus:
    """A pretrained classifier on this session (``Learner.transfer_status``).

    model_in_use : "classifier" (alone), "union" (its rows + your labels) or "labels" (yours)
    recent_agreed / recent_labels : the classifier alone agreed with this many of the latest
        (at most 20) human labels
    prequential : per candidate model, balanced accuracy on the labels before each was learned
    domain_auc : 0.5 = this recording's features look like the training recordings'; near 1 =
        clearly unlike them (expect the classifier to need correcting)
    """

    classifier_id: str
    model_in_use: str
    recent_agreed: int
    recent_labels: int
    prequential: dict
    domain_auc: float

    UNLIKE_AUC = 0.8  # above this, the page says the recording looks unlike the training data

    def summary(self) -> str:
        """One line for the page and ``actsort info``."""
        used = {
            "classifier": "the pretrained classifier alone",
            "union": "the pretrained classifier refined with your labels",
            "labels": "your labels alone (they beat the pretrained classifier here)",
        }[self.model_in_use]
        line = f"Decisions from {used}."
        if self.recent_labels:
            line += (
                f" The pretrained classifier agreed with {self.recent_agreed} of your last "
                f"{self.recent_labels} labels."
            )
        if self.domain_auc >= self.UNLIKE_AUC:
            line += (
                f" This recording looks unlike the classifier's training data (separable with "
                f"AUC {self.domain_auc:.2f}): check its decisions early."
            )
        return line


@dataclass(frozen=True)
class QueryRecord:
    candidate: int  # global index
    strategy: str  # strategy actually used (cold start may differ from the policy)
    time: str


@dataclass(frozen=True)
class LabelRecord:
    """One journal line in the learner's terms (``history()``)."""

    candidate: int  # global index
    label: int  # value the candidate got (+1 / -1 / 0)
    previous: int
    annotator: str
    time: str  # ISO UTC
    origin: str  # human | import | undo | redo
    action: str  # lines of one action share it ('' in old journals)


class Learner:
    """Labels per candidate (+1 / -1 / 0, with annotator and time), query history, threshold and
    strategy, for several datasets sharing one classifier.

    datasets : list of DatasetInput (features are z-scored per dataset here, ddof=1)
    policy : Policy (default: from ActiveConfig)
    annotator : name written on every journal line
    device : "cpu" | "cuda" | "auto"
    pretrained : optional ``transfer.PortableClassifier`` to fine-tune from
    read_only : replay the journals without taking their locks; labelling raises
    """

    def __init__(
        self,
        datasets: list[DatasetInput],
        policy: Policy | None = None,
        annotator: str = "anonymous",
        device: str = "auto",
        seed: int = 0,
        pretrained=None,
        coral: bool = False,
        read_only: bool = False,
    ):
        if not datasets:
            raise ValueError("Learner: at least one dataset is needed")
        n_feat = {d.features.shape[1] for d in datasets}
        if len(n_feat) != 1:
            raise ValueError(
                f"datasets have different feature counts {sorted(n_feat)}: "
                + ", ".join(f"{d.name}: {d.features.shape[1]}" for d in datasets)
            )
        names = {tuple(d.feature_names) for d in datasets if d.feature_names}
        if len(names) > 1:
            raise ValueError(
                "datasets have different feature names: " + ", ".join(d.name for d in datasets)
            )
        if len({d.name for d in datasets}) != len(datasets):
            raise ValueError(f"dataset names must be unique, got {[d.name for d in datasets]}")
        self.datasets = datasets
        self.annotator = annotator
        self.policy = resolve_inputs_start(
            policy or product_policy(),
            all(d.encoder_supervised for d in datasets if d.embeddings is not None),
        )
        self.device = _torch_device(device)
        self.read_only_session = read_only
        self._offsets = np.cumsum([0] + [d.features.shape[0] for d in datasets])
        z = np.concatenate([zscore_columns(d.features) for d in datasets]).astype(np.float32)
        extra = self._embedding_block(datasets, self.policy, pretrained)
        pre = None
        self.pretrained = pretrained
        if pretrained is not None:
            with_emb = extra is not None
            pretrained.check_compatible(
                datasets[0].input_names(with_emb), datasets[0].input_version(with_emb)
            )
            if with_emb:  # the classifier was trained on both blocks: one input matrix
                z = np.concatenate([z, EMBEDDING_BLOCK_SCALE * extra], axis=1)
                extra = None
            px = pretrained.features
            if coral:
                from .transfer import coral_align

                z = coral_align(z, px)
            pre = (px, pretrained.labels, pretrained.weights)
        self._engine = Engine(
            z, self.policy, device=self.device, seed=seed, pretrained=pre, extra=extra
        )
        self._inputs_fixed_both = pretrained is not None and "+emb:" in pretrained.feature_version
        self.queries: list[QueryRecord] = []
        self._sources: dict[int, tuple[str, str]] = {}  # global i -> (annotator, time)
        self._journals: list[Journal] = []
        labels = np.zeros(self.n, np.int8)
        self._unsure = np.zeros(self.n, bool)  # journal label UNSURE: 0 for the engine
        for d_i, d in enumerate(datasets):
            # one replay policy for the page, sort, export and apply (labels.py): a line naming
            # a candidate outside this dataset stops the replay with the journal and offset
            # (every line of a store's own journal is its label, whatever name the store had)
            j = Journal(
                d.journal_path,
                read_only=read_only,
                n_candidates=d.features.shape[0],
                dataset=d.journal_dataset,
            )
            self._journals.append(j)
            if d.journal_path is not None:
                labels_dir = Path(d.journal_path).parent
                for copy in other_journals(labels_dir):
                    log.warning("%s", other_journal_note(labels_dir.parent, copy))
            for (_, cand), lab in j.labels.items():
                g = self.global_index(d_i, cand)
                labels[g] = UNLABELLED if lab == UNSURE else lab
                self._unsure[g] = lab == UNSURE
            for ev in j.events:
                self._note_source(d_i, ev.candidate, ev.label, ev.annotator, ev.time)
        self._engine.set_labels(labels)

    # ------------------------------------------------------------------ construction
    @classmethod
    def open(
        cls,
        store_paths,
        policy: Policy | None = None,
        annotator: str = "anonymous",
        device: str = "auto",
        seed: int = 0,
        use_embeddings: bool | None = None,
        pretrained=None,
        coral: bool = False,
    ) -> Learner:
        """A learner over sort stores, writing to their journals (each journal's lock held
        until ``close``). ``use_embeddings``: read the stores' embeddings (None: when the
        policy's ``inputs`` or the classifier can use them)."""
        load = _wants_embeddings(policy, pretrained) if use_embeddings is None else use_embeddings
        datasets = _datasets_from_stores(store_paths, load)
        return cls(datasets, policy, annotator, device, seed, pretrained, coral)

    @classmethod
    def read_only(
        cls,
        store_paths,
        policy: Policy | None = None,
        device: str = "cpu",
        use_embeddings: bool | None = None,
        pretrained=None,
    ) -> Learner:
        """A learner that replays the stores' journals without locking them (works beside a
        running page); its classifier trains on their labels, labelling raises."""
        load = _wants_embeddings(policy, pretrained) if use_embeddings is None else use_embeddings
        datasets = _datasets_from_stores(store_paths, load)
        return cls(datasets, policy, device=device, pretrained=pretrained, read_only=True)

    # ------------------------------------------------------------------ indexing
    @property
    def n(self) -> int:
        return int(self._offsets[-1])

    @property
    def offsets(self) -> np.ndarray:
        """(n_datasets + 1,) int64: dataset d holds global indices offsets[d]:offsets[d+1]."""
        return self._offsets.copy()

    def dataset_slice(self, dataset: int) -> slice:
        return slice(int(self._offsets[dataset]), int(self._offsets[dataset + 1]))

    def locate(self, i: int) -> tuple[int, int]:
        """Global index -> (dataset index, local candidate index)."""
        if not 0 <= i < self.n:
            raise IndexError(f"candidate {i} out of range [0, {self.n})")
        d = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return d, int(i - self._offsets[d])

    def global_index(self, dataset: int, local: int) -> int:
        size = int(self._offsets[dataset + 1] - self._offsets[dataset])
        if not 0 <= local < size:
            raise ValueError(
                f"dataset {self.datasets[dataset].name}: candidate {local} out of range [0, {size})"
            )
        return int(self._offsets[dataset] + local)

    def _part(self, values, dataset: int | None):
        return values if dataset is None else values[self.dataset_slice(dataset)]

    # ------------------------------------------------------------------ read-outs
    def human(self, dataset: int | None = None) -> np.ndarray:
        """(N,) int8 human labels (+1, -1, 0), of one dataset's candidates when given; a copy."""
        return self._part(self._engine.labels, dataset).copy()

    @property
    def labels(self) -> np.ndarray:
        """(N,) int8 human labels of all datasets; a copy (same as ``human()``)."""
        return self.human()

    def unsure(self, dataset: int | None = None) -> np.ndarray:
        """(N,) bool: candidates marked unsure (``UNSURE``; ``human()`` is 0 there), of one
        dataset's candidates when given; a copy."""
        return self._part(self._unsure, dataset).copy()

    def model(self, dataset: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """(P(cell) (N,) float32 or None before both classes have a label, decisions (N,) int8
        +1 / -1 at the threshold, all -1 before training), of one dataset when given."""
        p = self.probabilities()
        return (
            None if p is None else self._part(p, dataset),
            self._part(self.decisions(), dataset),
        )

    def probabilities(self) -> np.ndarray | None:
        """(N,) float32 P(cell), or None until both classes have a label."""
        p = self._engine.fit()
        return None if p is None else p.detach().cpu().numpy().astype(np.float32)

    def decisions(self) -> np.ndarray:
        """(N,) int8: +1 where P(cell) > threshold, else -1 (all -1 before the first fit)."""
        return self._engine.decisions()

    def is_trained(self) -> bool:
        return self._engine.fit() is not None

    def transfer_status(self) -> TransferStatus | None:
        """How the pretrained classifier fares on this session's labels (None without one)."""
        eng = self._engine
        if not eng.has_prior:
            return None
        eng.fit()
        human = eng.labels
        labelled = np.flatnonzero(human != UNLABELLED)
        # The classifier alone on the labels given, newest first (its prequential record
        # equals this: it never learns).
        order = sorted(labelled, key=lambda i: self._sources.get(int(i), ("", ""))[1])
        recent = np.array(order[-20:], dtype=np.int64)
        prior = eng.prior_proba().detach().cpu().numpy()
        agree = int(((prior[recent] > self.policy.threshold) == (human[recent] > 0)).sum())
        return TransferStatus(
            classifier_id=getattr(self.pretrained, "id", ""),
            model_in_use=eng.model_in_use,
            recent_agreed=agree,
            recent_labels=len(recent),
            prequential=eng.prequential_scores(),
            domain_auc=self._domain_auc(),
        )

    def _domain_auc(self) -> float:
        """How well a linear model tells this session's candidates from the classifier's
        training rows (cross-validated ROC AUC; 0.5 = indistinguishable), computed once."""
        if not hasattr(self, "_domain_auc_value"):
            from .transfer import domain_auc

            x = self._engine.x.detach().cpu().numpy()
            px = self._engine.pre_x.detach().cpu().numpy()
            self._domain_auc_value = domain_auc(px, x)
        return self._domain_auc_value

    def final(self, dataset: int | None = None) -> np.ndarray:
        """(N,) int8: human labels where given, the classifier's decisions elsewhere (what
        the exports call ``final_label``); before training -1 (not a cell) wherever there is
        no human label, as ActSort's evaluation counts them (the exports write 0 there: no
        final label)."""
        _, decision = self.model(dataset)
        return final_labels(self.human(dataset), decision)

    @staticmethod
    def _embedding_block(datasets, policy, pretrained) -> np.ndarray | None:
        """(N, D) z-scored (per dataset) embeddings for the Engine, or None: with a pretrained
        classifier only when it was trained on them; else when ``policy.inputs`` is not
        "features" and every dataset has embeddings of one encoder."""
        have = [d.embeddings is not None for d in datasets]
        if pretrained is not None:
            if "+emb:" not in pretrained.feature_version:
                return None
            if not all(have):
                missing = [d.name for d, h in zip(datasets, have) if not h]
                raise ValueError(
                    f"the classifier was trained with learned embeddings; {missing} have none "
                    "(run `actsort embed` on them)"
                )
        elif policy.inputs == "features" or not all(have):
            if policy.inputs == "both" and not all(have):
                log.warning("use_embeddings: some stores have no embeddings; features alone")
            return None
        encoders = {d.encoder_id for d in datasets}
        if len(encoders) > 1:
            raise ValueError(f"stores embedded by different encoders {sorted(encoders)}")
        return np.concatenate([zscore_columns(d.embeddings) for d in datasets]).astype(np.float32)

    @property
    def uses_embeddings(self) -> bool:
        """Whether the classifier's inputs include the learned embeddings now."""
        return self._inputs_fixed_both or self._engine.inputs_in_use == "both"

    @property
    def feature_names(self) -> list[str]:
        """Names of the classifier's input columns now (features, then ``emb<k>``)."""
        return self.datasets[0].input_names(self.uses_embeddings)

    @property
    def feature_version(self) -> str:
        return self.datasets[0].input_version(self.uses_embeddings)

    def inputs_status(self) -> str:
        """One line for the page and ``actsort info``: which inputs the classifier uses, and
        why (the cross-validated comparison on the labels, when made)."""
        eng = self._engine
        if not eng.has_extra_inputs and not self._inputs_fixed_both:
            if self.pretrained is not None:
                return "Inputs: features (as the pretrained classifier was trained)"
            if self.policy.inputs == "features":
                return "Inputs: features (use_embeddings: false)"
            return "Inputs: features (no embeddings in the store; `actsort embed` makes them)"
        what = "features + learned embeddings" if self.uses_embeddings else "features alone"
        cv = eng.inputs_cv
        if self._inputs_fixed_both:
            why = "as the pretrained classifier was trained"
        elif self.policy.inputs != "auto":
            why = f"use_embeddings: {self.policy.inputs}"
        elif not cv:
            why = f"until each class has {INPUTS_MIN_PER_CLASS} labels"
        else:
            why = (
                f"cross-validated BA on your {eng.inputs_checked_at} labels: features + embeddings "
                f"{cv['both']:.2f}, features {cv['features']:.2f}"
            )
        return f"Inputs: {what} ({why})"

    def contributions(self, i: int, k: int = 6) -> list[tuple[str, float, float]]:
        """The k inputs that push candidate i's score most: (name, z-scored value,
        contribution = coefficient * value to the log-odds), by |contribution| descending;
        empty before training."""
        if not self.is_trained():
            return []
        x = self._engine.x[int(i)].detach().cpu().numpy()
        coef = self._engine.theta[:-1].detach().cpu().numpy()
        return top_contributions(coef, x, self.feature_names, k)

    def training_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The human-labelled rows: (z-scored features (M, F) float32, labels (M,) int8)."""
        idx = np.flatnonzero(self._engine.labels)
        x = self._engine.x[idx].detach().cpu().numpy().astype(np.float32)
        return x, self._engine.labels[idx].astype(np.int8)

    def weights(self) -> np.ndarray | None:
        """Fitted (F + 1,) float64 coefficients then intercept, or None before training."""
        theta = self._engine.theta
        return None if theta is None else theta.detach().cpu().numpy().astype(np.float64)

    def label_source(self, i: int) -> tuple[str, str] | None:
        """(annotator, ISO time) of candidate i's latest label (unsure included), None when
        unlabelled."""
        if self._engine.labels[int(i)] == UNLABELLED and not self._unsure[int(i)]:
            return None
        return self._sources.get(int(i))

    def history(self, dataset: int | None = None) -> list[LabelRecord]:
        """Every journal line (labels, unlabels, undos, redos) as LabelRecords, in time order
        (of one dataset when given)."""
        which = range(len(self.datasets)) if dataset is None else [dataset]
        records = [
            LabelRecord(
                int(self._offsets[d] + ev.candidate),
                ev.label,
                ev.previous,
                ev.annotator,
                ev.time,
                ev.origin,
                ev.action,
            )
            for d in which
            for ev in self._journals[d].events
            if ev.dataset == self.datasets[d].journal_dataset
        ]
        return sorted(records, key=lambda r: r.time) if dataset is None else records

    def disagreements(self, dataset: int) -> list:
        """The dataset's labels that replaced another annotator's different label
        (``labels.Disagreement``, journal order; ``Journal.disagreements``)."""
        return self._journals[dataset].disagreements

    def labelled_order(self, dataset: int) -> list[int]:
        """Local candidates of ``dataset`` in the order they were last given a label (each
        once, at its latest occurrence: ActSort bug B18), only those still labelled (or
        unsure)."""
        seen: dict[int, int] = {}
        for k, rec in enumerate(self.history(dataset)):
            seen[rec.candidate] = k
        human = self._engine.labels
        off = int(self._offsets[dataset])
        return [
            c - off for c in sorted(seen, key=seen.get) if human[c] != UNLABELLED or self._unsure[c]
        ]

    # ------------------------------------------------------------------ labelling
    def label(self, i: int, y: int) -> str:
        """Set candidate i to y (CELL, NOT_CELL, UNLABELLED or UNSURE); durable before
        returning. Returns the action id."""
        return self.label_many([i], y)

    def unlabel(self, i: int) -> str:
        return self.label(i, UNLABELLED)

    def label_many(self, items, y: int) -> str:
        """Give label y to the global indices ``items`` (distinct, one dataset) as one action:
        one journal write, one undo reverts all of them. Returns the action id."""
        if y not in (CELL, NOT_CELL, UNLABELLED, UNSURE) or isinstance(y, bool):
            raise ValueError(
                f"label must be {CELL}, {NOT_CELL}, {UNLABELLED} or {UNSURE} (unsure), got {y!r}"
            )
        self._check_writable()
        items = [_candidate_index(i) for i in items]
        where = [self.locate(i) for i in items]
        datasets = {d for d, _ in where}
        if len(datasets) != 1:
            raise ValueError(
                f"one action labels candidates of one dataset; got datasets "
                f"{sorted(self.datasets[d].name for d in datasets)}"
            )
        d = datasets.pop()
        action = self._journals[d].append_many(
            self.datasets[d].journal_dataset, [c for _, c in where], int(y), self.annotator
        )
        self._apply(d, action)
        return action[0].action

    def import_labels(self, dataset: int, carry) -> tuple[str | None, np.ndarray]:
        """Give the dataset's local candidates ``carry.rows`` their ``carry.values`` (a
        ``label_import.LabelCarry``) as one ``import`` action, skipping those with a label or
        unsure. Returns (the action id, None when none was unlabelled; (M,) bool, which rows
        took their value)."""
        self._check_writable()
        action, new = self._journals[dataset].append_new(
            self.datasets[dataset].journal_dataset,
            carry.rows.tolist(),
            carry.values.tolist(),
            carry.annotator,
        )
        if action is None:
            return None, new
        self._apply(dataset, action)
        return action[0].action, new

    def undo(self) -> list[int] | None:
        """Revert the latest labelling action (over all datasets); returns the global indices
        it changed (in the action's order), or None when there is nothing to undo."""
        return self._step(self._newest("undo"), "undo")

    def redo(self) -> list[int] | None:
        """Re-apply the latest undone action; returns the global indices, or None. As in one
        journal, a new labelling action after an undo (in any dataset) ends what can be
        redone: an undone label of one store does not come back after labels in another."""
        return self._step(self._newest("redo"), "redo")

    def pending(self, kind: str) -> tuple[str, list[int]] | None:
        """What ``undo()`` (``kind`` "undo") or ``redo()`` ("redo") would change now: the id
        of the labelling action it reverts or re-applies and the global indices, or None."""
        newest = self._newest(kind)
        if newest is None:
            return None
        d = newest[1]
        j = self._journals[d]
        action = j.undo_stack[-1] if kind == "undo" else j.redo_stack[-1]
        return action[0].action, [int(self._offsets[d] + ev.candidate) for ev in action]

    def _newest(self, kind: str) -> tuple[str, int] | None:
        """(time, dataset) of the action ``kind`` ("undo" / "redo") would take, or None."""
        if kind == "undo":
            stamp, d = max((j.last_undoable_time or "", d) for d, j in enumerate(self._journals))
        else:
            stamp, d = max((j.last_redoable_time or "", d) for d, j in enumerate(self._journals))
            if any((j.last_action_time or "") > stamp for j in self._journals):
                return None
        return (stamp, d) if stamp else None

    def _step(self, newest: tuple[str, int] | None, kind: str) -> list[int] | None:
        if newest is None:
            return None
        _, d = newest
        self._check_writable()
        j = self._journals[d]
        action = j.undo(self.annotator) if kind == "undo" else j.redo(self.annotator)
        self._apply(d, action)
        return [int(self._offsets[d] + ev.candidate) for ev in action]

    def _check_writable(self) -> None:
        """Refuse a change of labels in a learner opened with :meth:`read_only`."""
        if self.read_only_session:
            raise RuntimeError(
                "this learner replays the journals read-only; open it with Learner.open to label"
            )

    def _apply(self, d: int, action) -> None:
        for ev in action:
            g = int(self._offsets[d] + ev.candidate)
            # unsure is no training label: the engine sees 0 (no refit when that is no change)
            y = UNLABELLED if ev.label == UNSURE else ev.label
            if self._engine.labels[g] != y:
                self._engine.set_label(g, y)
            self._unsure[g] = ev.label == UNSURE
            self._note_source(d, ev.candidate, ev.label, ev.annotator, ev.time)

    def _note_source(self, d: int, local: int, label: int, annotator: str, stamp: str) -> None:
        if label != UNLABELLED and 0 <= local < self._offsets[d + 1] - self._offsets[d]:
            self._sources[int(self._offsets[d] + local)] = (annotator, stamp)

    # ------------------------------------------------------------------ policy and queries
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
        self._engine.set_policy(policy)

    def next_query(self, k: int = 1) -> list[int]:
        """Next k global indices to label (unlabelled and not unsure; empty when none is
        left)."""
        used = self._engine.query_strategy()
        picks = self._skip_unsure(self._engine.next_query, k)
        if picks and picks[0] in self._engine._probes:
            used = "probe"  # a random query that scores the pretrained classifier
        now = datetime.now(UTC).isoformat()
        self.queries.extend(QueryRecord(int(i), used, now) for i in picks)
        return picks

    # the engine knows no "unsure" (it sees 0): ask it for more and drop the unsure picks, at
    # most this many more (the batch selection's pool grows with k)
    MAX_UNSURE_SKIP = 256

    def _skip_unsure(self, query, k: int) -> list[int]:
        """The first k picks of ``query(k')`` that are not unsure, asking for up to
        ``MAX_UNSURE_SKIP`` more; past that, the first open candidates in index order."""
        n_unsure = int(self._unsure.sum())
        if not n_unsure:
            return query(k)
        for want in (k, k + min(n_unsure, self.MAX_UNSURE_SKIP)):
            picks = query(want)
            keep = [int(i) for i in picks if not self._unsure[int(i)]][:k]
            if len(keep) >= k or len(picks) < want:
                return keep
        open_ = np.flatnonzero((self._engine.labels == UNLABELLED) & ~self._unsure)
        return keep + [int(i) for i in open_ if int(i) not in keep][: k - len(keep)]

    def audit(self, mode: str) -> np.ndarray:
        """Global indices to review: 'cells', 'non-cells' or 'uncertain' (unlabelled, not
        unsure, in the engine's order), or 'unsure' (the unsure candidates, the earliest
        marked first)."""
        if mode == "unsure":
            idx = np.flatnonzero(self._unsure)
            return np.array(
                sorted(idx, key=lambda i: self._sources.get(int(i), ("", ""))[1]), np.int64
            )
        order = self._engine.audit(mode)
        return order[~self._unsure[order]] if self._unsure.any() else order

    def step_seconds(self, i: int, y: int) -> float:
        """Time of one full update (label, refit, rescore, next query), for diagnostics."""
        t0 = time.perf_counter()
        self.label(i, y)
        self._engine.fit()
        self.next_query()
        return time.perf_counter() - t0

    def close(self) -> None:
        for j in self._journals:
            j.close()


def top_contributions(
    coef: np.ndarray, x_row: np.ndarray, names: list[str], k: int = 6
) -> list[tuple[str, float, float]]:
    """The k features that push this candidate's score most: (name, z-scored value,
    contribution = coef * value to the log-odds), sorted by |contribution| descending."""
    coef = np.asarray(coef, np.float64).ravel()
    x_row = np.asarray(x_row, np.float64).ravel()
    if coef.shape != x_row.shape:
        raise ValueError(f"coef has {coef.size} entries, the feature row {x_row.size}")
    contrib = coef * x_row
    order = np.argsort(-np.abs(contrib), kind="stable")[:k]
    return [
        (names[j] if j < len(names) else f"f{j}", float(x_row[j]), float(contrib[j]))
        for j in order
        if contrib[j] != 0
    ]


def _datasets_from_stores(store_paths, use_embeddings) -> list[DatasetInput]:
    """The stores' datasets, each store once, named apart (``m1/plane0.actsort`` beside
    ``m2/plane0.actsort``: :func:`actsort_gpu.naming.distinct_names`)."""
    from ..naming import check_distinct_paths, distinct_names

    paths = [store_paths] if isinstance(store_paths, (str, Path)) else list(store_paths)
    check_distinct_paths(paths, "sort store")
    return [
        dataset_from_store(p, use_embeddings=use_embeddings, name=name)
        for p, name in zip(paths, distinct_names(paths))
    ]


def _torch_device(device: str) -> str:
    """The torch device of the learner: the one device switch (``backend.resolve_backend``);
    "cuda" without torch's CUDA raises ``backend.DeviceError``, "auto" falls back to the CPU."""
    from ..backend import resolve_backend

    return resolve_backend(device, uses="torch").torch_device


def _candidate_index(i) -> int:
    """``i`` as a candidate index: an int or a NumPy integer; TypeError for anything else (a
    float such as 1.5, a string), which ``int()`` would have turned into some candidate."""
    try:
        if isinstance(i, bool | np.bool_):
            raise TypeError
        return operator.index(i)
    except TypeError:
        raise TypeError(f"a candidate index is an integer, got {i!r}") from None
