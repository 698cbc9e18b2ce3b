"""Human labels: the append-only journal of a sort store and the label rules built on it.

Label codes (defined once in ``actsort_gpu``): +1 cell, -1 not a cell, 0 unlabelled, 2 unsure
(``UNSURE``: journalled like a label, but never a training label; readers that need training
labels, such as :func:`read_labels`, treat it as 0).

**Journal** (``labels/journal.jsonl`` in a sort store; :class:`Journal`). Every label, unlabel,
undo and redo is written, flushed and fsynced before the call returns, so an acknowledged label
survives a crash (kill -9, power loss after fsync). The current labels are the replay of the
journal. One writer per journal: an exclusive, non-blocking ``fcntl.flock`` on
``journal.jsonl.lock``; a second writer gets an error naming the journal and the holder's pid
and host. ``Journal(None)`` keeps the same state in memory only (headless sessions, the demo).

Line format (one JSON object per line, one line per candidate)::

    {"time": "2025-01-01T12:00:00.123456+00:00", "dataset": "animal1", "candidate": 17,
     "label": 1, "previous": 0, "annotator": "ana", "origin": "human", "session": "3f2a...",
     "action": "9b1c04d2e8aa", "action_size": 5}

origin : human | import (a user action, undoable) | undo | redo (``label`` is the value the
    candidate gets; ``previous`` is what it had).
action, action_size : the lines of one user action (a box label of 5 candidates = 5 lines)
    share an action id and are written in one ``write`` + ``fsync``; one undo reverts the whole
    action, also after a restart. Journals written before actions existed have neither field:
    each of their lines is an action of its own.

A torn tail (crash mid-write, never acknowledged: a last line cut inside its JSON, or the
complete first lines of an action whose last lines are missing) is ignored on replay and cut
off by the next writer. A complete last line that lost only its newline is kept (the next writer
adds the newline). A failed write is cut back to the last acknowledged byte and the file
reopened, so nothing reported as failed reaches the disk later.

**Replay policy** (one for every reader: the page, ``sort``, ``export``, ``apply``): every line
must be a JSON object with the fields above; ``candidate`` a non-negative integer (below the
store's candidate count when the caller gives it), ``label`` and ``previous`` one of
:data:`LABEL_VALUES`, ``origin`` one of :data:`ORIGINS`. Anything else stops the replay with
a ValueError naming the journal and the byte offset of the line: the file is never rewritten
and no label is silently dropped. ``dataset`` names the store when the line was written; a
store's own journal is read with every line as the store's (``Journal(dataset=...)``), so
labels survive renaming or copying the store's folder.

**Disagreements**: a human or import line that changes a candidate's label given by another
annotator to a different non-zero value. Both lines stay in the journal; the replay lists them
(:attr:`Journal.disagreements`, :class:`Disagreement`) and the page and the export show them.

**Rules**: :func:`final_labels` (the human label where given, else the model's decision; the
export's ``final_label`` and ActSort's ``labels_overall``) and :func:`balanced_accuracy`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import uuid
import zlib
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import CELL, NOT_CELL, UNLABELLED, UNSURE, schema

log = logging.getLogger(__name__)

__all__ = [
    "CELL",
    "LABEL_VALUES",
    "NOT_CELL",
    "UNLABELLED",
    "Action",
    "Disagreement",
    "Journal",
    "JournalEvent",
    "JournalLockedError",
    "JournalShortError",
    "journal_record_path",
    "other_journal_note",
    "other_journals",
    "balanced_accuracy",
    "class_rates",
    "disagreement_column",
    "final_labels",
    "read_labels",
    "replay",
]

ORIGINS = ("human", "import", "undo", "redo")
USER_ORIGINS = ("human", "import")
LABEL_VALUES = (CELL, NOT_CELL, UNLABELLED, UNSURE)


# ---------------------------------------------------------------------- rules
def final_labels(human: np.ndarray, decision: np.ndarray | None) -> np.ndarray:
    """(N,) int8: the human label where given (!= 0), else the model's decision.

    human : (N,) +1 / -1 / 0
    decision : (N,) +1 / -1, or None before the model is trained (then the human labels, with
        0 where there is none)
    """
    human = np.asarray(human, dtype=np.int8)
    if decision is None:
        return human.copy()
    return np.where(human != UNLABELLED, human, np.asarray(decision)).astype(np.int8)


def class_rates(pred: np.ndarray, truth: np.ndarray) -> tuple[float | None, float | None]:
    """(true-positive rate: cells called +1, true-negative rate: non-cells called -1) of
    ``pred`` against ``truth`` (+1 / -1; 0 = unknown, left out); None for an absent class."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"predictions have shape {pred.shape}, the truth {truth.shape}")
    pos, neg = truth == CELL, truth == NOT_CELL
    tpr = float((pred[pos] == CELL).mean()) if pos.any() else None
    tnr = float((pred[neg] == NOT_CELL).mean()) if neg.any() else None
    return tpr, tnr


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean of the two :func:`class_rates`; NaN when a class is absent from the truth."""
    tpr, tnr = class_rates(pred, truth)
    return float("nan") if tpr is None or tnr is None else 0.5 * (tpr + tnr)


def journal_lock_path(journal_path) -> Path:
    """The file whose ``flock`` is the journal's write lock (it holds the holder's pid)."""
    journal_path = Path(journal_path)
    return journal_path.with_name(journal_path.name + ".lock")


def journal_record_path(journal_path) -> Path:
    """The file holding how many bytes of the journal have been acknowledged and their CRC-32
    (written after each action): a journal shorter than that lost labels since (a copy made in
    part), one whose first bytes differ is another journal (a sync that kept another
    computer's file of as many bytes or more)."""
    journal_path = Path(journal_path)
    return journal_path.with_name(journal_path.name + ".written")


class JournalRecord(NamedTuple):
    """The record's content: acknowledged bytes, and their CRC-32 (None in records written
    before it was kept: the length alone is checked)."""

    n_bytes: int
    crc32: int | None

    def text(self) -> str:
        return f"{self.n_bytes} {self.crc32:08x}"


def _read_record(journal_path: Path) -> JournalRecord | None:
    """The record beside a journal; None without a readable one (journals written before the
    record existed)."""
    try:
        parts = journal_record_path(journal_path).read_text().split()
        return JournalRecord(int(parts[0]), int(parts[1], 16) if len(parts) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None


class JournalShortError(ValueError):
    """A journal holds fewer acknowledged bytes than its record says were written, or other
    bytes than those written."""


def _check_record(path: Path, data: bytes, good: int, record: JournalRecord | None) -> None:
    """Refuse a journal cut short since its record was written, or one whose first
    ``record.n_bytes`` bytes are not those acknowledged (``data``: the journal's bytes,
    ``good``: their acknowledged part)."""
    if record is None:
        return
    remedy = (
        "Copy the store again, or merge the other journal with `actsort import-labels STORE "
        "--from FILE`; if this journal is the only copy left, delete "
        f"{journal_record_path(path)} to use the labels it holds"
    )
    if good < record.n_bytes:
        raise JournalShortError(
            f"{path}: holds {good:,} bytes of labels where {record.n_bytes:,} were written "
            f"({journal_record_path(path).name}): a copy of the store made in part, or a sync "
            f"that kept another computer's journal (look for other journal files in "
            f"labels/)? {remedy}"
        )
    if record.crc32 is not None and zlib.crc32(data[: record.n_bytes]) != record.crc32:
        raise JournalShortError(
            f"{path}: its first {record.n_bytes:,} bytes are not the labels written here "
            f"(their checksum differs from {journal_record_path(path).name}): a sync that "
            "kept another computer's journal, or a journal copied from another store? Look "
            f"for other journal files in labels/. {remedy}"
        )


def _holder(fh) -> str:
    """The holder written in an open lock file ("pid N on host H")."""
    fh.seek(0)
    return fh.read().strip() or "unknown process"


def journal_holder(journal_path) -> str | None:
    """Who holds the write lock of the journal at ``journal_path`` ("pid N on host H"), or
    None when nobody does (checked by trying the lock and letting it go at once)."""
    lock = journal_lock_path(journal_path)
    if not lock.exists():
        return None
    try:
        fh = open(lock)  # noqa: SIM115 (closed below on every path)
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fh)
        except OSError:  # a file system without locks: no page could hold it either
            return None
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None


# ---------------------------------------------------------------------- journal format
class JournalLockedError(RuntimeError):
    """Another process holds the journal's write lock."""


@dataclass(frozen=True)
class JournalEvent:
    """One journal line (see the module docstring)."""

    time: str
    dataset: str
    candidate: int
    label: int
    previous: int
    annotator: str
    origin: str
    session: str
    action: str = ""
    action_size: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


Action = tuple[JournalEvent, ...]
"""The lines of one user action (or of its undo / redo), in journal order."""


def _group_events(events: list[JournalEvent]) -> list[Action]:
    """Consecutive lines with the same action id form one action; lines without an id are
    actions of their own."""
    groups: list[list[JournalEvent]] = []
    for ev in events:
        if (
            ev.action
            and groups
            and groups[-1][0].action == ev.action
            and len(groups[-1]) < groups[-1][0].action_size
        ):
            groups[-1].append(ev)
        else:
            groups.append([ev])
    return [tuple(g) for g in groups]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _line_problem(ev: JournalEvent, n_candidates: int | None) -> str | None:
    """What is wrong with a parsed line under the replay policy (module docstring), or None."""
    if not _is_int(ev.candidate) or ev.candidate < 0:
        return f"candidate {ev.candidate!r} is not a non-negative integer"
    if n_candidates is not None and ev.candidate >= n_candidates:
        return f"candidate {ev.candidate} out of range: the store has {n_candidates} candidates"
    for name in ("label", "previous"):
        value = getattr(ev, name)
        if not _is_int(value) or value not in LABEL_VALUES:
            return f"{name} {value!r} is not one of {LABEL_VALUES}"
    if ev.origin not in ORIGINS:
        return f"origin {ev.origin!r} is not one of {ORIGINS}"
    if not _is_int(ev.action_size) or ev.action_size < 1:
        return f"action_size {ev.action_size!r} is not a positive integer"
    for name in ("time", "dataset", "annotator", "session", "action"):
        if not isinstance(getattr(ev, name), str):
            return f"{name} {getattr(ev, name)!r} is not a string"
    return None


def _parse_line(
    path: Path, raw: bytes, offset: int, n_candidates: int | None = None
) -> JournalEvent:
    try:
        fields = json.loads(raw)
        ev = JournalEvent(**fields)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable journal line at byte {offset}: {exc}") from exc
    problem = _line_problem(ev, n_candidates)
    if problem is not None:
        raise ValueError(
            f"{path}: invalid journal line at byte {offset}: {problem} ({raw[:200]!r}); fix or "
            f"remove the line (the journal is never rewritten by actsort)"
        )
    return ev


def _is_torn(raw: bytes) -> bool:
    """Whether a last line without its newline was cut inside its JSON (never acknowledged)."""
    try:
        json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True
    return False


_RENAMES_SAID: set[tuple] = set()


def _as_dataset(events: list[JournalEvent], dataset: str, path) -> list[JournalEvent]:
    """The events of a store's own journal, every one as ``dataset`` (the store's name now): a
    journal lives inside its store, so a line written under an earlier name of the folder
    (renamed, or copied under a new name) is still this store's label."""
    earlier = sorted({ev.dataset for ev in events} - {dataset})
    if not earlier:
        return events
    said = (str(path), dataset, tuple(earlier))
    if said not in _RENAMES_SAID:  # once per process, not at every read of the journal
        _RENAMES_SAID.add(said)
        log.info(
            "%s: labels given while the store was named %s are this store's (%s)",
            path,
            ", ".join(map(repr, earlier)),
            dataset,
        )
    return [ev if ev.dataset == dataset else replace(ev, dataset=dataset) for ev in events]


def _journal_bytes(path: Path | None) -> bytes:
    """A journal file's bytes (b'' for none)."""
    if path is None or not path.exists():
        return b""
    return path.read_bytes()


def _read_events(
    path: Path | None, n_candidates: int | None = None, data: bytes | None = None
) -> tuple[list[JournalEvent], int]:
    """Events of a journal file (its bytes ``data`` when already read) and the byte length of
    its acknowledged part (complete lines, without a trailing incomplete action). A complete
    last line without its newline counts, its length included (the writer then adds the
    newline)."""
    data = _journal_bytes(path) if data is None else data
    if not data:
        return [], 0
    events: list[JournalEvent] = []
    ends: list[int] = []  # byte offset just after each event's line
    good = 0
    pos = 0
    for raw in data.split(b"\n"):
        end = pos + len(raw) + 1
        if end > len(data):  # no newline: the last line
            if raw.strip() and _is_torn(raw):  # torn final write, never acknowledged
                log.warning("%s: ignoring an incomplete last line (%d bytes)", path, len(raw))
                break
            if not raw.strip():
                break
            end = len(data)  # complete, only its newline is missing: kept
        start, pos = pos, end
        if raw.strip():
            events.append(_parse_line(path, raw, start, n_candidates))
            ends.append(end)
        good = end
    if events:
        last = _group_events(events)[-1]
        if len(last) < last[0].action_size:  # the action's write was cut short
            n_keep = len(events) - len(last)
            log.warning(
                "%s: ignoring an incomplete last action (%d of %d lines)",
                path,
                len(last),
                last[0].action_size,
            )
            good = ends[n_keep - 1] if n_keep else 0
            events = events[:n_keep]
    return events, good


class Disagreement(NamedTuple):
    """A label that replaced another annotator's different label (both lines stay in the
    journal): who gave which label first, who changed it to what, and when."""

    dataset: str
    candidate: int
    first_annotator: str
    first_label: int
    annotator: str
    label: int
    time: str


@dataclass
class _State:
    """Labels and undo / redo stacks after a sequence of actions, and who gave each label."""

    labels: dict  # {(dataset, candidate): label != 0}
    undo_stack: list  # [Action] user actions that can be undone, oldest first
    redo_stack: list  # [Action] undone user actions, the next to redo last
    redo_times: list  # time of the undo that put each redo_stack entry there
    who: dict = field(default_factory=dict)  # {(dataset, candidate): annotator of its label}
    who_undo: list = field(default_factory=list)  # annotators before each undo_stack action
    who_redo: list = field(default_factory=list)  # annotators after each redo_stack action
    disagreements: list = field(default_factory=list)  # [Disagreement], journal order
    last_action_time: str = ""  # time of the newest user action (not an undo / redo)

    def _who_of(self, keys) -> dict:
        return {k: self.who.get(k) for k in keys}

    def _restore_who(self, saved: dict) -> None:
        for k, name in saved.items():
            if name is None:
                self.who.pop(k, None)
            else:
                self.who[k] = name

    def apply(self, group: Action) -> None:
        origin = group[0].origin
        keys = [(ev.dataset, ev.candidate) for ev in group]
        restore = None
        if origin in USER_ORIGINS:
            self.undo_stack.append(group)
            self.last_action_time = max(self.last_action_time, group[-1].time)
            self.who_undo.append(self._who_of(keys))
            self.redo_stack.clear()
            self.redo_times.clear()
            self.who_redo.clear()
            for ev, key in zip(group, keys):
                current, first = self.labels.get(key, UNLABELLED), self.who.get(key)
                changed = UNLABELLED not in (ev.label, current) and ev.label != current
                if changed and first not in (None, ev.annotator):
                    self.disagreements.append(
                        Disagreement(
                            ev.dataset,
                            ev.candidate,
                            first,
                            current,
                            ev.annotator,
                            ev.label,
                            ev.time,
                        )
                    )
        elif origin == "undo":
            if self.undo_stack:
                self.redo_stack.append(self.undo_stack.pop())
                self.redo_times.append(group[0].time)
                self.who_redo.append(self._who_of(keys))
                restore = self.who_undo.pop()
        elif self.redo_stack:
            self.undo_stack.append(self.redo_stack.pop())
            self.redo_times.pop()
            self.who_undo.append(self._who_of(keys))
            restore = self.who_redo.pop()
        for ev, key in zip(group, keys):
            if ev.label == UNLABELLED:
                self.labels.pop(key, None)
                self.who.pop(key, None)
            else:
                self.labels[key] = ev.label
                self.who[key] = ev.annotator
        if restore is not None:  # undo / redo give each label back to who gave it
            self._restore_who(restore)


def replay(events: list[JournalEvent]) -> tuple[dict[tuple[str, int], int], list, list]:
    """Labels after the events, plus the undo and redo stacks (lists of actions).

    Returns (labels {(dataset, candidate): label != 0}, undo_stack, redo_stack).
    """
    state = _State({}, [], [], [])
    for group in _group_events(events):
        state.apply(group)
    return state.labels, state.undo_stack, state.redo_stack


class Journal:
    """Writer (and reader) of one journal file, or an in-memory journal.

    path : the ``journal.jsonl`` file (its folder is created); None keeps everything in memory
    session : id written on every line (default: a fresh uuid4 hex)
    read_only : open without the lock (replay only; writing raises)
    n_candidates : the store's candidate count, when the caller knows it: a line naming a
        candidate >= it stops the replay (module docstring, replay policy); appends are
        checked against it too
    dataset : the store's name now, for a store's own journal (``<store>/labels/``): every
        line is read as this store's, also one written before the folder was renamed or
        copied under another name (:func:`_as_dataset`)

    State: ``events`` (all lines), ``labels`` {(dataset, candidate): +1/-1}, ``undo_stack`` and
    ``redo_stack`` (lists of :data:`Action`), ``disagreements`` (list of
    :class:`Disagreement`).
    """

    def __init__(
        self,
        path: str | Path | None,
        session: str | None = None,
        read_only: bool = False,
        n_candidates: int | None = None,
        dataset: str | None = None,
    ):
        self.path = None if path is None else Path(path)
        self.session = session or uuid.uuid4().hex
        self.read_only = read_only
        self.n_candidates = None if n_candidates is None else int(n_candidates)
        self._lock_fh = None
        self._fd: int | None = None
        self._good = 0  # bytes of the file acknowledged so far (the writer's cut-back point)
        self._crc = 0  # their CRC-32
        if self.path is not None and not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
        try:
            # the record first: a writer appending meanwhile only makes the journal longer
            record = None if self.path is None else _read_record(self.path)
            data = _journal_bytes(self.path)
            events, good = _read_events(self.path, self.n_candidates, data)
            if self.path is not None:
                _check_record(self.path, data, good, record)
        except Exception:
            self.close()
            raise
        if dataset is not None:
            events = _as_dataset(events, str(dataset), self.path)
        self.events: list[JournalEvent] = events
        self._state = _State({}, [], [], [])
        for group in _group_events(events):
            self._state.apply(group)
        if self.path is not None and not read_only:
            self._open_fd()
            self._crc = zlib.crc32(data[:good])  # of the acknowledged bytes, kept per append
            if os.fstat(self._fd).st_size > good:  # drop a torn, unacknowledged tail
                os.ftruncate(self._fd, good)
            if good and os.pread(self._fd, 1, good - 1) != b"\n":
                # a complete last line that lost its newline: end it before appending
                os.write(self._fd, b"\n")
                os.fsync(self._fd)
                good += 1
                self._crc = zlib.crc32(b"\n", self._crc)
            self._good = good

    def _open_fd(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)

    # ------------------------------------------------------------------ state
    @property
    def labels(self) -> dict[tuple[str, int], int]:
        return self._state.labels

    @property
    def annotators(self) -> dict[tuple[str, int], str]:
        """{(dataset, candidate): who gave its current label} (undo / redo included)."""
        return dict(self._state.who)

    @property
    def undo_stack(self) -> list[Action]:
        return self._state.undo_stack

    @property
    def redo_stack(self) -> list[Action]:
        return self._state.redo_stack

    @property
    def last_undoable_time(self) -> str | None:
        """Time of the newest action that ``undo`` would revert (None: nothing to undo)."""
        return self.undo_stack[-1][-1].time if self.undo_stack else None

    @property
    def last_redoable_time(self) -> str | None:
        """Time of the undo that ``redo`` would re-apply (None: nothing to redo)."""
        return self._state.redo_times[-1] if self.redo_stack else None

    @property
    def last_action_time(self) -> str | None:
        """Time of the newest user action, undone or not (not an undo or a redo line); None
        when there is none. A session over several journals uses it to drop a redo that a
        later action in another journal superseded, as one journal drops its own."""
        return self._state.last_action_time or None

    @property
    def writable(self) -> bool:
        return not self.read_only and (self.path is None or self._fd is not None)

    @property
    def disagreements(self) -> list[Disagreement]:
        """Labels that replaced another annotator's different label, in journal order."""
        return list(self._state.disagreements)

    # ------------------------------------------------------------------ lock
    @property
    def lock_path(self) -> Path:
        return journal_lock_path(self.path)

    def _acquire_lock(self) -> None:
        fh = open(self.lock_path, "a+")  # noqa: SIM115 (held open for the journal's lifetime)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fh)
            fh.close()
            raise JournalLockedError(
                f"{self.path}: the label journal is open for writing by another process "
                f"({holder}); close that session first (only one writer per store)"
            ) from None
        except OSError as exc:  # ENOLCK, EOPNOTSUPP: NFS without a lock daemon, some FUSE
            fh.close()
            raise OSError(
                exc.errno,
                f"{self.path}: its file system refuses file locks ({exc.strerror}), which "
                "keep two sessions from writing one journal: put the store on a local disk or "
                "a share mounted with locking (NFS: the lock daemon; not 'nolock')",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on host {socket.gethostname()}")
        fh.flush()
        self._lock_fh = fh

    # ------------------------------------------------------------------ writing
    def _write(self, group: list[JournalEvent]) -> None:
        """All lines of one action in one unbuffered write + fsync; on failure the file is cut
        back to its last acknowledged byte and reopened, so nothing reported as failed reaches
        the disk later (and the next append starts on a clean descriptor)."""
        if self.path is None:
            return
        payload = b"".join(ev.to_json().encode() + b"\n" for ev in group)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except BaseException as exc:  # noqa: BLE001 - any failure (even Ctrl+C) is cut back
            self._cut_back()
            if not isinstance(exc, OSError):
                raise
            err = OSError(
                f"{self.path}: the label was not saved ({exc.strerror or exc}); nothing of it "
                f"is on disk"
            )
            err.errno = exc.errno  # the message alone, without "[Errno N]"
            raise err from exc
        self._good += len(payload)
        self._crc = zlib.crc32(payload, self._crc)
        self._record()

    def _record(self) -> None:
        """Write the acknowledged length and its CRC-32 to the record file (after the
        journal's fsync, so the record never exceeds what the journal holds on disk; not
        fsynced itself: a record left behind after a power cut only checks less)."""
        record = journal_record_path(self.path)
        tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(JournalRecord(self._good, self._crc).text())
            os.replace(tmp, record)
        except OSError as exc:  # the label itself is saved: only the check is behind
            log.warning("%s: could not update %s (%s)", self.path, record.name, exc)

    def _cut_back(self) -> None:
        """After a failed write: truncate to the acknowledged length, then reopen."""
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, self._good)
            os.fsync(fd)
        except OSError:
            log.warning("%s: could not cut a failed write back yet; retrying on reopen", self.path)
        with contextlib.suppress(OSError):
            os.close(fd)
        try:
            self._open_fd()
            if os.fstat(self._fd).st_size != self._good:
                os.ftruncate(self._fd, self._good)
        except OSError as exc:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._fd = None  # not writable until reopened: appends raise, replay still works
            log.warning("%s: journal closed after a failed write (%s)", self.path, exc)

    def _commit(
        self, dataset: str, items: list[tuple[int, int, int]], annotator: str, origin: str
    ) -> Action:
        """Write one action of (candidate, label, previous) items durably and apply it."""
        if not self.writable:
            raise RuntimeError(f"{self.path}: journal opened read-only (or closed)")
        if self.n_candidates is not None:
            for c, _, _ in items:
                if not 0 <= int(c) < self.n_candidates:
                    raise ValueError(
                        f"{self.path}: candidate {c} out of range [0, {self.n_candidates})"
                    )
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        action = uuid.uuid4().hex[:12]
        group = [
            JournalEvent(
                time=now,
                dataset=str(dataset),
                candidate=int(c),
                label=int(y),
                previous=int(p),
                annotator=str(annotator),
                origin=origin,
                session=self.session,
                action=action,
                action_size=len(items),
            )
            for c, y, p in items
        ]
        self._write(group)
        self.events.extend(group)
        self._state.apply(tuple(group))
        return tuple(group)

    def append_many(
        self, dataset: str, candidates, labels, annotator: str, origin: str = "human"
    ) -> Action:
        """One user action: give ``labels`` (one value, or one per candidate; +1 / -1 / 0) to
        ``candidates`` (distinct). Durable before it returns; one undo reverts all of it."""
        if origin not in USER_ORIGINS:
            raise ValueError(f"origin must be one of {USER_ORIGINS}, got {origin!r}")
        candidates = [int(c) for c in candidates]
        if not candidates:
            raise ValueError("append_many: no candidate given")
        if len(set(candidates)) != len(candidates):
            raise ValueError(f"append_many: candidates repeat in {candidates}")
        labels = [labels] * len(candidates) if np.ndim(labels) == 0 else list(labels)
        if len(labels) != len(candidates):
            raise ValueError(f"{len(labels)} labels for {len(candidates)} candidates")
        for y in labels:
            if y not in LABEL_VALUES or isinstance(y, bool):
                raise ValueError(f"label must be one of {LABEL_VALUES}, got {y!r}")
        items = [
            (c, int(y), self.labels.get((str(dataset), c), UNLABELLED))
            for c, y in zip(candidates, labels)
        ]
        return self._commit(dataset, items, annotator, origin)

    def append_new(
        self, dataset: str, candidates, labels, annotator: str, origin: str = "import"
    ) -> tuple[Action | None, np.ndarray]:
        """One action giving ``labels`` (one per candidate, +1 / -1) to those of ``candidates``
        (distinct) that have no label in ``dataset`` yet (a label or unsure is never
        replaced): an import. Returns (the action, None when every candidate had one; (M,)
        bool, which candidates it labelled)."""
        candidates = [int(c) for c in candidates]
        labels = list(labels)
        if len(labels) != len(candidates):
            raise ValueError(f"{len(labels)} labels for {len(candidates)} candidates")
        new = np.array([(str(dataset), c) not in self.labels for c in candidates], bool)
        if not new.any():
            return None, new
        picked = np.flatnonzero(new)
        action = self.append_many(
            dataset,
            [candidates[k] for k in picked],
            [labels[k] for k in picked],
            annotator,
            origin=origin,
        )
        return action, new

    def append(
        self, dataset: str, candidate: int, label: int, annotator: str, origin: str = "human"
    ) -> JournalEvent:
        """One user action on one candidate; returns its line."""
        return self.append_many(dataset, [candidate], [label], annotator, origin)[0]

    def undo(self, annotator: str) -> Action | None:
        """Revert the latest user action (all its candidates); returns the lines written, or
        None when there is nothing to undo."""
        if not self.undo_stack:
            return None
        last = self.undo_stack[-1]
        items = [
            (ev.candidate, ev.previous, self.labels.get((ev.dataset, ev.candidate), 0))
            for ev in reversed(last)
        ]
        return self._commit(last[0].dataset, items, annotator, "undo")

    def redo(self, annotator: str) -> Action | None:
        """Re-apply the latest undone action; returns the lines written, or None."""
        if not self.redo_stack:
            return None
        action = self.redo_stack[-1]
        items = [
            (ev.candidate, ev.label, self.labels.get((ev.dataset, ev.candidate), 0))
            for ev in action
        ]
        return self._commit(action[0].dataset, items, annotator, "redo")

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        with contextlib.suppress(OSError, ValueError):
            self.close()


def other_journals(labels_dir: str | Path) -> list[Path]:
    """Journal files in a store's ``labels/`` folder besides its own ``journal.jsonl``: copies
    written elsewhere (a cloud folder's "conflicted copy" when two computers labelled one
    synced store: the lock keeps out a second writer on one computer only). Their labels are
    not read until merged (``actsort import-labels STORE --from COPY``, the page's Load
    labels)."""
    folder = Path(labels_dir)
    if not folder.is_dir():
        return []
    own = Path(schema.JOURNAL_FILE).name
    return sorted(p for p in folder.glob("*.jsonl") if p.name != own and p.is_file())


def other_journal_note(store_path, copy) -> str:
    """What to say of a copy of a store's journal that :func:`other_journals` found: its
    labels are not read, and the command that merges them."""
    return (
        f"{copy}: another copy of the label journal (a synced folder's conflicted copy?): its "
        f"labels are not read; `actsort import-labels {store_path} --from '{copy}'` merges them"
    )


def read_labels(path: str | Path, dataset: str, n_candidates: int) -> np.ndarray:
    """(n_candidates,) int8 labels of ``dataset`` from the journal at ``path``, replayed
    read-only (no lock: works beside a running page) under the replay policy (a candidate out
    of range is an error naming the line); zeros when there is no journal. Unsure candidates
    (``UNSURE``) read as 0: these are training labels."""
    labels = np.zeros(n_candidates, np.int8)
    if not Path(path).exists():
        return labels
    with Journal(path, read_only=True, n_candidates=n_candidates, dataset=dataset) as journal:
        for (_, cand), lab in journal.labels.items():  # all this store's (``dataset=``)
            labels[cand] = UNLABELLED if lab == UNSURE else lab
    return labels


def disagreement_column(path: str | Path, dataset: str, n_candidates: int) -> list[str]:
    """Per candidate of ``dataset``, its disagreements in the journal at ``path`` as text
    ("ana +1 -> bob -1", several joined by "; "), '' where there is none (the export's
    ``disagreement`` column)."""
    out = [""] * int(n_candidates)
    if not Path(path).exists():
        return out
    with Journal(path, read_only=True, n_candidates=n_candidates, dataset=dataset) as journal:
        for d in journal.disagreements:  # all this store's (``dataset=``)
            text = f"{d.first_annotator} {d.first_label:+d} -> {d.annotator} {d.label:+d}"
            out[d.candidate] = f"{out[d.candidate]}; {text}" if out[d.candidate] else text
    return out
