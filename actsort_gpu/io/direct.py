"""Reads that bypass the page cache (``O_DIRECT``) for movies that are not in it.

A movie pass reads every byte once. Through the page cache, each cold byte costs the kernel a
page allocation, a copy and, once memory is full, reclaiming another page: on a 2-core VM that
was 0.7-2.2 CPU-seconds per GB, taken from the accumulator's cores (benchmarks/RESULTS.md,
"The CPU pass ..."). With ``O_DIRECT`` the disk writes straight into the caller's buffer when
that buffer sits at the same place in a page as the file offset (the movie pass's reader places
its buffers so, :func:`placed_frames`): one large request per chunk, no copy. Other buffers,
and the partial first and last pages, go through an aligned block of ours and one ``memcpy``.
A file that is mostly cached already (just written, read before) is faster through the cache,
so :func:`cached_share` samples it first.

Linux only (``os.O_DIRECT``); elsewhere, and on file systems that refuse it (tmpfs), callers
keep their buffered reads.

Where a file must be memory-mapped (pixel-major movies, the pass's scratch snapshots),
:func:`release_pages` keeps the pages it touched from piling up in the resident set.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "FileBytes",
    "DirectReader",
    "cached_share",
    "open_direct",
    "placed_frames",
    "release_pages",
    "release_memmap",
    "MappedFileWriter",
    "ALIGN",
    "BLOCK_BYTES",
    "PLACEMENT_SLACK",
]

#: file offsets, lengths and buffer addresses of direct reads are multiples of this (the page
#: size covers every logical block size in use)
ALIGN = 4096
#: bytes per direct read through the aligned block (one block of this size per open movie, its
#: pages touched only by reads into buffers that are not placed): large requests keep the
#: disk's queue full
BLOCK_BYTES = 64 << 20
#: extra bytes a buffer needs so that :func:`placed_frames` can put an array at any place in a page
PLACEMENT_SLACK = 2 * ALIGN


def cached_share(path: str | Path, samples: int | None = 16, window: int = 1 << 20) -> float | None:
    """Share of a file's pages that are in the page cache (``mincore``): of ``samples``
    windows of ``window`` bytes spread over the file, or of the whole file (``samples=None``,
    as the benchmarks check an eviction). 0.0 for an empty file; None where it cannot be told.
    """
    size = os.path.getsize(path)
    if size == 0:
        return 0.0
    if samples is None:
        spans = [(0, size)]
    else:
        starts = range(0, size, max(size // samples, window))
        spans = [(off - off % mmap.PAGESIZE, window) for off in starts]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as m:
            view = np.frombuffer(m, np.uint8)
            addr = view.ctypes.data
            resident = total = 0
            for off, n in spans:
                n = min(n, size - off)
                pages = -(-n // mmap.PAGESIZE)
                vec = (ctypes.c_ubyte * pages)()
                if libc.mincore(ctypes.c_void_p(addr + off), ctypes.c_size_t(n), vec) != 0:
                    return None
                resident += int((np.frombuffer(vec, np.uint8) & 1).sum())
                total += pages
            del view
        return resident / total
    except (OSError, AttributeError, ValueError, BufferError):
        return None


def placed_frames(raw: np.ndarray, shape: tuple[int, ...], dtype, shift: int | None) -> np.ndarray:
    """A C-order array of ``shape`` and ``dtype`` inside ``raw`` (a 1-D uint8 array of at
    least its bytes + :data:`PLACEMENT_SLACK`) starting ``shift`` bytes past a page boundary.

    A reader that starts a read at file offset ``pos`` into an array placed at
    ``shift = pos % ALIGN`` can read its whole pages in place (:meth:`DirectReader.read_into`).
    ``shift`` None (no preference), or one that would misalign ``dtype``, places it at a page
    boundary.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if shift is None or shift % dtype.alignment:
        shift = 0
    start = (-_address(raw)) % ALIGN + shift % ALIGN
    if raw.ndim != 1 or raw.dtype != np.uint8 or start + nbytes > raw.size:
        raise ValueError(f"raw must be a 1-D uint8 array of >= {nbytes + PLACEMENT_SLACK} bytes")
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def release_pages(mapped: mmap.mmap, lo: int = 0, hi: int | None = None) -> bool:
    """Drop the pages of bytes [lo, hi) (default: all) of a *shared* or read-only memory map
    from this process's resident set (``madvise(MADV_DONTNEED)``). They stay in the page cache,
    written ones still dirty (they reach the file as usual), and the next access maps them
    again. Without it every page a map touched counts in the resident memory, which grows
    with the file, until the map is closed. Never on a private (copy-on-write) map: its
    changes would be lost. Returns False where the OS has no such advice or refuses it."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return False
    hi = len(mapped) if hi is None else min(int(hi), len(mapped))
    lo = int(lo) - int(lo) % mmap.PAGESIZE
    if hi <= lo:
        return True
    try:
        mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except OSError:
        return False
    return True


def release_memmap(array: np.memmap, rows: slice = slice(None)) -> None:
    """:func:`release_pages` for ``array[rows]`` (rows along the first axis: the elements of a
    1-D array; default all), when ``array`` is a C-ordered ``np.memmap`` or a slice of one,
    shared or read-only (mode 'r' or 'r+'). A Fortran-ordered 2-D map's rows are runs of
    every column, whose end pages the next rows share: its whole map is released when
    ``rows`` reach its last row (a pass by blocks of rows then ends with none of it resident).
    Nothing for other arrays."""
    mapped = getattr(array, "_mmap", None)  # NumPy's mmap object behind the np.memmap
    if mapped is None or getattr(array, "mode", None) not in ("r", "r+") or not len(mapped):
        return
    lo, hi, _ = rows.indices(len(array)) if array.ndim else (0, 0, 1)
    if array.ndim == 2 and array.flags.f_contiguous and not array.flags.c_contiguous:
        if hi >= len(array):
            release_pages(mapped)
        return
    if array.ndim == 0 or not array.flags.c_contiguous:
        return
    row_bytes = int(array.strides[0])
    start = int(array.ctypes.data) - _address(mapped)  # where the array's data is in the map
    release_pages(mapped, start + lo * row_bytes, start + max(hi, lo) * row_bytes)


class MappedFileWriter:
    """Writes into the file behind a writable ``np.memmap`` with ``pwrite`` instead of through
    the map; as a context manager it holds the file open.

    A store through a shared map faults every page it first touches in through the file
    system (on ext4 each such fault also reserves the page's block): scattering 400 MB of
    snapshot segments into a fresh scratch file took 1.7-17 s that way and 0.47 s by
    ``pwrite`` (benchmarks/RESULTS.md, "Preprocess at 100,000 candidates"). The page cache is
    shared, so the map sees what was written (and ``np.memmap.flush`` syncs it); the map's
    own resident set does not grow.

    array : a C-contiguous 1-D ``np.memmap`` opened 'r+' or 'w+' (or a slice of one);
        anything else (a plain array, a read-only map) is written by slice assignment.
    """

    def __init__(self, array: np.ndarray):
        self.array = array
        self.path = None
        self._fd = None
        mapped = getattr(array, "_mmap", None)
        filename = getattr(array, "filename", None)
        if (
            mapped is not None
            and filename is not None
            and getattr(array, "mode", None) in ("r+", "w+")
            and array.ndim == 1
            and array.flags.c_contiguous
        ):
            # np.memmap maps from the allocation granule at or below its offset
            first = int(array.offset) - int(array.offset) % mmap.ALLOCATIONGRANULARITY
            self.path = Path(filename)
            self._start = first + int(array.ctypes.data) - _address(mapped)

    def __enter__(self) -> MappedFileWriter:
        if self.path is not None:
            self._fd = os.open(self.path, os.O_WRONLY)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def write(self, index: int, values: np.ndarray) -> None:
        """``array[index : index + len(values)] = values`` (values: 1-D, of the array's dtype)."""
        if self._fd is None:
            self.array[index : index + len(values)] = values
            return
        view = memoryview(np.ascontiguousarray(values)).cast("B")
        pos = self._start + int(index) * self.array.itemsize
        while len(view):
            done = os.pwrite(self._fd, view, pos)
            if done <= 0:
                raise OSError(errno.EIO, f"{self.path}: short write at byte {pos}")
            view, pos = view[done:], pos + done


def _address(buffer) -> int:
    """Address of the first byte of a buffer (NumPy array or memoryview)."""
    return np.frombuffer(buffer, np.uint8).ctypes.data if len(buffer) else 0


class DirectReader:
    """``O_DIRECT`` reads of one file into any buffer, through one aligned block buffer.

    path : the file; raises OSError where it cannot be opened for direct I/O
    block_bytes : size of the aligned buffer (and of each read request)
    """

    def __init__(self, path: str | Path, block_bytes: int = BLOCK_BYTES):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
        self._block = mmap.mmap(-1, max(ALIGN, block_bytes - block_bytes % ALIGN))  # page-aligned
        self._lock = threading.Lock()
        #: bytes copied out of the aligned block so far (the rest were read in place)
        self.bytes_through_block = 0

    def read_into(self, dest: memoryview, pos: int) -> None:
        """Fill ``dest`` (a writable byte view) with the file's bytes from offset ``pos``.

        When ``dest``'s address and ``pos`` lie at the same place in a page (see
        :func:`placed_frames`), the whole pages in between are read straight into ``dest`` and
        only the partial first and last pages go through the aligned block (no copy of the
        rest); otherwise every byte goes through the block. Raises OSError (EINVAL where the
        file system refuses the request) or, at the end of the file, OSError naming the offset.
        """
        with self._lock:
            head = (-pos) % ALIGN
            body = max(len(dest) - head, 0) // ALIGN * ALIGN
            if body == 0 or (_address(dest) - pos) % ALIGN:
                self._read_through_block(dest, pos)
                return
            self._read_through_block(dest[:head], pos)
            done = 0
            while done < body:
                got = os.preadv(self._fd, [dest[head + done : head + body]], pos + head + done)
                if got <= 0:
                    raise self._end_of_file(pos + head + done)
                done += got
            self._read_through_block(dest[head + body :], pos + head + body)

    def _read_through_block(self, dest: memoryview, pos: int) -> None:
        """``read_into`` through the aligned block: aligned reads, then one copy per block."""
        block = memoryview(self._block)
        done = 0
        while done < len(dest):
            start = pos + done
            aligned = start - start % ALIGN
            skip = start - aligned
            want = min(len(self._block), -(-(skip + len(dest) - done) // ALIGN) * ALIGN)
            got = os.preadv(self._fd, [block[:want]], aligned)
            usable = min(got - skip, len(dest) - done)
            if usable <= 0:
                raise self._end_of_file(start)
            dest[done : done + usable] = block[skip : skip + usable]
            done += usable
        self.bytes_through_block += len(dest)

    def _end_of_file(self, offset: int) -> OSError:
        return OSError(
            errno.EIO, f"{self.path}: unexpected end of file at byte {offset:,} (direct read)"
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._block.close()


def open_direct(path: str | Path, size: int, min_bytes: int = 256 << 20) -> DirectReader | None:
    """A :class:`DirectReader` for ``path`` when direct reads should pay: Linux, a file of at
    least ``min_bytes``, less than half of it in the page cache, and a file system that
    accepts ``O_DIRECT`` (checked with one read). None otherwise (the caller reads buffered)."""
    if not hasattr(os, "O_DIRECT") or size < min_bytes:
        return None
    share = cached_share(path)
    if share is None or share >= 0.5:
        return None
    try:
        reader = DirectReader(path)
    except OSError as exc:
        log.debug("%s: no direct reads (%s)", path, exc)
        return None
    try:
        reader.read_into(memoryview(bytearray(1)), 0)
    except OSError as exc:
        reader.close()
        log.debug("%s: no direct reads (%s)", path, exc)
        return None
    log.info("%s: %.0f %% in the page cache: reading it with direct I/O", path, 100 * share)
    return reader


class FileBytes:
    """The bytes of one file at any offset: direct reads (:func:`open_direct`, decided at the
    first read: large, uncached, a file system that accepts them) or ``os.preadv`` through the
    page cache, falling back to the cache when a direct read is refused (EINVAL).

    path : the file; size : its size in bytes (checked by the caller)
    """

    def __init__(self, path: str | Path, size: int):
        self.path = Path(path)
        self.size = int(size)
        self._fd = os.open(self.path, os.O_RDONLY)
        self.direct: DirectReader | None = None  # decided at the first read
        self._checked = False

    @property
    def read_mode(self) -> str:
        """'direct' (page cache bypassed) or 'buffered'; 'buffered' before the first read."""
        return "direct" if self.direct is not None else "buffered"

    def read_into(self, dest: memoryview, pos: int, what: str = "") -> None:
        """Fill ``dest`` (a writable byte view) from offset ``pos``; at the end of the file,
        OSError naming the offset and ``what`` was being read."""
        if not self._checked:
            self._checked = True
            self.direct = open_direct(self.path, self.size)
        done = 0
        if self.direct is not None:
            try:
                self.direct.read_into(dest, pos)
                done = len(dest)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                log.info("%s: direct reads refused (%s); reading through the cache", self.path, exc)
                self.direct.close()
                self.direct = None
        while done < len(dest):
            n = os.preadv(self._fd, [dest[done:]], pos + done)
            if n <= 0:
                raise OSError(
                    f"{self.path}: unexpected end of file at byte {pos + done:,}"
                    + (f" while reading {what}" if what else "")
                )
            done += n

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.direct is not None:
            self.direct.close()
            self.direct = None
