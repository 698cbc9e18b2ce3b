"""Sort store: round trips, stage bookkeeping, schema checks, label protection."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from actsort_gpu.store import SCHEMA_VERSION, SortStore, StoreError, file_fingerprint, quantise


@pytest.fixture
def store(tmp_path):
    s = SortStore.create(tmp_path / "s.actsort")
    s.update_attrs(n_candidates=3, n_frames=10, height=4, width=5)
    return s


def test_csr_round_trip_and_row_blocks(store):
    rng = np.random.default_rng(0)
    m = sp.random(50, 20, density=0.2, format="csr", dtype=np.float32, random_state=1)
    store.write_csr("candidates/footprints", m)
    np.testing.assert_array_equal(store.read_csr("candidates/footprints").toarray(), m.toarray())
    block = store.read_csr("candidates/footprints", slice(7, 31))
    np.testing.assert_array_equal(block.toarray(), m[7:31].toarray())
    assert rng is not None


def test_ragged_round_trip_including_empty_items(store):
    pieces = [np.ones((2, 2)), np.zeros((0, 2)), np.arange(6).reshape(3, 2)]
    store.write_ragged("x", pieces, dtype=np.float32, dims=["points", "rc"])
    out = store.read_ragged("x")
    assert [p.shape for p in out] == [(2, 2), (0, 2), (3, 2)]
    np.testing.assert_array_equal(out[2], pieces[2])
    assert [p.shape for p in store.read_ragged("x", slice(1, 3))] == [(0, 2), (3, 2)]


def test_arrays_carry_dims_and_units(store):
    store.write_array(
        "candidates/traces",
        np.zeros((3, 10), np.float32),
        dims=["candidates", "frames"],
        units="a.u.",
    )
    attrs = store.array("candidates/traces").attrs
    assert attrs["dims"] == ["candidates", "frames"] and attrs["units"] == "a.u."
    with pytest.raises(ValueError, match="2 dims"):
        store.write_array("bad", np.zeros(3), dims=["a", "b"])


def test_snapshot_codes_are_entropy_coded_in_small_chunks(store):
    """Noisy image bytes (5 bits of entropy in 8) have no repeats for lz4 to find; the
    snapshots' codec codes their skewed histogram (about 0.63 of raw here; lz4: about 1.0),
    in 1 MB chunks so one candidate's read decodes little."""
    from actsort_gpu import schema

    rng = np.random.default_rng(0)
    codes = np.clip(np.rint(rng.normal(128, 8, 4_000_000)), 0, 255).astype(np.uint8)
    arr = store.create_array(schema.SNAPSHOTS_DATA, codes.shape, np.uint8)
    arr[...] = codes
    assert arr.chunks == (2**20,)
    folder = store.path / "snapshots" / "data"
    stored = sum(f.stat().st_size for f in folder.rglob("*") if f.name != "zarr.json")
    assert stored < 0.75 * codes.nbytes
    np.testing.assert_array_equal(store.read(schema.SNAPSHOTS_DATA), codes)


def test_stage_bookkeeping_and_require(store):
    with pytest.raises(StoreError, match="has not been run.*actsort preprocess"):
        store.require("preprocess")
    store.begin_stage("preprocess", {"chunk": 4})
    assert store.stage_status("preprocess") == "incomplete"
    with pytest.raises(StoreError, match="was interrupted"):
        store.require("preprocess")
    store.finish_stage("preprocess", 1.5, n_chunks=3)
    reopened = SortStore.open(store.path)
    assert reopened.stage_status("preprocess") == "complete"
    assert reopened.attrs["stages"]["preprocess"]["params"] == {"chunk": 4}
    assert reopened.attrs["stages"]["preprocess"]["n_chunks"] == 3


def test_newer_schema_is_refused(store):
    store.update_attrs(schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="upgrade actsort-gpu"):
        SortStore.open(store.path)


