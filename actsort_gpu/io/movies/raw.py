"""Uncompressed frames at a byte offset of a file, read by windows with ``preadv`` (direct
I/O when large and uncached): raw files, ``.npy``, Suite2p ``data.bin``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..direct import ALIGN, FileBytes
from .base import Movie
from .pixel_major import PixelMajorMovie

__all__ = ["RawFileMovie", "NpyMovie", "Suite2pBinMovie", "PAGE_GAP_BYTES"]

#: frames (or strips of rows) that lie on average more than this many bytes apart are read one
#: by one at their offsets instead of as one span (the bytes between them would be read for
#: nothing): one channel or plane of interleaved pages, one ROI of multi-ROI pages
PAGE_GAP_BYTES = 1 << 16


class RawFileMovie(Movie):
    """Uncompressed C-order frames at a byte offset of a file: Suite2p ``data.bin``, ``.npy``,
    contiguous uncompressed TIFF.

    Reads each window with ``os.preadv`` into a fresh buffer: no memory map, so the resident
    memory is one window however long the movie (a memory map keeps every touched page counted).
    A file of 256 MB or more that is mostly not in the page cache is read with direct I/O
    (:mod:`.direct`: no page-cache fill, and no copy into a buffer placed at
    :meth:`buffer_shift`; decided at the first read). The file's size
    is checked at open: a truncated file is refused before any read.
    """

    format = "raw"

    def __init__(self, path: str | Path, shape: tuple[int, int, int], dtype, offset: int = 0):
        disk_dtype = np.dtype(dtype)
        super().__init__(path, shape, disk_dtype.newbyteorder("="))
        self._swap = not disk_dtype.isnative  # big-endian TIFF: swap bytes after reading
        self._offset = int(offset)
        expected = self._offset + self.nbytes
        size = self.path.stat().st_size
        if size < expected:
            raise OSError(
                f"{self.path}: file is truncated: {size:,} bytes, expected {expected:,} for "
                f"{self.n_frames} frames of {self.height} x {self.width} {self.dtype} "
                f"(+{self._offset} header bytes); the last "
                f"{(expected - size + self.frame_bytes - 1) // self.frame_bytes} frame(s) are "
                "missing"
            )
        self._file = FileBytes(self.path, size)

    @property
    def read_mode(self) -> str:
        """'direct' (page cache bypassed) or 'buffered'; 'buffered' before the first read."""
        return self._file.read_mode

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = self.placed_window(self.window_buffer(stop - start), start, stop)
        return self._pread(start, stop, out)

    def buffer_shift(self, start: int) -> int:
        """The file offset of frame ``start`` within its page (direct reads land in place)."""
        return (self._offset + int(start) * self.frame_bytes) % ALIGN

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if not self._fills_in_place(start, stop, out):
            return super().read_into(start, stop, out)
        return self._pread(start, stop, out)

    def read_pages_into(
        self, pages: range, out: np.ndarray, rows: slice | None = None
    ) -> np.ndarray | None:
        """The frames ``pages`` (a range, any step), or their ``rows`` (one ROI strip of
        multi-ROI pages), into ``out`` ((len(pages), rows or H, W), C-contiguous), each read at
        its offset, when they lie more than :data:`PAGE_GAP_BYTES` apart; None when they lie
        closer (reading the span is as good)."""
        self._check_pages(pages, out, rows)
        if not len(pages):
            return out
        row_bytes = self.width * self.dtype.itemsize
        if pages.step * self.frame_bytes - out[0].nbytes <= PAGE_GAP_BYTES:
            return None
        base = self._offset + (0 if rows is None else rows.start) * row_bytes
        what = f"frames [{pages.start}, {pages.stop}) step {pages.step}"
        for k, page in enumerate(pages):
            view = memoryview(out[k].reshape(-1).view(np.uint8))
            self._file.read_into(view, base + page * self.frame_bytes, what)
        if self._swap:
            out.byteswap(inplace=True)
        return out

    def _pread(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos = self._offset + start * self.frame_bytes
        self._file.read_into(view, pos, f"frames [{start}, {stop})")
        if self._swap:
            out.byteswap(inplace=True)
        return out

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()


class NpyMovie(RawFileMovie):
    """A ``.npy`` file of shape (T, H, W), read by windows at the header offset (never whole).

    Fortran-ordered files hold each pixel's time series together: a window is then a strided
    read of every pixel (:class:`.PixelMajorMovie`, through a memory map).
    """

    format = "npy"

    def __init__(self, path: str | Path):
        path = Path(path)
        try:  # the memory map only parses the header here; C-order data is read by preadv
            header = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, dtype, offset = header.shape, header.dtype, header.offset
            fortran = header.ndim > 1 and not header.flags.c_contiguous
        except (ValueError, OSError) as exc:
            raise OSError(f"{path}: not a readable .npy movie ({exc})") from exc
        if len(shape) != 3:
            raise ValueError(
                f"{path}: expected a 3-D (frames, height, width) array, "
                f"got shape {shape}"
                + (" (a single frame is not a movie)" if len(shape) == 2 else "")
            )
        del header
        self._pixels = None
        if fortran:
            self._pixels = PixelMajorMovie(path, shape, dtype, offset)
            Movie.__init__(self, path, shape, self._pixels.dtype)
        else:
            super().__init__(path, shape, dtype, offset)

    @property
    def read_mode(self) -> str:
        return self._pixels.read_mode if self._pixels is not None else super().read_mode

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._pixels is not None:
            return self._pixels._read(start, stop)
        return super()._read(start, stop)

    def read_pages_into(
        self, pages: range, out: np.ndarray, rows: slice | None = None
    ) -> np.ndarray | None:
        if self._pixels is not None:  # pixel-major: a window is read whole anyway
            return None
        return super().read_pages_into(pages, out, rows)

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if self._pixels is not None:
            return self._pixels.read_into(start, stop, out)
        return super().read_into(start, stop, out)

    def buffer_shift(self, start: int) -> int | None:
        return None if self._pixels is not None else super().buffer_shift(start)

    def close(self) -> None:
        if getattr(self, "_pixels", None) is not None:
            self._pixels.close()
        super().close()


class Suite2pBinMovie(RawFileMovie):
    """Suite2p's registered binary ``data.bin``: int16 frames, shape from ``ops.npy`` beside it.

    ``ops.npy`` is a pickle: it is loaded only from the folder the user named. ``ops['fs']``
    becomes :attr:`fs_hz`. Without ``nframes`` in ops the count comes from the file size.
    """

    format = "suite2p-bin"

    def __init__(self, path: str | Path, ops_path: str | Path | None = None):
        path = Path(path)
        ops_path = Path(ops_path) if ops_path else path.parent / "ops.npy"
        if not ops_path.is_file():
            raise FileNotFoundError(
                f"{path}: Suite2p binary needs {ops_path} (Ly, Lx, nframes) beside it; not found"
            )
        ops = _load_pickled_dict(ops_path)
        try:
            ly, lx = int(ops["Ly"]), int(ops["Lx"])
        except KeyError as exc:
            raise ValueError(
                f"{ops_path}: no {exc} entry; expected Suite2p ops with Ly and Lx"
            ) from exc
        frame_bytes = ly * lx * 2
        size = path.stat().st_size
        n = int(ops.get("nframes", 0)) or size // frame_bytes
        if n < 1:
            raise OSError(f"{path}: {size} bytes hold no {ly} x {lx} int16 frame")
        super().__init__(path, (n, ly, lx), np.int16, 0)
        fs = ops.get("fs")
        self.fs_hz = float(fs) if fs else None


def _load_pickled_dict(path: Path) -> dict:
    """Suite2p's ``ops.npy`` (a pickled dict). Only ever called on a path the user named."""
    try:
        ops = np.load(path, allow_pickle=True)
        ops = ops.item() if ops.dtype == object and ops.shape == () else ops
    except (ValueError, OSError, EOFError) as exc:
        raise OSError(f"{path}: not a readable Suite2p ops.npy ({exc})") from exc
    if not isinstance(ops, dict):
        raise ValueError(f"{path}: expected a pickled dict (Suite2p ops), got {type(ops).__name__}")
    return ops
