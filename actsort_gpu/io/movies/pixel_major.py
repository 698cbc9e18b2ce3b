"""Movies stored pixel by pixel (each pixel's time series together): a Fortran-ordered ``.npy``,
CaImAn's ``order_C`` memmap. A window of frames is a strided read of every pixel."""

from __future__ import annotations

import contextlib
import logging
import mmap
from pathlib import Path

import numpy as np

from ..direct import release_pages
from .base import Movie

log = logging.getLogger(__name__)

__all__ = ["PixelMajorMovie", "TILE_COLUMNS"]

#: image columns transposed at a time: a tile that stays in cache (about twice the speed of one
#: whole transposition), and the unit whose pages are released after it is read
TILE_COLUMNS = 16


class PixelMajorMovie(Movie):
    """A (T, H, W) movie whose bytes are a Fortran-order array at ``offset`` of ``path``:
    frame index fastest, then row, then column (pixel ``row + col * H``, as MATLAB and CaImAn
    count them).

    Windows are read through a read-only memory map, :data:`TILE_COLUMNS` image columns at a
    time (their bytes are one run of the file). After each tile its pages leave this
    process's resident set (``madvise(MADV_DONTNEED)``; they stay in the page cache), so the
    resident memory of a pass is one window plus one tile's pages, not the file: every
    window touches nearly every page of such a file (the kernel maps whole page-cache folios),
    and a job scheduler that polices resident memory would count them all. The price: each
    window maps the pages again from the page cache, a cost per window, so short windows
    read slower (2-4 GB files, 128-frame windows: 0.56-0.92x the speed of keeping them
    mapped; 512 frames: the same).
    """

    format = "pixel-major"

    def __init__(self, path: str | Path, shape: tuple[int, int, int], dtype, offset: int):
        disk_dtype = np.dtype(dtype)
        super().__init__(path, shape, disk_dtype.newbyteorder("="))  # big-endian: swapped on read
        self._offset = int(offset)
        self._releases = True  # until the OS refuses (release_pages)
        need = self._offset + self.n_frames * self.frame_bytes
        with open(self.path, "rb") as fh:
            size = fh.seek(0, 2)
            if size < need:
                raise OSError(
                    f"{self.path}: {size:,} bytes, but a {self.n_frames} x {self.height} x "
                    f"{self.width} {self.dtype} movie at byte {self._offset:,} needs {need:,}; "
                    "the file is truncated"
                )
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        # (W, H, T) in C order is the (T, H, W) Fortran-order array
        self._pixels = np.ndarray(
            (self.width, self.height, self.n_frames), disk_dtype, self._map, self._offset
        )

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.height, self.width), self.dtype)
        self._fill(start, stop, out)
        return out

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        start, stop = int(start), int(stop)
        if not self._fills_in_place(start, stop, out):
            return super().read_into(start, stop, out)
        self._fill(start, stop, out)
        return out

    def _fill(self, start: int, stop: int, out: np.ndarray) -> None:
        if self._pixels is None:
            raise ValueError(f"{self.path}: read after close")
        column_bytes = self.height * self.n_frames * self.dtype.itemsize
        previous = self._offset
        for c0 in range(0, self.width, TILE_COLUMNS):
            c1 = min(c0 + TILE_COLUMNS, self.width)
            out[:, :, c0:c1] = self._pixels[c0:c1, :, start:stop].transpose(2, 1, 0)
            # the kernel maps whole page-cache folios, which may straddle tiles: release the
            # tile before too (pages of it mapped again by this one's faults)
            self._release(previous, self._offset + c1 * column_bytes)
            previous = self._offset + c0 * column_bytes
        self._release(self._offset, self._offset + self.width * column_bytes)

    def _release(self, lo: int, hi: int) -> None:
        """Drop the pages of file bytes [lo, hi) from this process's resident set."""
        if self._releases and not release_pages(self._map, lo, hi):
            self._releases = False  # the pages stay mapped (file-backed, reclaimable)
            log.warning(
                "%s: cannot release the pages read; resident memory will grow with the part "
                "of the file read",
                self.path,
            )

    def close(self) -> None:
        self._pixels = None
        if getattr(self, "_map", None) is not None:
            with contextlib.suppress(BufferError):  # a view is still held: it goes with that
                self._map.close()
            self._map = None
