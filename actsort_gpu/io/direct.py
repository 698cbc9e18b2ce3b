"""Reads that bypass the page cache (``O_DIRECT``) for movies that are not in it.

A movie pass reads every byte once. Through the page cache, each cold byte costs the kernel a
page allocation, a copy and, once memory is full, reclaiming another page: on a 2-core VM that
was 0.7-2.2 CPU-seconds per GB, taken from the accumulator's cores (benchmarks/RESULTS.md,
"The CPU pass ..."). With ``O_DIRECT`` the disk writes into an aligned buffer of ours, and one
``memcpy`` puts the bytes where the caller wants them. A file that is mostly cached already
(just written, read before) is faster through the cache, so :func:`cached_share` samples it
first.

Linux only (``os.O_DIRECT``); elsewhere, and on file systems that refuse it (tmpfs), callers
keep their buffered reads.
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

__all__ = ["DirectReader", "cached_share", "open_direct", "ALIGN", "BLOCK_BYTES"]

#: file offsets, lengths and buffer addresses of direct reads are multiples of this (the page
#: size covers every logical block size in use)
ALIGN = 4096
#: bytes per direct read (one aligned buffer of this size per open movie): large requests keep
#: the disk's queue full
BLOCK_BYTES = 64 << 20


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

    def read_into(self, dest: memoryview, pos: int) -> None:
        """Fill ``dest`` (a writable byte view) with the file's bytes from offset ``pos``.

        Raises OSError (EINVAL where the file system refuses the request) or, at the end of
        the file, OSError naming the offset.
        """
        block = memoryview(self._block)
        with self._lock:
            done = 0
            while done < len(dest):
                start = pos + done
                aligned = start - start % ALIGN
                skip = start - aligned
                want = min(len(self._block), -(-(skip + len(dest) - done) // ALIGN) * ALIGN)
                got = os.preadv(self._fd, [block[:want]], aligned)
                usable = min(got - skip, len(dest) - done)
                if usable <= 0:
                    raise OSError(
                        errno.EIO,
                        f"{self.path}: unexpected end of file at byte {start:,} (direct read)",
                    )
                dest[done : done + usable] = block[skip : skip + usable]
                done += usable

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
