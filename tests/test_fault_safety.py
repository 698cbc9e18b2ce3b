"""Issue 16: nothing the user owns is destroyed, and every fault ends in one clear message.

--overwrite never deletes an input or a non-store; readers validate sparse parts and sizes
before allocating; the journal survives failed appends and lost newlines, and replays with one
policy; the movie pass checks its disk space and restarts after a movie edit; an interrupted
stage is never read as complete; several tabs get distinct queries; the page's login and
upload route. The campaign script runs the same faults end to end
(tests/test_fault_campaign.py, scripts/fault_campaign.py).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import scipy.sparse as sp
from ui_fixtures import make_test_store

from actsort_gpu.cli import main
from actsort_gpu.io._footprints import check_compressed, check_fov
from actsort_gpu.io.npz import write_npz
from actsort_gpu.labels import LABEL_VALUES, Journal, read_labels
from actsort_gpu.store import SortStore, StoreError

T, H, W, N = 120, 6, 8, 3


def _inputs(tmp_path):
    """A .npy movie, a Suite2p plane folder and a .npz of the same 3 candidates."""
    rng = np.random.default_rng(0)
    movie = rng.integers(90, 110, (T, H, W)).astype(np.uint16)
    np.save(tmp_path / "movie.npy", movie)
    plane = tmp_path / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    stat = [
        {"ypix": np.array([r, r, r + 1]), "xpix": np.array([c, c + 1, c]), "lam": np.ones(3)}
        for r, c in ((1, 1), (2, 4), (4, 6))
    ]
    np.save(plane / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(plane / "ops.npy", {"Ly": H, "Lx": W, "fs": 10.0}, allow_pickle=True)
    traces = rng.normal(0, 1, (N, T)).astype(np.float32)
    for name in ("F.npy", "Fneu.npy"):
        np.save(plane / name, traces)
    fp = sp.csr_matrix(rng.random((N, H * W)).astype(np.float32) * (rng.random((N, H * W)) > 0.7))
    write_npz(tmp_path / "e.npz", fp, traces, H, W)
    return tmp_path / "movie.npy", plane, tmp_path / "e.npz"


def _tree(path):
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _ingest(movie, extraction, out, *extra):
    return main(["ingest", "--movie", str(movie), "--extraction", str(extraction), "--out",
                 str(out), *extra])  # fmt: skip


# ---------------------------------------------------------------------------- 1. --overwrite
def test_overwrite_refuses_the_suite2p_folder_being_ingested(tmp_path, capsys):
    movie, plane, _ = _inputs(tmp_path)
    before = _tree(plane)
    assert _ingest(movie, plane, plane, "--overwrite") == 1
    err = capsys.readouterr().err
    assert f"{plane}: is an input of this command" in err and len(err.splitlines()) == 1
    assert _tree(plane) == before


def test_overwrite_refuses_the_movie_and_a_folder_holding_it(tmp_path, capsys):
    movie, plane, _ = _inputs(tmp_path)
    data = movie.read_bytes()
    assert _ingest(movie, plane, movie, "--overwrite") == 1
    assert f"{movie}: is an input of this command" in capsys.readouterr().err
    assert _ingest(movie, plane, tmp_path, "--overwrite") == 1
    assert f"{tmp_path}: holds an input of this command" in capsys.readouterr().err
    assert movie.read_bytes() == data and (plane / "stat.npy").is_file()


def test_overwrite_refuses_a_folder_that_is_not_a_store(tmp_path, capsys):
    movie, plane, _ = _inputs(tmp_path)
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.docx").write_bytes(b"years of work")
    assert _ingest(movie, plane, folder, "--overwrite") == 1
    err = capsys.readouterr().err
    assert f"{folder}: is a folder that is not a sort store" in err
    assert (folder / "chapter1.docx").read_bytes() == b"years of work"
    # a file, and a folder whose zarr.json lacks schema_version, are refused the same way
    (tmp_path / "notes.txt").write_text("keep")
    assert _ingest(movie, plane, tmp_path / "notes.txt", "--overwrite") == 1
    fake = tmp_path / "fake.actsort"
    fake.mkdir()
    (fake / "zarr.json").write_text(json.dumps({"zarr_format": 3, "attributes": {}}))
    assert _ingest(movie, plane, fake, "--overwrite") == 1
    assert (tmp_path / "notes.txt").read_text() == "keep" and (fake / "zarr.json").is_file()


def test_overwrite_replaces_a_store_and_an_empty_folder(tmp_path):
    movie, plane, _ = _inputs(tmp_path)
    out = tmp_path / "s.actsort"
    assert _ingest(movie, plane, out) == 0
    assert _ingest(movie, plane, out, "--overwrite") == 0
    (tmp_path / "empty").mkdir()
    assert _ingest(movie, plane, tmp_path / "empty", "--overwrite") == 0
    assert SortStore.open(tmp_path / "empty").stage_status("ingest") == "complete"


# ---------------------------------------------------------------------------- 2. readers
def test_check_compressed_known_answers():
    indptr, indices, data = np.array([0, 2, 3]), np.array([0, 5, 2]), np.ones(3)
    check_compressed(indptr, indices, data, 2, 6, "x.npz")  # valid
    cases = {
        "index 6 outside": (indptr, np.array([0, 6, 2]), data),
        "index -1 outside": (indptr, np.array([0, -1, 2]), data),
        "decreases at row 1": (np.array([0, 3, 2]), indices, data),
        "ends at 2 but there are 3": (np.array([0, 1, 2]), indices, data),
        "starts at 1": (np.array([1, 2, 3]), indices, data),
        "3 indices but 2 data": (indptr, indices, data[:2]),
        "dtype object": (indptr, indices, np.array([1, "a", 2], dtype=object)),
    }
    for message, parts in cases.items():
        with pytest.raises(ValueError, match=f"x.npz: .*{message}"):
            check_compressed(*parts, 2, 6, "x.npz")


def test_check_fov_bounds_the_header_by_the_movie():
    assert check_fov(512, 256, "ops.npy", (1000, 256, 512)) == (512, 256)
    with pytest.raises(ValueError, match="ops.npy: field of view 30000 x 30000 pixels is larger"):
        check_fov(30_000, 30_000, "ops.npy", (1000, 512, 512))
    with pytest.raises(ValueError, match="not plausible"):
        check_fov(200_000, 200_000, "ops.npy")
    with pytest.raises(ValueError, match="integers"):
        check_fov("a", 3, "ops.npy")


def test_lying_ops_fails_before_allocating(tmp_path, capsys):
    import time

    movie, plane, _ = _inputs(tmp_path)
    ops = {"Ly": 30_000, "Lx": 30_000, "fs": 10.0, "yrange": [0, 5], "xrange": [0, 5]}
    np.save(plane / "ops.npy", {**ops, "max_proj": np.zeros((5, 5), np.float32)})
    t0 = time.perf_counter()
    assert _ingest(movie, plane, tmp_path / "s.actsort") == 1
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert "ops.npy (Ly, Lx): field of view 30000 x 30000" in err


@pytest.mark.parametrize(
    "key, edit, message",
    [
        ("footprints_indices", lambda a: a + H * W, "outside"),
        ("footprints_indptr", lambda a: a[::-1].copy(), "indptr"),
        ("footprints_indptr", lambda a: np.r_[a[:-1], a[-1] - 1], "indptr ends at"),
    ],
)
def test_npz_bad_csr_is_refused_naming_the_file(tmp_path, capsys, key, edit, message):
    movie, _, npz = _inputs(tmp_path)
    with np.load(npz) as z:
        parts = {k: z[k] for k in z.files}
    parts[key] = edit(parts[key])
    np.savez(npz, **parts)
    assert _ingest(movie, npz, tmp_path / "s.actsort") == 1
    err = capsys.readouterr().err
    assert f"{npz}: footprints" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "s.actsort").exists()


def test_suite2p_pixel_list_mismatch_names_the_candidate(tmp_path, capsys):
    movie, plane, _ = _inputs(tmp_path)
    stat = np.load(plane / "stat.npy", allow_pickle=True)
    stat[1]["xpix"] = stat[1]["xpix"][:2]
    np.save(plane / "stat.npy", stat, allow_pickle=True)
    assert _ingest(movie, plane, tmp_path / "s.actsort") == 1
    assert "stat.npy: candidate 1 has 3 row, 2 column" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 5. ingest
def test_fs_must_be_a_positive_number(tmp_path, capsys):
    movie, plane, _ = _inputs(tmp_path)
    for bad in ("-5", "nan", "inf", "0"):
        with pytest.raises(SystemExit):
            _ingest(movie, plane, tmp_path / "s.actsort", "--fs", bad)
        assert "frame rate must be a finite number > 0" in capsys.readouterr().err
    from actsort_gpu.config import IngestConfig
    from actsort_gpu.ingest import ingest_files

    with pytest.raises(ValueError, match="fs_hz"):
        ingest_files(movie, plane, tmp_path / "s.actsort", config=IngestConfig(fs_hz=-1.0))


def test_downsampling_warns_and_the_flag_silences_it(tmp_path, caplog):
    import logging

    movie, plane, _ = _inputs(tmp_path)
    np.save(plane / "F.npy", np.tile(np.load(plane / "F.npy"), 2))  # 240 trace frames
    np.save(plane / "Fneu.npy", np.load(plane / "F.npy"))
    with caplog.at_level(logging.INFO):
        assert _ingest(movie, plane, tmp_path / "a.actsort") == 0
    assert any(r.levelno == logging.WARNING and "2x" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert _ingest(movie, plane, tmp_path / "b.actsort", "--allow-downsampling") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---------------------------------------------------------------------------- 3. journal
def _line(**changes):
    ev = {
        "time": "t",
        "dataset": "a",
        "candidate": 1,
        "label": 1,
        "previous": 0,
        "annotator": "x",
        "origin": "human",
        "session": "s",
    }
    return json.dumps({**ev, **changes})


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(_line() + "\n" + _line(candidate=2, label=-1))  # newline lost
    assert Journal(path, read_only=True).labels == {("a", 1): 1, ("a", 2): -1}
    with Journal(path) as j:  # the writer ends the line before appending
        j.append("a", 3, 1, "x")
    assert len(path.read_text().splitlines()) == 3 and path.read_bytes().endswith(b"\n")
    assert Journal(path, read_only=True).labels == {("a", 1): 1, ("a", 2): -1, ("a", 3): 1}


def test_failed_append_is_cut_back_and_the_journal_reopened(tmp_path, monkeypatch):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.append("a", 0, 1, "x")
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: (real(fd, bytes(data[:7])), 1 / 0)[1])
    with pytest.raises(ZeroDivisionError):  # any failure, not only OSError, is cut back
        j.append("a", 1, 1, "x")
    monkeypatch.setattr(os, "write", real)
    assert path.read_bytes().count(b"\n") == 1 and path.read_bytes().endswith(b"\n")
    assert j.writable and j.labels == {("a", 0): 1}

    def enospc(fd, data):
        real(fd, bytes(data[:9]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", enospc)
    with pytest.raises(OSError, match=r"j.jsonl: the label was not saved") as info:
        j.append("a", 1, -1, "x")
    assert info.value.errno == 28 and not str(info.value).startswith("[Errno")
    monkeypatch.setattr(os, "write", real)
    assert j.writable and j.labels == {("a", 0): 1}
    j.append("a", 2, -1, "x")
    j.close()
    assert Journal(path, read_only=True).labels == {("a", 0): 1, ("a", 2): -1}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"label": 7}, "label 7 is not one of"),
        ({"label": True}, "label True is not one of"),
        ({"previous": 0.5}, "previous 0.5"),
        ({"candidate": "abc"}, "candidate 'abc'"),
        ({"candidate": -2}, "candidate -2"),
        ({"candidate": 10}, "candidate 10 out of range: the store has 10"),
    ],
)
def test_replay_validates_values_naming_the_byte_offset(tmp_path, bad, message):
    path = tmp_path / "j.jsonl"
    first = _line() + "\n"
    path.write_text(first + _line(**bad) + "\n")
    with pytest.raises(ValueError, match=f"j.jsonl: invalid journal line at byte {len(first)}"):
        Journal(path, read_only=True, n_candidates=10)
    with pytest.raises(ValueError, match=message):
        read_labels(path, "a", 10)
    if "label" in message:  # the allowed values come from the one definition
        with pytest.raises(ValueError, match=re.escape(str(LABEL_VALUES))):
            Journal(path, read_only=True)


def test_sort_and_export_share_the_replay_policy(tmp_path):
    """An out-of-range candidate: the page's learner and export fail alike, naming the line."""
    from actsort_gpu.export import export_labels
    from actsort_gpu.ui import open_workspace

    store = make_test_store(tmp_path, n=12)
    journal = store / "labels" / "journal.jsonl"
    journal.parent.mkdir(exist_ok=True)
    journal.write_text(_line(dataset=store.name, candidate=12) + "\n")
    with pytest.raises(ValueError, match="journal.jsonl: invalid journal line at byte 0") as a:
        export_labels(store, "csv", tmp_path / "x.csv")
    with pytest.raises(ValueError, match="journal.jsonl: invalid journal line at byte 0") as b:
        open_workspace([store]).close()
    assert str(a.value) == str(b.value)


