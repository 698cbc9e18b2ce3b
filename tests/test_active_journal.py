"""Label journal: replay, undo/redo, torn lines, single writer, kill -9 durability."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from actsort_gpu.active.learner import DatasetInput, Learner
from actsort_gpu.labels import (
    Journal,
    JournalLockedError,
    balanced_accuracy,
    final_labels,
    journal_record_path,
    replay,
)

REPO = Path(__file__).resolve().parents[1]


def test_replay_undo_redo(tmp_path):
    path = tmp_path / "labels" / "journal.jsonl"
    with Journal(path) as j:
        j.append("a", 3, 1, "ana")
        j.append("a", 4, -1, "ana")
        j.append("a", 3, 0, "ana")  # unlabel
        assert j.labels == {("a", 4): -1}
        j.undo("ana")  # 3 back to +1
        assert j.labels == {("a", 3): 1, ("a", 4): -1}
        j.undo("ana")  # 4 back to unlabelled
        j.redo("ana")  # 4 -1 again
        assert j.labels == {("a", 3): 1, ("a", 4): -1}
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    assert [ln["origin"] for ln in lines] == ["human"] * 3 + ["undo", "undo", "redo"]
    assert set(lines[0]) == {
        "time",
        "dataset",
        "candidate",
        "label",
        "previous",
        "annotator",
        "origin",
        "session",
        "action",
        "action_size",
    }
    with Journal(path, read_only=True) as j2:  # state = replay of the file
        assert j2.labels == {("a", 3): 1, ("a", 4): -1}
        assert len(j2.redo_stack) == 1 and len(j2.undo_stack) == 2
    labels, _, _ = replay([])
    assert labels == {}


def test_new_action_clears_redo(tmp_path):
    with Journal(tmp_path / "j.jsonl") as j:
        j.append("a", 1, 1, "x")
        j.undo("x")
        j.append("a", 2, 1, "x")
        assert j.redo("x") is None
        assert j.undo("x")[-1].candidate == 2


def test_torn_last_line_ignored_and_cut(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.append("a", 1, 1, "x")
    with open(path, "ab") as fh:
        fh.write(
            b'{"time": "2025',
        )  # crash in the middle of a write
    with Journal(path) as j:
        assert j.labels == {("a", 1): 1}
        j.append("a", 2, -1, "x")
    assert len(path.read_text().splitlines()) == 2


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"bad json\n{"also": 1}\n')
    with pytest.raises(ValueError, match="unreadable journal line"):
        Journal(path, read_only=True)


def test_bad_label_and_origin_rejected(tmp_path):
    with Journal(tmp_path / "j.jsonl") as j:
        with pytest.raises(ValueError, match="label"):
            j.append("a", 1, 7, "x")  # 2 is UNSURE (issue 15): a valid journal value
        with pytest.raises(ValueError, match="origin"):
            j.append("a", 1, 1, "x", origin="robot")
        assert j.labels == {}
    with pytest.raises(RuntimeError, match="read-only"):
        Journal(tmp_path / "j.jsonl", read_only=True).append("a", 1, 1, "x")


def test_second_writer_refused_with_holder(tmp_path):
    path = tmp_path / "j.jsonl"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from actsort_gpu.labels import Journal
            j = Journal({str(path)!r})
            print("locked", flush=True)
            time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(JournalLockedError, match=rf"pid {child.pid} on host"):
            Journal(path)
        Journal(path, read_only=True).close()  # readers are fine
    finally:
        child.kill()
        child.wait()
    Journal(path).close()  # lock released by the OS on death


def test_a_file_system_without_locks_is_named(tmp_path, monkeypatch):
    """NFS without its lock daemon answers flock with ENOLCK: the journal refuses to open for
    writing with a message naming the store's file system (it cannot keep a second writer
    out); readers and the page-open check still work."""
    import errno
    import fcntl

    from actsort_gpu import labels

    path = tmp_path / "labels" / "journal.jsonl"
    with Journal(path) as j:
        j.append("a", 3, 1, "ana")

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(OSError, match=r"journal.jsonl: its file system refuses file locks"):
        Journal(path)
    assert labels.journal_holder(path) is None
    with Journal(path, read_only=True) as reader:
        assert reader.labels == {("a", 3): 1}


CHILD = """
import sys
import numpy as np
from pathlib import Path
from actsort_gpu.active.learner import DatasetInput, Learner
from actsort_gpu.active.engine import Policy
x = np.random.default_rng(0).normal(size=(1000, 5)).astype(np.float32)
ds = DatasetInput("anim", x, journal_path=Path(sys.argv[1]))
lrn = Learner([ds], Policy(strategy="random"), annotator="bot", device="cpu")
for i in range(1000):
    lrn.label(i, 1 if i % 3 else -1)
    print(i, flush=True)