def test_not_a_store(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(StoreError, match="not a sort store"):
        SortStore.open(tmp_path / "folder")
    with pytest.raises(FileNotFoundError, match="no such sort store"):
        SortStore.open(tmp_path / "missing.actsort")


def test_corrupt_metadata_names_the_store(store):
    (store.path / "zarr.json").write_text("{not json")
    with pytest.raises((StoreError, ValueError), match="s.actsort"):
        SortStore.open(store.path)


def test_read_only_store_refuses_writes(store):
    ro = SortStore.open(store.path, "r")
    with pytest.raises(StoreError, match="read-only"):
        ro.update_attrs(x=1)


def test_create_refuses_to_overwrite_labels(store):
    store.labels_dir.mkdir()
    (store.labels_dir / "journal.jsonl").write_text(json.dumps({"candidate": 0}) + "\n")
    with pytest.raises(FileExistsError, match="human labels"):
        SortStore.create(store.path, overwrite=True)
    with pytest.raises(FileExistsError, match="already exists"):
        SortStore.create(store.path)


def test_build_moves_into_place_only_when_complete(store):
    """``SortStore.build`` writes beside the path and replaces what is there only at the end:
    an error inside the block leaves the old store and no hidden folder; after success the
    yielded store is the one at the path."""
    parent = store.path.parent
    store.update_attrs(marker="old")
    with (
        pytest.raises(RuntimeError, match="cut file"),
        SortStore.build(store.path, overwrite=True) as new,
    ):
        assert new.path != store.path and new.path.parent == parent
        new.update_attrs(marker="new")
        raise RuntimeError("cut file")
    assert SortStore.open(store.path).attrs["marker"] == "old"
    assert [p.name for p in parent.iterdir()] == [store.path.name]
    with SortStore.build(store.path, overwrite=True) as new:
        new.update_attrs(marker="new")
        assert SortStore.open(store.path).attrs["marker"] == "old"  # untouched until the end
    assert new.path == store.path and new.mode == "r+"
    new.update_attrs(more=1)
    assert SortStore.open(store.path).attrs["marker"] == "new"
    assert [p.name for p in parent.iterdir()] == [store.path.name]
    # Labels given while the build ran: the old store is kept, the new one discarded
    with (
        pytest.raises(FileExistsError, match="human labels"),
        SortStore.build(store.path, overwrite=True),
    ):
        store.labels_dir.mkdir()
        store.journal_path.write_text(json.dumps({"candidate": 0}) + "\n")
    assert store.journal_path.exists()
    assert [p.name for p in parent.iterdir()] == [store.path.name]


def test_build_tidies_what_a_killed_build_left(tmp_path):
    """A half-built store of a dead process is removed; an old store caught between the two
    renames (the path missing) is put back; a running build's folder is left alone."""
    path = tmp_path / "s.actsort"
    dead = 2**22 + 12345  # above Linux's pid_max default: no such process
    SortStore.create(tmp_path / f".s.actsort.partial-{dead}")
    SortStore.create(tmp_path / f".s.actsort.replaced-{dead}").update_attrs(marker="old")
    running = SortStore.create(tmp_path / f".s.actsort.partial-{os.getppid()}").path
    other = SortStore.create(tmp_path / f".s.actsort.x.partial-{dead}").path  # another store's
    with pytest.raises(FileExistsError, match="already exists"), SortStore.build(path):
        pass
    assert SortStore.open(path).attrs["marker"] == "old"
    assert not (tmp_path / f".s.actsort.partial-{dead}").exists()
    assert running.exists() and other.exists()
    # A killed build whose process id is now this process's (ids reused after a restart)
    reused = tmp_path / "r.actsort"
    SortStore.create(tmp_path / f".r.actsort.replaced-{os.getpid()}").update_attrs(marker="kept")
    with pytest.raises(FileExistsError, match="already exists"), SortStore.build(reused):
        pass
    assert SortStore.open(reused).attrs["marker"] == "kept"


def test_build_of_a_relative_path_and_the_current_folder(tmp_path, monkeypatch):
    """A relative name works from any folder (its hidden siblings go beside it); the current
    folder, or a folder holding it, is refused by name even when empty (renaming it would
    leave the shell in a deleted folder), and nothing is created or deleted."""
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with SortStore.build("s.actsort") as new:
        new.update_attrs(marker="relative")
    assert new.path == Path("s.actsort") and SortStore.open("s.actsort").attrs["marker"]
    assert sorted(p.name for p in Path.cwd().iterdir()) == ["s.actsort"]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for given in (".", str(empty), ".."):
        with (
            pytest.raises(FileExistsError, match="current folder"),
            SortStore.build(given, overwrite=True),
        ):
            pass
    assert empty.is_dir() and not any(empty.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "here"]


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_quantise_error_bound(dtype):
    x = np.random.default_rng(0).normal(size=(5, 11, 6, 7)).astype(np.float32)
    codes, (lo, hi) = quantise(x, dtype)
    q_max = np.iinfo(dtype).max
    back = lo + codes.astype(np.float32) * (hi - lo) / q_max
    assert np.abs(back - x).max() <= (hi - lo) / (2 * q_max) * 1.001
    flat, (lo, hi) = quantise(np.full((2, 2), 3.0), dtype)
    assert lo == hi == 3.0 and not flat.any()


def test_fingerprint_hash_changes_with_content(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    h1 = file_fingerprint(f, content_hash=True)
    f.write_bytes(b"abd")
    h2 = file_fingerprint(f, content_hash=True)
    assert h1["size_bytes"] == 3 and h1["sha256"] != h2["sha256"]


def test_stages_the_page_reads_wait_for_it_to_close(tmp_path, capsys):
    """While a labelling session holds the journal, preprocess / features / embed are refused
    naming the holder (they rewrite what the page reads); apply is not; once it closes, they
    run."""
    from ui_fixtures import make_test_store

    from actsort_gpu.active.learner import Learner
    from actsort_gpu.labels import journal_holder

    path = make_test_store(tmp_path, n=12)
    store = SortStore.open(path, "r+")
    assert journal_holder(store.journal_path) is None
    learner = Learner.open([path], annotator="ana", device="cpu")
    holder = journal_holder(store.journal_path)
    assert holder and f"pid {os.getpid()}" in holder
    for stage in ("preprocess", "features", "embed"):
        with pytest.raises(
            StoreError, match=f"labelling session has it open .*before running {stage}"
        ):
            store.begin_stage(stage)
    store.begin_stage("apply")
    from actsort_gpu.cli import main

    assert main(["info", str(path)]) == 0
    assert f"open for labelling (pid {os.getpid()}" in capsys.readouterr().out
    learner.close()
    assert journal_holder(store.journal_path) is None
    store.begin_stage("features")


def _chunk(store, name: str) -> Path:
    return next(p for p in sorted((store.path / name / "c").rglob("*")) if p.is_file())


def test_a_partial_copy_is_found_not_read_as_zeros(store, tmp_path):
    """zarr reads a missing chunk file as zeros: each stage's end records every array's chunk
    files, and a reader refuses an array whose files are missing or cut short, naming it and
    what to do; ``check_chunks`` (``actsort info``, the page) lists every damaged array."""
    import shutil

    from actsort_gpu import schema

    rng = np.random.default_rng(0)
    traces = rng.random((3, 10), dtype=np.float32)
    store.write_array(schema.TRACES, traces, chunks=(1, 10))
    store.write_csr(schema.FOOTPRINTS, sp.random(3, 20, 0.3, format="csr", dtype=np.float32))
    store.finish_stage("ingest", 0.1)
    store.begin_stage("features")
    store.write_array(schema.FEATURE_MATRIX, rng.random((3, 4), dtype=np.float32))
    store.finish_stage("features", 0.1)
    assert SortStore.open(store.path).check_chunks() == []
    copy = tmp_path / "copy.actsort"
    shutil.copytree(store.path, copy)
    _chunk(SortStore.open(copy), schema.FEATURE_MATRIX).unlink()
    chunk = _chunk(SortStore.open(copy), schema.TRACES)
    chunk.write_bytes(chunk.read_bytes()[:10])
    damaged = SortStore.open(copy)
    with pytest.raises(StoreError, match=r"'features/matrix' is damaged: 1 of its 1 chunk files"):
        damaged.read(schema.FEATURE_MATRIX)
    with pytest.raises(StoreError, match=r"rerun `actsort features .*copy.actsort` \(labels"):
        damaged.array(schema.FEATURE_MATRIX)
    with pytest.raises(StoreError, match=r"'candidates/traces' is damaged: its chunk files hold"):
        damaged.traces(slice(1, 2))  # another row's chunk: zarr alone would not notice
    np.testing.assert_array_equal(damaged.footprints().toarray(), store.footprints().toarray())
    problems = damaged.check_chunks()
    assert len(problems) == 2 and "copy the whole store again" in " ".join(problems)
    assert "chunk files  DAMAGED" in damaged.summary()
    with pytest.raises(StoreError, match="'candidates/traces' is damaged"):
        SortStore.open(copy).require("ingest")  # before a stage that reads it begins
    _chunk(damaged, schema.FOOTPRINTS + "/indices").unlink()
    with pytest.raises(StoreError, match="'candidates/footprints/indices' is damaged"):
        SortStore.open(copy).footprints()
    # a stage being rerun rewrites its arrays: not checked until it finishes again
    rerun = SortStore.open(copy, "r+")
    rerun.begin_stage("features")
    rerun.write_array(schema.FEATURE_MATRIX, np.ones((3, 4), np.float32))
    rerun.finish_stage("features", 0.1)
    np.testing.assert_array_equal(SortStore.open(copy).read(schema.FEATURE_MATRIX), 1)
    # stores written before the record: read as before
    old = SortStore.open(store.path, "r+")
    old._root.attrs.pop("chunk_files")
    _chunk(old, schema.FEATURE_MATRIX).unlink()
    assert SortStore.open(store.path).check_chunks() == []


def test_a_rerun_stage_leaves_the_stages_after_it_out_of_date(store):
    """preprocess run again (say with other event settings) rewrites what features and embed
    read, and features what apply read: they become 'stale' at once (also if the rerun is then
    killed), readers and ``require`` refuse them naming the command, and a rerun makes each
    current again; a stage that never ran stays so."""
    from actsort_gpu import schema

    for stage in ("ingest", "preprocess", "features", "apply"):
        store.begin_stage(stage)
        if stage == "features":
            store.write_array(schema.FEATURE_MATRIX, np.ones((3, 2), np.float32))
        store.finish_stage(stage, 0.1)
    store.begin_stage("preprocess")
    assert store.stage_status("preprocess") == "incomplete"
    assert store.stage_status("features") == "stale" and store.stage_status("apply") == "stale"
    assert store.stage_status("embed") is None
    store.finish_stage("preprocess", 0.1)
    reader = SortStore.open(store.path)
    with pytest.raises(StoreError, match=r"'features' is out of date: preprocess ran again"):
        reader.read(schema.FEATURE_MATRIX)
    with pytest.raises(StoreError, match=r"run `actsort apply` on .*s.actsort again"):
        reader.require("apply")
    assert "features    OUT OF DATE (preprocess ran again since" in reader.summary()
    store.begin_stage("features")
    store.finish_stage("features", 0.1)
    assert SortStore.open(store.path).read(schema.FEATURE_MATRIX).shape == (3, 2)
    assert store.stage_status("apply") == "stale"  # still: it read the old features