def test_disagreements_are_replayed_and_undo_gives_the_label_back(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.append("a", 4, 1, "ana")
        j.append("a", 5, 1, "ana")
        j.append("a", 4, 1, "bob")  # same value: no disagreement
    with Journal(path) as j:
        j.append("a", 5, -1, "bob")  # disagreement
        assert [(d.first_annotator, d.annotator, d.candidate) for d in j.disagreements] == [
            ("ana", "bob", 5)
        ]
        j.undo("bob")  # candidate 5 is ana's +1 again
        j.append("a", 5, -1, "ana")  # ana changes her own mind: no disagreement
    assert len(Journal(path, read_only=True).disagreements) == 1


# ---------------------------------------------------------------------------- 3, 6. the page
def test_ui_state_is_best_effort_and_a_malformed_one_is_ignored(tmp_path, monkeypatch, caplog):
    from pathlib import Path

    from actsort_gpu.ui import open_workspace
    from actsort_gpu.ui.handlers import on_label, on_load

    store = make_test_store(tmp_path, n=12)
    (store / "labels").mkdir(exist_ok=True)
    for bad in ('{"current": [1', "[1, 2]", '{"current": null}', '{"current": true}'):
        (store / "labels" / "ui_state.json").write_text(bad)
        ws = open_workspace([store])
        try:
            st, _ = on_load(ws)
            assert st.current >= 0
        finally:
            ws.close()
    assert "ui_state.json: ignored" in caplog.text
    ws = open_workspace([store])
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith("ui_state"):
            raise OSError(28, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    try:
        st, _ = on_load(ws)
        cur = st.current
        monkeypatch.setattr(Path, "write_text", full)
        st, panels = on_label(ws, st, 1)
        assert panels.status.startswith("Saved") and ws.human(0)[cur] == 1
    finally:
        ws.close()
    assert Journal(store / "labels" / "journal.jsonl", read_only=True).labels


def test_two_tabs_get_distinct_queries_and_leases_expire(tmp_path):
    from actsort_gpu.ui import open_workspace

    store = make_test_store(tmp_path, n=20)
    ws = open_workspace([store])
    try:
        a = ws.next_query(0, "dcal")
        b = ws.next_query(0, "dcal")
        c = ws.next_query(0, "dcal")
        assert len({a, b, c}) == 3
        again = ws.next_query(0, "dcal", current=a)  # tab A moves on: its lease is released
        assert again not in (b, c) and a not in ws._leased(0)
        ws.label(0, [b], 1)  # a labelled candidate is no longer held
        assert b not in ws._leased(0)
        ws._leases = {k: (0.0, who) for k, (_, who) in ws._leases.items()}  # all expired
        assert ws._leased(0) == set()
    finally:
        ws.close()


def test_disagreement_reaches_the_status_and_the_export(tmp_path):
    import csv

    from actsort_gpu.export import export_labels
    from actsort_gpu.ui import open_workspace
    from actsort_gpu.ui.handlers import on_jump, on_label, on_load

    store = make_test_store(tmp_path, n=12)
    ws = open_workspace([store], annotator="ana")
    ws.label(0, [3], 1)
    ws.close()
    ws = open_workspace([store], annotator="bob")
    try:
        st, _ = on_load(ws)
        st, _ = on_jump(ws, st, 3)
        st, panels = on_label(ws, st, -1)
        assert "1 disagreements" in panels.status
    finally:
        ws.close()
    out = export_labels(store, "csv", tmp_path / "t.csv")
    with open(out) as fh:
        rows = {int(r["candidate"]): r for r in csv.DictReader(fh)}
    assert rows[3]["disagreement"] == "ana +1 -> bob -1" and rows[3]["human_label"] == "-1"
    assert rows[4]["disagreement"] == ""


# ---------------------------------------------------------------------------- 4. stages
def test_an_interrupted_stage_is_never_read_as_complete(tmp_path, capsys):
    store = make_test_store(tmp_path, n=12)
    s = SortStore.open(store, "r+")
    s.finish_stage("features", 1.0)
    s.begin_stage("features")  # a re-run killed after it started
    reader = SortStore.open(store)
    with pytest.raises(StoreError, match="features.*interrupted.*actsort features .* again"):
        reader.feature_matrix()
    assert SortStore.open(store, "r+").feature_matrix().values.shape[0] == 12  # the stage
    assert main(["export", str(store), "--format", "csv"]) == 1
    err = capsys.readouterr().err
    assert "run `actsort features" in err and "again" in err and len(err.splitlines()) == 1
    assert main(["info", str(store)]) == 0


def test_pass_digest_changes_when_the_movie_is_edited(tmp_path):
    from actsort_gpu.io.movies import open_movie
    from actsort_gpu.preprocess.stream import pass_digest, plan_pass

    movie, _, _ = _inputs(tmp_path)
    plan = plan_pass(np.zeros((1, 1, 3), np.int32), np.array([[0, 2, 0, 2]], np.int32))
    with open_movie(movie) as m:
        d1 = pass_digest(plan, m)
        assert d1 == pass_digest(plan, m) and d1 != pass_digest(plan, m, "other ingest")
    data = np.load(movie)
    np.save(movie, data[::-1])  # same shape and size, new content and mtime
    st = movie.stat()
    os.utime(movie, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with open_movie(movie) as m:
        assert pass_digest(plan, m) != d1


def test_scratch_needs_free_space(tmp_path, monkeypatch):
    import shutil

    from actsort_gpu.preprocess import stream

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        stream.shutil, "disk_usage", lambda p: usage._replace(free=5 * 10**8)
    )  # 0.5 GB free
    with pytest.raises(OSError, match=r"needs 2 GB in .*, 0.5 GB free") as info:
        stream._open_scratch(tmp_path / "s.scratch", 2 * 10**9, fresh=True)
    assert info.value.errno == 28 and not (tmp_path / "s.scratch").exists()
    stream._open_scratch(tmp_path / "s.scratch", 1000, fresh=True)
    assert (tmp_path / "s.scratch").stat().st_blocks * 512 >= 1000  # blocks reserved


# ---------------------------------------------------------------------------- 7. login, upload
def test_auth_from_file_or_environment(tmp_path, caplog):
    import argparse

    from actsort_gpu.cli.cmd_sort import resolve_auth

    args = argparse.Namespace(auth=None, auth_file=None)
    assert resolve_auth(args, {}) is None
    assert resolve_auth(args, {"ACTSORT_AUTH": "ana:pw"}) == "ana:pw"
    (tmp_path / "auth").write_text("bob:secret\n")
    args.auth_file = str(tmp_path / "auth")
    assert resolve_auth(args, {"ACTSORT_AUTH": "ana:pw"}) == "bob:secret"
    (tmp_path / "auth").write_text("no colon\n")
    with pytest.raises(ValueError, match="auth: expected USER:PASS"):
        resolve_auth(args, {})
    args.auth = "eve:visible"
    assert resolve_auth(args, {}) == "eve:visible" and "visible to other users" in caplog.text


def test_launch_bounds_uploads_and_hides_a_bad_password(tmp_path, monkeypatch):
    import gradio as gr

    from actsort_gpu.ui import serve
    from actsort_gpu.ui.layout import MAX_UPLOAD_BYTES

    calls = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: calls.append(kw))
    path = make_test_store(tmp_path, n=10)
    demo, ws = serve([path], port=7999, prevent_thread_lock=True, quiet=True, auth="a:b")
    ws.close()
    assert calls[0]["max_file_size"] == MAX_UPLOAD_BYTES <= 1024
    assert calls[0]["auth"] == ("a", "b")
    with pytest.raises(ValueError, match="USER:PASS") as info:
        serve([path], port=7999, prevent_thread_lock=True, quiet=True, auth="secretword")
    assert "secretword" not in str(info.value)


def test_each_tab_undoes_its_own_labels_and_opens_on_its_own_candidate(tmp_path):
    """Two tabs opened together both resumed at the remembered candidate and both labelled
    it; one tab's Z then reverted the other tab's label (the journal has one undo stack).
    Now the second tab gets a query of its own, and Z leaves another open tab's label alone
    until that tab is closed or idle for the lease time."""
    from actsort_gpu.ui import handlers as H
    from actsort_gpu.ui import open_workspace
    from actsort_gpu.ui.session import ViewState

    store = make_test_store(tmp_path, n=30)
    ws = open_workspace([store])
    try:
        a, _ = H.on_load(ws, ViewState(), tab="A")
        b, _ = H.on_load(ws, ViewState(), tab="B")
        assert a.current != b.current
        ca, cb = a.current, b.current
        a, _ = H.on_label(ws, a, 1)
        b, _ = H.on_label(ws, b, -1)
        a, p = H.on_undo(ws, a)
        assert "given in another open tab; undo it there" in p.status
        assert ws.human(0)[cb] == -1 and ws.human(0)[ca] == 1
        b, p = H.on_undo(ws, b)  # B's own
        assert ws.human(0)[cb] == 0 and "is now unlabelled" in p.status
        b, p = H.on_redo(ws, b)
        assert ws.human(0)[cb] == -1
        a, p = H.on_redo(ws, a)  # nothing left to redo for A: B re-applied its own
        assert "Nothing to redo" in p.status
        a, p = H.on_undo(ws, a)
        assert "another open tab" in p.status and ws.human(0)[cb] == -1
        ws.forget("B")  # B closed (the page's unload event): its label is anyone's now
        a, p = H.on_undo(ws, a)
        assert ws.human(0)[cb] == 0
        a, p = H.on_undo(ws, a)  # then A's own
        assert ws.human(0)[ca] == 0
        # a tab idle for longer than the lease time counts as gone
        b, _ = H.on_load(ws, ViewState(), tab="B2")
        b, _ = H.on_label(ws, b, 1)
        ws._seen["B2"] -= ws.lease_s + 1
        a, p = H.on_undo(ws, a)
        assert "is now unlabelled" in p.status
    finally:
        ws.close()


def test_a_reloaded_tab_resumes_where_it_was(tmp_path):
    from actsort_gpu.ui import handlers as H
    from actsort_gpu.ui import open_workspace
    from actsort_gpu.ui.session import ViewState

    store = make_test_store(tmp_path, n=30)
    ws = open_workspace([store])
    try:
        a, _ = H.on_load(ws, ViewState(), tab="A")
        a, _ = H.on_label(ws, a, 1)  # shows (and holds) the next query
        shown = a.current
        ws.forget("A")  # the reload closes the old page first
        again, _ = H.on_load(ws, ViewState(), tab="A2")
        assert again.current == shown
    finally:
        ws.close()


def test_switching_store_resumes_only_where_no_other_tab_is(tmp_path):
    from actsort_gpu.ui import handlers as H
    from actsort_gpu.ui import open_workspace
    from actsort_gpu.ui.session import ViewState

    a = make_test_store(tmp_path, n=20, name="a.actsort", seed=1)
    b = make_test_store(tmp_path, n=20, name="b.actsort", seed=2)
    ws = open_workspace([a, b])
    try:
        one, _ = H.on_load(ws, ViewState(), tab="one")
        one, _ = H.on_store(ws, one, "b.actsort")  # tab one holds a candidate of b
        two, _ = H.on_load(ws, ViewState(), tab="two")
        two, _ = H.on_store(ws, two, "b.actsort")  # b's remembered candidate is one's
        assert two.store == one.store == 1 and two.current != one.current
        # a tab coming back to a store resumes at its own reserved candidate
        back, _ = H.on_store(ws, two, "a.actsort")
        again, _ = H.on_store(ws, back, "b.actsort")
        assert again.current == two.current
    finally:
        ws.close()


def test_the_renamed_store_note_is_said_once(tmp_path, caplog):
    import logging

    from actsort_gpu.labels import Journal, read_labels

    old = make_test_store(tmp_path, n=10, name="old.actsort")
    with Journal(old / "labels" / "journal.jsonl", n_candidates=10) as j:
        j.append_many("old.actsort", [1], [1], "ana")
    new = old.rename(tmp_path / "new.actsort")
    with caplog.at_level(logging.INFO, logger="actsort_gpu.labels"):
        for _ in range(3):
            assert read_labels(new / "labels" / "journal.jsonl", "new.actsort", 10)[1] == 1
    assert (
        sum("were named" in r.getMessage() or "was named" in r.getMessage() for r in caplog.records)
        == 1
    )
