"""The heavy, shared side of the page: store data, map canvases and the learner.

One :class:`Workspace` per server process, created from the command line and passed to
``build_app`` (no module-level state). Every tab of the browser goes through it; mutations of
the learner (labels, undo, policy) hold one lock, and the learner writes each label to the
store's journal (fsynced) before the call returns, i.e. before the page acknowledges it.

Candidates are addressed per store as (store index, local candidate); the learner's global
index is ``learner.global_index(store, local)``.

Several tabs on one server: each query is handed out with a lease of ``lease_s`` seconds
(default :data:`LEASE_S`), so two tabs asking at the same time never get the same candidate; a
tab gives its lease back when it asks for its next candidate. A label that replaces another
annotator's different label is a *disagreement*: both lines stay in the journal and
:meth:`Workspace.disagreement_count` counts them (shown in the page's status line).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import UNLABELLED, UNSURE, schema
from ..store import SortStore, StoreError, crop_footprints
from .progress import StabilityTracker
from .render import MapCanvas, contrast_stretch

log = logging.getLogger(__name__)

__all__ = ["Workspace", "StoreData", "Step", "LEASE_S"]

#: seconds a query stays reserved for the tab it was handed to
LEASE_S = 60.0

_NEEDED = (
    schema.FOOTPRINTS,
    schema.CENTERS,
    schema.CROPS,
    schema.OUTLINES,
    schema.EVENTS,
    schema.FEATURE_MATRIX,
)


@dataclass
class StoreData:
    """Read-only data of one store kept in memory for the page (all small per candidate)."""

    path: Path
    name: str
    store: SortStore
    centers: np.ndarray  # (N, 2) float32 (row, col)
    crops: np.ndarray  # (N, 4) int32
    outlines: list  # N x (M, 2) float32
    neighbors: list  # N x (K,) int32
    events: np.ndarray  # (N, n_events) int32
    feature_names: list
    fs_hz: float | None
    canvas: MapCanvas
    images: dict = field(default_factory=dict)  # fov kind -> (H, W) float32
    base_key: tuple | None = None
    n_events: int = 5
    event_frames: int = 11
    truth: np.ndarray | None = None  # (N,) int8 +1 / -1 (synthetic demo stores), never shown
    _handles: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.centers)

    @property
    def height(self) -> int:
        return self.canvas.height

    @property
    def width(self) -> int:
        return self.canvas.width

    def footprint_crop(self, i: int) -> np.ndarray:
        """(h, w) float32 footprint of candidate i inside its crop window."""
        fp = self.canvas.footprints
        return crop_footprints(fp[i : i + 1], self.crops[i : i + 1], self.width)[0]

    def trace(self, i: int) -> np.ndarray:
        """(T,) float32 trace (one chunk read through the cached zarr handle)."""
        if "traces" not in self._handles:
            self._handles["traces"] = self.store.array(schema.TRACES)
        return np.asarray(self._handles["traces"][i])

    def snapshots(self, i: int) -> np.ndarray:
        """(n_events, event_frames, h, w) float32 in movie units (``SortStore.snapshots``),
        through a cached reader; zeros for a store without snapshots."""
        if "snap" not in self._handles:
            has = self.store.has(schema.SNAPSHOTS_OFFSETS)
            self._handles["snap"] = self.store.snapshot_reader() if has else None
        reader = self._handles["snap"]
        if reader is None:
            r0, r1, c0, c1 = (int(v) for v in self.crops[i])
            return np.zeros((self.n_events, self.event_frames, r1 - r0, c1 - c0), np.float32)
        return reader(i)

    def feature_column(self, name: str) -> np.ndarray:
        """(n,) float32 raw values of feature ``name`` (``features/matrix``; the matrix is read
        once, on the first call: the map's colour and filter options)."""
        if "features" not in self._handles:
            self._handles["features"] = self.store.feature_matrix()
        matrix = self._handles["features"]
        if name not in matrix.names:
            raise ValueError(f"{self.path}: no feature {name!r} in {schema.FEATURE_MATRIX}")
        return np.asarray(matrix.values[:, matrix.names.index(name)], np.float32)


def _read_truth(store: SortStore, path: Path) -> np.ndarray | None:
    """The store's truth labels (N,) int8 +1 / -1 when present and valid; a malformed truth is
    ignored with a warning (it only feeds the demo's comparison, never the labels)."""
    truth = store.truth_labels()
    if truth is None:
        return None
    truth = np.asarray(truth)
    if truth.shape != (store.n_candidates,) or not np.isin(truth, (-1, 1)).all():
        log.warning(
            "%s: %s ignored: expected (%d,) values +1 / -1, got shape %s values %s",
            path,
            schema.TRUTH_LABELS,
            store.n_candidates,
            truth.shape,
            np.unique(truth)[:5].tolist(),
        )
        return None
    return truth.astype(np.int8)


def load_store_data(path: Path, name: str) -> StoreData:
    """Open a store and read what the page shows; fails naming the missing stage."""
    store = SortStore.open(path)
    damaged = store.check_chunks()
    if damaged:  # refused before serving, rather than at the candidate that reads it
        raise StoreError("; ".join(damaged))
    missing = [a for a in _NEEDED if not store.has(a)]
    if missing:
        stage = "features" if missing == [schema.FEATURE_MATRIX] else "preprocess"
        raise StoreError(f"{path}: missing {missing}; run `actsort {stage} {path}` first")
    h, w = store.height, store.width
    outlines = store.outlines()
    neighbors = store.neighbors()
    t0 = time.perf_counter()
    canvas = MapCanvas(store.footprints(), outlines, h, w)
    log.info(
        "%s: map canvas for %d candidates in %.2f s",
        path,
        store.n_candidates,
        time.perf_counter() - t0,
    )
    images = store.fov_images()
    if not images:
        images["max"] = np.zeros((h, w), np.float32)
    events = store.events()
    n_events, event_frames = (
        store.snapshot_layout() if store.has(schema.SNAPSHOTS_FRAMES) else (events.shape[1], 11)
    )
    movie = store.attrs.get("movie") or {}
    return StoreData(
        path=path,
        name=name,
        store=store,
        centers=store.centers(),
        crops=store.crops(),
        outlines=outlines,
        neighbors=neighbors,
        events=events,
        feature_names=store.feature_names(),
        fs_hz=movie.get("fs_hz"),
        canvas=canvas,
        images=images,
        n_events=n_events,
        event_frames=event_frames,
        truth=_read_truth(store, path),
    )


class Step(NamedTuple):
    """An undo or redo: the store, its local candidates (in the action's order) and whether
    it was left alone because another open tab gave that label (``elsewhere``)."""

    store: int
    candidates: list[int]
    elsewhere: bool = False


class Workspace:
    """Stores named on the command line + one learner over all of them.

    store_paths : sort store directories (each needs preprocess and features)
    learner : an ``actsort_gpu.active.learner.Learner`` over the same stores, in the same order
    """

    def __init__(
        self,
        store_paths,
        learner,
        *,
        window: int = 20,
        churn_tol: float = 0.005,
        lease_s: float = LEASE_S,
    ):
        self.paths = [Path(p) for p in store_paths]
        self.lease_s = float(lease_s)
        # (store, local) -> (expiry (monotonic), tab it was shown in)
        self._leases: dict[tuple[int, int], tuple[float, str]] = {}
        self.learner = learner
        if len(learner.datasets) != len(self.paths):
            raise ValueError(
                f"learner has {len(learner.datasets)} datasets, {len(self.paths)} stores given"
            )
        self.stores = [load_store_data(p, d.name) for p, d in zip(self.paths, learner.datasets)]
        for d_i, s in enumerate(self.stores):
            sl = learner.dataset_slice(d_i)
            size = sl.stop - sl.start
            if size != s.n:
                raise ValueError(f"{s.path}: {s.n} candidates in the store, {size} in the learner")
        self.lock = threading.RLock()
        # tabs: which tab gave each labelling action of this server, and when each tab last
        # acted, so that one tab's undo never reverts a label another open tab just gave
        self._owners: dict[str, str] = {}  # action id -> tab id
        self._seen: dict[str, float] = {}  # tab id -> monotonic time of its last request
        self.trackers = [StabilityTracker(window=window, churn_tol=churn_tol) for _ in self.stores]
        self.label_times: list[float] = []
        self._canvas_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        store_paths,
        *,
        annotator: str = "anonymous",
        classifier=None,
        config=None,
        device: str = "cpu",
    ) -> Workspace:
        """Open the stores and the learner (fine-tuning from a portable classifier file).

        The learner's compiled L1 step is loaded (after an install: compiled, ~11 s) on a
        background thread meanwhile, so the first label does not wait for it."""
        from ..active.engine import product_policy
        from ..active.learner import Learner
        from ..active.qp import qp_unusable
        from ..jit import warm_in_background

        warm_in_background(qp_unusable)

        pretrained = None
        if classifier is not None:
            from ..active import transfer

            pretrained = transfer.load_classifier(classifier)
        active = config.active if config is not None else None
        learner = Learner.open(
            store_paths,
            policy=product_policy(active),
            annotator=annotator,
            device=device,
            seed=active.seed if active else 0,
            pretrained=pretrained,
        )
        return cls(store_paths, learner)

    # ------------------------------------------------------------------ read-outs
    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stores]

    def g(self, store: int, local: int) -> int:
        return self.learner.global_index(store, int(local))

    def human(self, store: int) -> np.ndarray:
        """(n,) int8 human labels of the store's candidates."""
        return self.learner.human(store)

    def unsure(self, store: int) -> np.ndarray:
        """(n,) bool: the store's candidates marked unsure (``Learner.unsure``)."""
        return self.learner.unsure(store)

    def model(self, store: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(P(cell), decisions) of the store's candidates; (None, None) before training (the
        page shows no model decision until there is a model)."""
        with self.lock:
            p, d = self.learner.model(store)
        return (None, None) if p is None else (p, d)

    def transfer_summary(self) -> str:
        """One line on the pretrained classifier (``Learner.transfer_status``), '' without."""
        with self.lock:
            status = self.learner.transfer_status()
        return "" if status is None else status.summary()

    def inputs_summary(self) -> str:
        """One line on the classifier's inputs (``Learner.inputs_status``): features alone or
        with the learned embeddings, and the comparison that chose them."""
        with self.lock:
            return self.learner.inputs_status()

    def has_truth(self, store: int | None = None) -> bool:
        """Whether the store (any store when None) carries a usable ``truth/labels``."""
        stores = self.stores if store is None else [self.stores[store]]
        return any(s.truth is not None for s in stores)

    def contributions(self, store: int, local: int, k: int = 6):
        """(name, z-scored value, contribution) of the k inputs pushing the score most."""
        with self.lock:
            return self.learner.contributions(self.g(store, local), k)

    def labelled_order(self, store: int) -> list[int]:
        """Local candidates in the order they were last labelled (``Learner.labelled_order``)."""
        with self.lock:
            return self.learner.labelled_order(store)

    # ------------------------------------------------------------------ actions
    def disagreement_count(self, store: int) -> int:
        """Labels of the store that replaced another annotator's different label (journal)."""
        with self.lock:
            return len(self.learner.disagreements(store))

    def label(self, store: int, locals_, y: int, tab: str = "") -> int:
        """Give human label y to each local candidate (journal first, then the model); ``tab``
        names the tab that gave it (its undo is that tab's).

        Returns how many of them replaced another annotator's different label (new
        disagreements, kept in the journal)."""
        locals_ = [int(c) for c in dict.fromkeys(int(c) for c in locals_)]
        if not locals_:
            return 0
        with self.lock:
            _, dec = self.model(store)
            tracker = self.trackers[store]
            before = len(self.learner.disagreements(store))
            action = self.learner.label_many([self.g(store, c) for c in locals_], int(y))
            if tab:
                self._owners[action] = tab
            for c in locals_:
                self._leases.pop((store, c), None)
            if y != UNSURE:  # unsure: no answer to score, no label that moves the model
                for c in locals_:
                    tracker.before_label(None if dec is None else int(dec[c]), int(y))
            self.label_times.append(time.monotonic())
            if y != UNSURE:
                _, dec = self.model(store)
                tracker.after_label(dec, int((self.human(store) != 0).sum()))
            return len(self.learner.disagreements(store)) - before

    def import_labels(self, store: int, source, tab: str = ""):
        """ActSort's *Load labels*: give the store's unlabelled candidates the labels of
        ``source`` (a label file or an earlier store of the same recording:
        ``label_import.carry_from``) as one undoable action of ``tab``. Returns the
        ``ImportReport``; errors on the source raise ValueError / OSError naming it."""
        from ..label_import import carry_from

        carry = carry_from(self.paths[store], source)
        with self.lock:
            action, new = self.learner.import_labels(store, carry)
            if action is None:
                return carry.report(new)
            if tab:
                self._owners[action] = tab
            for c in carry.rows[new]:
                self._leases.pop((store, int(c)), None)
            # the decisions an import flips are not labelling churn, nor answers to score
            self.trackers[store].reset_decisions()
            return carry.report(new)

    def touch(self, tab: str) -> None:
        """Note that ``tab`` is open (it just made a request)."""
        if tab:
            self._seen[tab] = time.monotonic()

    def forget(self, tab: str) -> None:
        """``tab`` was closed or reloaded: its labels are anyone's to undo from now on, and
        the candidates it was shown are free (a reloaded tab resumes where it was)."""
        with self.lock:
            self._seen.pop(tab, None)
            for key in [k for k, (_, who) in self._leases.items() if tab and who == tab]:
                del self._leases[key]

    def _other_open_tab(self, action: str, tab: str) -> bool:
        """Whether ``action`` was given by another tab that made a request in the last
        ``lease_s`` seconds (a closed or reloaded tab's labels are anyone's to undo)."""
        owner = self._owners.get(action)
        if not owner or owner == tab:
            return False
        return time.monotonic() - self._seen.get(owner, -np.inf) < self.lease_s

    def _step(self, kind: str, tab: str) -> Step | None:
        """Undo or redo one action (all candidates of a box label, also one given before a
        restart): a Step, or None when there is nothing to undo / redo. An action another
        open tab gave is left alone (``Step.elsewhere``)."""
        with self.lock:
            pending = self.learner.pending(kind)
            if pending is None:
                return None
            action, changed = pending
            elsewhere = self._other_open_tab(action, tab)
            if not elsewhere:
                changed = self.learner.undo() if kind == "undo" else self.learner.redo()
        where = [self.learner.locate(g) for g in changed]
        return Step(where[-1][0], [local for _, local in where], elsewhere)

    def undo(self, tab: str = "") -> Step | None:
        """Revert the latest action (unless another open tab gave it) or None."""
        return self._step("undo", tab)

    def redo(self, tab: str = "") -> Step | None:
        """Re-apply the latest undone action (unless another open tab gave it) or None."""
        return self._step("redo", tab)

    def _leased(self, store: int) -> set[int]:
        """Local candidates of ``store`` reserved for a tab now (expired leases dropped)."""
        now = time.monotonic()
        for key in [k for k, (expiry, _) in self._leases.items() if expiry <= now]:
            del self._leases[key]
        return {c for s, c in self._leases if s == store}

    def _hand_out(self, store: int, local: int, tab: str = "") -> int:
        self._leases[(store, int(local))] = (time.monotonic() + self.lease_s, tab)
        return int(local)

    def next_query(self, store: int, mode: str, current: int = -1, tab: str = "") -> int | None:
        """Next local candidate of ``store`` to show: the learner's query (restricted to this
        store) or, in an audit mode ("audit:cells" ...), the next unlabelled candidate of the
        audit order. A candidate handed to another tab less than ``lease_s`` ago is skipped
        (unless nothing else is left); ``current``, the caller's candidate, is given back."""
        sl = self.learner.dataset_slice(store)
        with self.lock:
            self._leases.pop((store, int(current)), None)
            taken = self._leased(store)
            if mode.startswith("audit:"):
                order = [
                    int(i) - sl.start
                    for i in self.learner.audit(mode.split(":", 1)[1])
                    if sl.start <= i < sl.stop and i - sl.start != current
                ]
                free = [c for c in order if c not in taken] or order
                return self._hand_out(store, free[0], tab) if free else None
            if self.learner.strategy != mode:
                self.learner.set_strategy(mode)
            # open: unlabelled and not unsure (unsure ones wait in the "audit:unsure" queue)
            open_ = (self.learner.human(store) == UNLABELLED) & ~self.learner.unsure(store)
            if not open_.any():
                return None
            for _ in range(3):
                picks = self.learner.next_query(1)
                if picks and sl.start <= picks[0] < sl.stop:
                    if picks[0] - sl.start not in taken:
                        return self._hand_out(store, picks[0] - sl.start, tab)
                    # another tab holds the best query: the best one nobody holds
                    for i in self.learner.next_query(len(taken) + 2):
                        if sl.start <= i < sl.stop and i - sl.start not in taken:
                            return self._hand_out(store, i - sl.start, tab)
                    break
            # The query chose another store (or all were held): stay in this one (first
            # unlabelled candidate nobody holds).
            unlabelled = np.flatnonzero(open_)
            free = [int(c) for c in unlabelled if int(c) not in taken] or [int(unlabelled[0])]
            return self._hand_out(store, free[0], tab)

    def set_threshold(self, t: float) -> None:
        with self.lock:
            self.learner.set_threshold(float(t))
            for tr in self.trackers:
                tr.reset_decisions()

    def set_strategy(self, mode: str, weight: float) -> None:
        with self.lock:
            if not mode.startswith("audit:"):
                self.learner.set_strategy(mode, float(weight))
            else:
                self.learner.set_strategy(self.learner.strategy, float(weight))

    # ------------------------------------------------------------------ map
    def map_canvas(
        self, store: int, image: str, lo_pct: float, hi_pct: float, lut: np.ndarray
    ) -> MapCanvas:
        """The store's canvas with this base image / contrast and colours (incremental)."""
        s = self.stores[store]
        with self._canvas_lock:
            key = (image, round(lo_pct, 2), round(hi_pct, 2))
            if s.base_key != key:
                img = s.images.get(image, next(iter(s.images.values())))
                s.canvas.set_base(contrast_stretch(img, lo_pct, hi_pct))
                s.base_key = key
            s.canvas.set_colours(lut)
            return s.canvas

    # ------------------------------------------------------------------ position
    def _ui_state_path(self, store: int) -> Path:
        return self.paths[store] / "labels" / "ui_state.json"

    def save_position(self, store: int, current: int) -> None:
        """Remember the candidate on screen (atomic write of labels/ui_state.json).

        Best effort: it runs after a label is already in the journal, so a full or read-only
        disk here is logged as a warning and never reported as a failed label."""
        path = self._ui_state_path(store)
        tmp = path.with_name(f"ui_state.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"current": int(current), "store": self.stores[store].name}))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("%s: page position not saved (%s); labels are unaffected", path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def resume_position(self, store: int, tab: str = "") -> int | None:
        """Where a tab resumes (opening, switching store): the remembered candidate, reserved
        for it, unless another tab holds it now (None: the tab asks for a query; two tabs
        opened together showed the same candidate, and both labelled it); one it holds itself
        is its own to come back to."""
        cur = self.load_position(store)
        if cur is None:
            return None
        with self.lock:
            held = cur in self._leased(store) and self._leases[(store, cur)][1] != tab
            return None if held else self._hand_out(store, cur, tab)

    def load_position(self, store: int) -> int | None:
        """The remembered candidate, or None (no file; a malformed file is ignored with a
        warning: it only holds the page's position)."""
        path = self._ui_state_path(store)
        try:
            cur = json.loads(path.read_text())["current"]
            if not isinstance(cur, int) or isinstance(cur, bool):
                raise ValueError(f"'current' is {cur!r}, not an integer")
        except FileNotFoundError:
            return None
        except (OSError, KeyError, TypeError, ValueError) as exc:
            log.warning("%s: ignored, not a valid page position (%s)", path, exc)
            return None
        return cur if 0 <= cur < self.stores[store].n else None

    def close(self) -> None:
        self.learner.close()
