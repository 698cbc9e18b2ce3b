"""Append-only label journal (``labels/journal.jsonl`` in a sort store).

Every label, unlabel, undo and redo is one JSON line, written, flushed and fsynced before the
call returns, so an acknowledged label survives a crash (kill -9, power loss after fsync). The
current labels are the replay of the journal. One writer per journal: an exclusive,
non-blocking ``fcntl.flock`` on ``journal.jsonl.lock``; a second writer gets an error naming
the journal and the holder's pid and host.

Line format (one JSON object per line)::

    {"time": "2025-01-01T12:00:00.123456+00:00", "dataset": "animal1", "candidate": 17,
     "label": 1, "previous": 0, "annotator": "ana", "origin": "human", "session": "3f2a..."}

origin : human | import (a user action, undoable) | undo | redo (``label`` is the value the
candidate gets; ``previous`` is what it had). A torn last line (crash mid-write, never
acknowledged) is ignored on replay and cut off by the next writer.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["Journal", "JournalLockedError", "JournalEvent", "replay"]

ORIGINS = ("human", "import", "undo", "redo")


class JournalLockedError(RuntimeError):
    """Another process holds the journal's write lock."""


@dataclass(frozen=True)
class JournalEvent:
    time: str
    dataset: str
    candidate: int
    label: int
    previous: int
    annotator: str
    origin: str
    session: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))


def _read_events(path: Path) -> tuple[list[JournalEvent], int]:
    """Events of a journal file and the byte length of its complete lines."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    events = []
    good = 0
    pos = 0
    for raw in data.split(b"\n"):
        end = pos + len(raw) + 1
        if end > len(data):          # no newline: torn final write, never acknowledged
            if raw.strip():
                log.warning("%s: ignoring an incomplete last line (%d bytes)", path, len(raw))
            break
        pos = end
        if not raw.strip():
            good = end
            continue
        try:
            events.append(JournalEvent(**json.loads(raw)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable journal line at byte {end - len(raw) - 1}: "
                             f"{exc}") from exc
        good = end
    return events, good


def replay(events: list[JournalEvent]) -> tuple[dict[tuple[str, int], int], list, list]:
    """Labels after the events, plus the undo and redo stacks (lists of events).

    Returns (labels {(dataset, candidate): label != 0}, undo_stack, redo_stack).
    """
    labels: dict[tuple[str, int], int] = {}
    undo: list[JournalEvent] = []
    redo: list[JournalEvent] = []
    for ev in events:
        key = (ev.dataset, ev.candidate)
        if ev.origin in ("human", "import"):
            undo.append(ev)
            redo.clear()
        elif ev.origin == "undo":
            if undo:
                redo.append(undo.pop())
        elif ev.origin == "redo":
            if redo:
                undo.append(redo.pop())
        if ev.label == 0:
            labels.pop(key, None)
        else:
            labels[key] = ev.label
    return labels, undo, redo


class Journal:
    """Writer (and reader) of one journal file.

    path : the ``journal.jsonl`` file (its folder is created)
    session : id written on every line (default: a fresh uuid4 hex)
    read_only : open without the lock (replay only; ``append`` raises)
    """

    def __init__(self, path, session: str | None = None, read_only: bool = False):
        self.path = Path(path)
        self.session = session or uuid.uuid4().hex
        self.read_only = read_only
        self._lock_fh = None
        self._fh = None
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
        events, good = _read_events(self.path)
        self.events: list[JournalEvent] = events
        self.labels, self.undo_stack, self.redo_stack = replay(events)
        if not read_only:
            if self.path.exists() and self.path.stat().st_size > good:
                with open(self.path, "r+b") as fh:   # drop a torn, unacknowledged tail
                    fh.truncate(good)
            self._fh = open(self.path, "ab")

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _acquire_lock(self) -> None:
        fh = open(self.lock_path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            raise JournalLockedError(
                f"{self.path}: the label journal is open for writing by another process "
                f"({holder}); close that session first (only one writer per store)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on host {socket.gethostname()}")
        fh.flush()
        self._lock_fh = fh

    def append(self, dataset: str, candidate: int, label: int, annotator: str,
               origin: str = "human", previous: int | None = None) -> JournalEvent:
        """Write one event durably (write + flush + fsync) and apply it; returns it."""
        if self.read_only or self._fh is None:
            raise RuntimeError(f"{self.path}: journal opened read-only (or closed)")
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
        if label not in (-1, 0, 1):
            raise ValueError(f"label must be +1, -1 or 0, got {label!r}")
        key = (str(dataset), int(candidate))
        if previous is None:
            previous = self.labels.get(key, 0)
        ev = JournalEvent(time=datetime.now(timezone.utc).isoformat(), dataset=str(dataset),
                          candidate=int(candidate), label=int(label), previous=int(previous),
                          annotator=str(annotator), origin=origin, session=self.session)
        self._fh.write(ev.to_json().encode() + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.events.append(ev)
        self.labels, self.undo_stack, self.redo_stack = self._apply(ev)
        return ev

    def _apply(self, ev: JournalEvent):
        labels, undo, redo = self.labels, self.undo_stack, self.redo_stack
        key = (ev.dataset, ev.candidate)
        if ev.origin in ("human", "import"):
            undo.append(ev)
            redo.clear()
        elif ev.origin == "undo":
            redo.append(undo.pop())
        else:
            undo.append(redo.pop())
        if ev.label == 0:
            labels.pop(key, None)
        else:
            labels[key] = ev.label
        return labels, undo, redo

    def undo(self, annotator: str) -> JournalEvent | None:
        """Revert the latest user action (None when there is nothing to undo)."""
        if not self.undo_stack:
            return None
        last = self.undo_stack[-1]
        return self.append(last.dataset, last.candidate, last.previous, annotator, "undo",
                           previous=self.labels.get((last.dataset, last.candidate), 0))

    def redo(self, annotator: str) -> JournalEvent | None:
        """Re-apply the latest undone action (None when there is nothing to redo)."""
        if not self.redo_stack:
            return None
        ev = self.redo_stack[-1]
        return self.append(ev.dataset, ev.candidate, ev.label, annotator, "redo",
                           previous=self.labels.get((ev.dataset, ev.candidate), 0))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except (OSError, ValueError):
            pass
