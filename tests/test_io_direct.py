"""Direct (``O_DIRECT``) reads of raw movies: the same bytes as buffered reads, at any offset,
across blocks and at the end of the file; buffered reads where the file is cached or the file
system refuses direct I/O."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from actsort_gpu.io import direct
from actsort_gpu.io.direct import MappedFileWriter
from actsort_gpu.io.movies import NpyMovie
from actsort_gpu.preprocess.reader import ChunkReader


def _direct_or_skip(path, block_bytes=direct.BLOCK_BYTES):
    try:
        return direct.DirectReader(path, block_bytes)
    except (OSError, AttributeError) as exc:  # no O_DIRECT here (tmpfs, not Linux)
        pytest.skip(f"no direct I/O on {path.parent}: {exc}")


def test_direct_reads_give_the_files_bytes_at_any_offset(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 3 * 8192 + 777, dtype=np.uint8)
    path = tmp_path / "f.bin"
    data.tofile(path)
    reader = _direct_or_skip(path, block_bytes=8192)  # small blocks: several reads per call
    try:
        cases = [(0, 1), (1, 4095), (128, 8192 * 2 + 5), (4096, 4096), (9000, len(data) - 9000)]
        for pos, n in cases:
            out = bytearray(n)
            reader.read_into(memoryview(out), pos)
            assert bytes(out) == data[pos : pos + n].tobytes(), (pos, n)
        with pytest.raises(OSError, match="unexpected end of file at byte"):
            reader.read_into(memoryview(bytearray(10)), len(data) - 5)
    finally:
        reader.close()


def test_a_placed_buffer_is_filled_in_place_but_its_partial_pages(tmp_path):
    data = np.random.default_rng(2).integers(0, 256, 9 * 4096 + 321, dtype=np.uint8)
    path = tmp_path / "f.bin"
    data.tofile(path)
    reader = _direct_or_skip(path, block_bytes=8192)
    try:
        for pos, n in [(0, 4 * 4096), (128, 5 * 4096 + 77), (4095, 3 * 4096), (700, 900)]:
            raw = np.empty(n + direct.PLACEMENT_SLACK, np.uint8)
            placed = direct.placed_frames(raw, (n,), np.uint8, pos % direct.ALIGN)
            before = reader.bytes_through_block
            reader.read_into(memoryview(placed), pos)
            assert placed.tobytes() == data[pos : pos + n].tobytes(), (pos, n)
            through = reader.bytes_through_block - before
            whole_pages = (n - (-pos) % direct.ALIGN) // direct.ALIGN * direct.ALIGN
            assert through == n - max(whole_pages, 0), (pos, n)  # only the partial pages
            if whole_pages > 0:  # the same read into an unplaced buffer copies every byte
                unplaced = bytearray(n + 1)
                before = reader.bytes_through_block
                reader.read_into(memoryview(unplaced)[1:], pos)
                assert reader.bytes_through_block - before == n
                assert bytes(unplaced[1:]) == data[pos : pos + n].tobytes()
        raw = np.empty(5 * 4096 + direct.PLACEMENT_SLACK, np.uint8)
        past_end = direct.placed_frames(raw, (5 * 4096,), np.uint8, 0)
        with pytest.raises(OSError, match="unexpected end of file at byte"):
            reader.read_into(memoryview(past_end), 6 * 4096)  # the in-place part runs out
    finally:
        reader.close()


def test_placed_frames_start_where_asked_inside_the_buffer():
    raw = np.empty(3 * 40 * 2 + direct.PLACEMENT_SLACK, np.uint8)
    for shift in (0, 128, 4094):
        frames = direct.placed_frames(raw, (3, 4, 10), np.uint16, shift)
        assert frames.shape == (3, 4, 10) and frames.dtype == np.uint16
        assert frames.ctypes.data % direct.ALIGN == shift and frames.flags.c_contiguous
        assert np.shares_memory(frames, raw)
    odd = direct.placed_frames(raw, (3, 4, 10), np.uint16, 129)  # would misalign uint16
    assert odd.ctypes.data % direct.ALIGN == 0 and odd.flags.aligned
    assert direct.placed_frames(raw, (3, 4, 10), np.uint16, None).ctypes.data % 4096 == 0
    with pytest.raises(ValueError, match="uint8 array of >= "):
        direct.placed_frames(raw[: 3 * 40 * 2], (3, 4, 10), np.uint16, 0)


@pytest.fixture
def npy_movie(tmp_path):
    """A (37, 24, 30) uint16 .npy (header 128 bytes: no frame starts page-aligned)."""
    frames = np.random.default_rng(1).integers(0, 60000, (37, 24, 30), dtype=np.uint16)
    path = tmp_path / "movie.npy"
    np.save(path, frames)
    return path, frames


def _force_direct(monkeypatch):
    """open_direct as for a large file that is not in the page cache."""
    real = direct.open_direct
    monkeypatch.setattr(direct, "cached_share", lambda path: 0.0)
    monkeypatch.setattr(direct, "open_direct", lambda path, size: real(path, size, min_bytes=0))


def test_a_movie_not_in_the_cache_is_read_directly_with_the_same_frames(npy_movie, monkeypatch):
    path, frames = npy_movie
    _direct_or_skip(path).close()
    _force_direct(monkeypatch)
    movie = NpyMovie(path)
    try:
        assert movie.read_mode == "buffered"  # decided at the first read
        np.testing.assert_array_equal(movie.read(0, 5), frames[:5])
        assert movie.read_mode == "direct"
        np.testing.assert_array_equal(movie.read(30, 37), frames[30:])  # the file's end
        got = [f.copy() for _, f in ChunkReader(movie, 8)]  # the movie pass's reader
        np.testing.assert_array_equal(np.concatenate(got), frames)
    finally:
        movie.close()


def test_the_movie_pass_reads_whole_pages_in_place(tmp_path, monkeypatch):
    frames = np.random.default_rng(3).integers(0, 60000, (21, 64, 64), dtype=np.uint16)
    path = tmp_path / "movie.npy"
    np.save(path, frames)  # 8 KiB frames after a 128-byte header
    _direct_or_skip(path).close()
    _force_direct(monkeypatch)
    with NpyMovie(path) as movie:
        assert [movie.buffer_shift(f) for f in (0, 1, 4)] == [128, 128, 128]
        got = [f.copy() for _, f in ChunkReader(movie, 4)]
        np.testing.assert_array_equal(np.concatenate(got), frames)
        assert movie.read_mode == "direct"
        copied = movie._file.direct.bytes_through_block
        assert copied == 6 * direct.ALIGN + 1  # a page per chunk (head + tail), open's probe
        assert copied < movie.nbytes / 5
        # fresh windows and iter_chunks' reused buffer are placed too
        np.testing.assert_array_equal(movie.read(0, 21), frames)
        reused = [f.copy() for _, f in movie.iter_chunks(8, reuse_buffer=True)]
        np.testing.assert_array_equal(np.concatenate(reused), frames)
        assert movie._file.direct.bytes_through_block - copied == 4 * direct.ALIGN


def test_a_tiff_page_chain_not_in_the_cache_is_read_directly(tmp_path, monkeypatch):
    import tifffile

    from actsort_gpu.io.movies import TiffMovie

    frames = np.random.default_rng(5).integers(0, 60000, (30, 40, 50), dtype=np.uint16)
    path = tmp_path / "chain.tif"
    with tifffile.TiffWriter(path) as tw:  # an IFD before each frame
        for f in frames:
            tw.write(f, contiguous=False, metadata=None)
    _direct_or_skip(path).close()
    _force_direct(monkeypatch)
    with TiffMovie(path) as movie:
        assert movie._pages is not None and movie.read_mode == "direct"
        got = [f.copy() for _, f in ChunkReader(movie, 7)]
        np.testing.assert_array_equal(np.concatenate(got), frames)


@pytest.mark.parametrize("forced", [True, False])
def test_the_store_records_how_the_pass_read_the_movie(tmp_path, monkeypatch, forced):
    import scipy.sparse as sp

    from actsort_gpu.ingest import ingest
    from actsort_gpu.io.candidates import Candidates
    from actsort_gpu.preprocess import preprocess
    from actsort_gpu.store import SortStore

    rng = np.random.default_rng(4)
    t, h, w = 120, 32, 32
    frames = rng.integers(90, 110, (t, h, w), dtype=np.uint16)
    footprints = np.zeros((2, h * w), np.float32)
    footprints[0, [100, 101, 132, 133]] = 1.0
    footprints[1, [600, 601, 632, 633]] = 1.0
    traces = rng.normal(0, 1, (2, t)).astype(np.float32)
    traces[:, 40:44] += 12  # one clear event each
    np.save(tmp_path / "movie.npy", frames)
    if forced:
        _direct_or_skip(tmp_path / "movie.npy").close()
        _force_direct(monkeypatch)
    cands = Candidates(sp.csr_matrix(footprints), traces, h, w, "npz", "c.npz")
    with NpyMovie(tmp_path / "movie.npy") as movie:
        ingest(movie, cands, tmp_path / "s.actsort")
    summary = preprocess(tmp_path / "s.actsort", device="cpu")
    mode = "direct" if forced else "buffered"
    assert summary["read_mode"] == mode
    assert f"accumulator, {mode} reads" in SortStore.open(tmp_path / "s.actsort").summary()


def test_refused_direct_reads_fall_back_to_the_cache(npy_movie, monkeypatch, caplog):
    path, frames = npy_movie
    _direct_or_skip(path).close()
    _force_direct(monkeypatch)

    def refused(self, dest, pos):
        raise OSError(errno.EINVAL, "Invalid argument")

    with NpyMovie(path) as movie, caplog.at_level("INFO"):
        np.testing.assert_array_equal(movie.read(0, 2), frames[:2])
        assert movie.read_mode == "direct"
        monkeypatch.setattr(direct.DirectReader, "read_into", refused)  # e.g. a remount
        np.testing.assert_array_equal(movie.read(3, 9), frames[3:9])
        assert movie.read_mode == "buffered"
    assert "direct reads refused" in caplog.text


def test_other_read_errors_are_not_hidden(npy_movie, monkeypatch):
    path, _ = npy_movie
    _direct_or_skip(path).close()
    _force_direct(monkeypatch)

    def broken(self, dest, pos):
        raise OSError(errno.EIO, "Input/output error")

    with NpyMovie(path) as movie:
        movie.read(0, 2)
        monkeypatch.setattr(direct.DirectReader, "read_into", broken)
        with pytest.raises(OSError, match="Input/output"):
            movie.read(2, 4)


def test_a_cached_or_small_file_is_read_through_the_cache(npy_movie):
    path, frames = npy_movie
    share = direct.cached_share(path)
    if share is None:
        pytest.skip("mincore cannot be asked here")
    assert share == 1.0  # just written: in the page cache
    assert direct.open_direct(path, os.path.getsize(path), min_bytes=0) is None
    assert direct.open_direct(path, os.path.getsize(path)) is None  # below 256 MB anyway
    with NpyMovie(path) as movie:
        np.testing.assert_array_equal(movie.read(0, 37), frames)
        assert movie.read_mode == "buffered"


@pytest.mark.parametrize("offset", [0, 10, 4096 + 6])
def test_mapped_file_writer_writes_through_the_file_at_the_array_place(tmp_path, offset):
    """pwrite at the byte each element has in the file: a map with a header before it (any
    offset, also past an allocation granule) and a slice of one; the map sees the values."""
    path = tmp_path / "scratch.bin"
    path.write_bytes(b"\xff" * (offset + 2 * 100))
    whole = np.memmap(path, np.uint16, "r+", offset=offset, shape=(100,))
    part = whole[40:]
    values = np.arange(7, dtype=np.uint16) + 1000
    with MappedFileWriter(whole) as w:
        assert w.path == path
        w.write(3, values)
    with MappedFileWriter(part) as w:
        w.write(5, values[:2])
    on_disk = np.fromfile(path, np.uint16, offset=offset)
    np.testing.assert_array_equal(on_disk[3:10], values)
    np.testing.assert_array_equal(on_disk[45:47], values[:2])
    assert (on_disk[:3] == 0xFFFF).all() and on_disk[10] == 0xFFFF and on_disk[47] == 0xFFFF
    np.testing.assert_array_equal(whole[3:10], values)  # the page cache is shared with the map


def test_mapped_file_writer_assigns_into_plain_arrays():
    target = np.zeros(10, np.int32)
    with MappedFileWriter(target) as w:
        assert w.path is None
        w.write(4, np.array([1, 2, 3], np.int32))
    assert target.tolist() == [0, 0, 0, 0, 1, 2, 3, 0, 0, 0]