"""


def test_kill9_keeps_every_acknowledged_label(tmp_path):
    path = tmp_path / "store" / "labels" / "journal.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    acked = []
    t0 = time.monotonic()
    while len(acked) < 300 and time.monotonic() - t0 < 60:
        line = child.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acked += [int(s) for s in child.stdout.read().split()]  # printed before the kill landed
    assert len(acked) >= 300 and len(acked) < 1000, "child must be killed mid-way"
    x = np.zeros((1000, 5), dtype=np.float32)
    lrn = Learner([DatasetInput("anim", x, journal_path=path)], device="cpu")
    lab = lrn.labels
    for i in acked:
        assert lab[i] == (1 if i % 3 else -1)
    assert (lab != 0).sum() >= len(acked)
    lrn.close()


def test_action_of_many_candidates_undone_at_once_across_restarts(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.append("a", 9, 1, "x")
        action = j.append_many("a", [1, 2, 3, 4, 5], -1, "x")
        assert len({ev.action for ev in action}) == 1 and action[0].action_size == 5
        with pytest.raises(ValueError, match="repeat"):
            j.append_many("a", [6, 6], 1, "x")
    with Journal(path) as j:  # a restart
        undone = j.undo("x")
        assert sorted(ev.candidate for ev in undone) == [1, 2, 3, 4, 5]
        assert j.labels == {("a", 9): 1}
        j.redo("x")
        assert len(j.labels) == 6
    labels, undo, redo = replay(Journal(path, read_only=True).events)
    assert [len(a) for a in undo] == [1, 5] and redo == [] and len(labels) == 6


def test_action_cut_short_by_a_crash_is_not_applied_and_is_cut(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.append("a", 0, 1, "x")
        j.append_many("a", [1, 2, 3], -1, "x")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]))  # 2 of the 3 lines of the box reached disk
    # and the crash came before the box was acknowledged: the record holds the first line
    journal_record_path(path).write_text(str(len(lines[0])))
    with Journal(path) as j:
        assert j.labels == {("a", 0): 1}
        j.append("a", 7, -1, "x")
    assert len(path.read_text().splitlines()) == 2


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.append("a", 0, 1, "x")
    size = path.stat().st_size
    real_write = os.write

    def half_then_fail(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        j.append("a", 1, -1, "x")
    monkeypatch.setattr(os, "write", real_write)
    assert path.stat().st_size == size and j.labels == {("a", 0): 1}
    j.append("a", 2, -1, "x")
    j.close()
    assert Journal(path, read_only=True).labels == {("a", 0): 1, ("a", 2): -1}


def test_in_memory_journal_undoes_actions(tmp_path):
    j = Journal(None)
    j.append_many("a", [1, 2], 1, "x")
    j.append("a", 3, -1, "x")
    j.undo("x")
    j.undo("x")
    assert j.labels == {} and len(j.redo_stack) == 2
    assert not list(tmp_path.iterdir())


def test_invalid_lines_are_refused_with_the_file_named(tmp_path):
    path = tmp_path / "j.jsonl"
    good = {
        "time": "t",
        "dataset": "a",
        "candidate": 1,
        "label": 1,
        "previous": 0,
        "annotator": "x",
        "origin": "human",
        "session": "s",
    }
    for bad in ({"label": 7}, {"candidate": "abc"}, {"origin": "robot"}):
        path.write_text(json.dumps({**good, **bad}) + "\n")
        with pytest.raises(ValueError, match=r"j\.jsonl: invalid journal line"):
            Journal(path, read_only=True)


def test_final_labels_and_balanced_accuracy_known_answers():
    human = np.array([1, 0, -1, 0, 0], np.int8)
    decision = np.array([-1, 1, 1, -1, 1], np.int8)
    np.testing.assert_array_equal(final_labels(human, decision), [1, 1, -1, -1, 1])
    np.testing.assert_array_equal(final_labels(human, None), human)
    truth = np.array([1, 1, -1, -1, 0])
    # cells: 1 of 2 found; non-cells: 1 of 2 rejected; the unknown candidate is left out
    assert balanced_accuracy(np.array([1, -1, -1, 1, 1]), truth) == pytest.approx(0.5)
    assert balanced_accuracy(np.array([1, 1, -1, -1, -1]), truth) == pytest.approx(1.0)
    assert np.isnan(balanced_accuracy(np.ones(3), np.ones(3)))


def test_a_journal_cut_short_since_is_refused_not_read_as_fewer_labels(tmp_path):
    """Each action records the acknowledged length beside the journal: a journal that holds
    less (a copy of the store made in part) is refused by writers and readers, naming the
    record to delete when it is the only copy left; journals without a record read as
    before, and get one at their next action."""
    from actsort_gpu.labels import JournalShortError, read_labels

    path = tmp_path / "labels" / "journal.jsonl"
    with Journal(path) as j:
        for cand in range(4):
            j.append("a", cand, 1, "x")
    record = journal_record_path(path)
    assert int(record.read_text().split()[0]) == path.stat().st_size
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a copy cut mid-file
    for opener in (lambda: Journal(path), lambda: Journal(path, read_only=True)):
        with pytest.raises(JournalShortError, match=r"journal.jsonl: holds \d+ bytes of labels"):
            opener()
    with pytest.raises(JournalShortError, match=r"delete .*journal.jsonl.written"):
        read_labels(path, "a", 4)
    assert path.read_bytes() == whole[: len(whole) // 2]  # nothing cut or rewritten
    record.unlink()  # the only copy left: its labels are used
    assert (read_labels(path, "a", 4) != 0).sum() >= 1
    with Journal(path) as j:  # a journal without a record gets one at its next action
        j.append("a", 3, -1, "x")
    n_bytes, crc = record.read_text().split()
    assert int(n_bytes) == path.stat().st_size and int(crc, 16) == zlib.crc32(path.read_bytes())


def test_a_journal_replaced_by_another_of_as_many_bytes_is_refused(tmp_path):
    """The record holds the acknowledged bytes' CRC-32: a journal of as many bytes or more whose
    first bytes differ (a sync that kept another computer's journal) is refused, not read as
    this store's labels; a record of the length alone (written before the checksum was kept)
    checks the length only; a journal that only grew since (a crash between its fsync and the
    record) reads."""
    from actsort_gpu.labels import JournalShortError, read_labels

    here, there = tmp_path / "here" / "journal.jsonl", tmp_path / "there" / "journal.jsonl"
    for path, last in ((here, 3), (there, 4)):
        with Journal(path, session="s" * 32) as j:
            for cand in (0, 1, 2, last):
                j.append("a", cand, 1, "x")
    assert here.stat().st_size == there.stat().st_size  # the same length, other labels
    mine = here.read_bytes()
    here.write_bytes(there.read_bytes())
    for opener in (lambda: Journal(here), lambda: Journal(here, read_only=True)):
        with pytest.raises(JournalShortError, match="are not the labels written here"):
            opener()
    with pytest.raises(JournalShortError, match="import-labels"):
        read_labels(here, "a", 5)
    assert here.read_bytes() == there.read_bytes()  # nothing cut or rewritten
    record = journal_record_path(here)
    n_bytes = record.read_text().split()[0]
    record.write_text(n_bytes)  # an older record: the length only
    assert (read_labels(here, "a", 5) != 0).sum() == 4
    here.write_bytes(mine)
    with Journal(here) as j:  # rewrites the record with the checksum
        j.append("a", 4, -1, "x")
    with open(here, "ab") as fh:  # an action acknowledged after the record's last update
        fh.write(there.read_bytes().splitlines(keepends=True)[0])
    assert read_labels(here, "a", 5)[4] == -1
