"""Movies: one interface, shape (T, H, W), read by windows of frames, never loaded whole.

``open_movie(path)`` picks the reader from the path. Every reader keeps memory bounded by the
window it is asked for: iterating over a terabyte movie uses one chunk of frames at a time.
"""

from __future__ import annotations

import logging
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .direct import ALIGN, PLACEMENT_SLACK, FileBytes, placed_frames

log = logging.getLogger(__name__)

__all__ = [
    "Movie",
    "ArrayMovie",
    "NpyMovie",
    "RawFileMovie",
    "TiffMovie",
    "TiffFolderMovie",
    "CaimanMmapMovie",
    "HDF5Movie",
    "ZarrMovie",
    "Suite2pBinMovie",
    "open_movie",
    "MOVIE_FORMATS",
    "MOVIE_READERS",
    "MovieReader",
    "resolve_axis_order",
]


class Movie(ABC):
    """A calcium-imaging movie of ``shape`` (n_frames, height, width) and ``dtype``.

    Subclasses implement :meth:`_read` for a window of frames; everything else is shared.
    """

    path: Path
    format: str = "?"
    fs_hz: float | None = None  # frame rate when the file records it (Suite2p ops)
    dataset: str | None = None  # dataset / array name inside an HDF5 or zarr file
    axis_order: str = "THW"  # axis order on disk, as found (e.g. 'TWH' for MATLAB HDF5)

    def __init__(self, path: str | Path, shape: tuple[int, int, int], dtype):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(
                f"{self.path}: expected a (frames, height, width) movie, got shape {self.shape}"
            )

    @property
    def n_frames(self) -> int:
        return self.shape[0]

    @property
    def height(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]

    @property
    def frame_bytes(self) -> int:
        return self.height * self.width * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.n_frames * self.frame_bytes

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as a (stop - start, H, W) array of the movie's dtype."""
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= self.n_frames:
            raise IndexError(f"{self.path}: frames [{start}, {stop}) outside [0, {self.n_frames})")
        out = self._read(start, stop)
        if out.shape != (stop - start, self.height, self.width):
            raise OSError(
                f"{self.path}: read of frames [{start}, {stop}) returned shape "
                f"{out.shape}; the file may be truncated or corrupt"
            )
        return out

    def iter_chunks(
        self,
        frames_per_chunk: int,
        start: int = 0,
        stop: int | None = None,
        *,
        reuse_buffer: bool = False,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first_frame, frames) for consecutive windows of ``frames_per_chunk`` frames.

        reuse_buffer : fill one preallocated buffer for every window instead of a new array
            each time (a yielded array is then valid only until the next one is requested).
            For single streaming passes: it saves the page faults of a fresh allocation per
            window, about a third of the time on warm, uncompressed reads; each window is
            placed where :meth:`buffer_shift` asks (direct reads then land in place).
        """
        if frames_per_chunk < 1:
            raise ValueError(f"frames_per_chunk must be >= 1, got {frames_per_chunk}")
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        buffer = None
        if reuse_buffer:
            buffer = self.window_buffer(min(frames_per_chunk, max(stop - int(start), 1)))
        for first in range(int(start), stop, frames_per_chunk):
            last = min(first + frames_per_chunk, stop)
            if buffer is None:
                yield first, self.read(first, last)
            else:
                yield first, self.read_into(first, last, self.placed_window(buffer, first, last))

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Frames [start, stop) written into ``out`` ((stop - start, H, W), the movie's dtype)."""
        if out.shape != (stop - start, self.height, self.width) or out.dtype != self.dtype:
            raise ValueError(
                f"out has shape {out.shape} {out.dtype}, expected "
                f"{(stop - start, self.height, self.width)} {self.dtype}"
            )
        out[...] = self.read(start, stop)
        return out

    def _fills_in_place(self, start: int, stop: int, out: np.ndarray) -> bool:
        """Whether ``out`` is a C-contiguous window of frames [start, stop) in the movie's
        dtype, which a reader can fill directly; IndexError for frames outside the movie."""
        if not (0 <= start <= stop <= self.n_frames):
            raise IndexError(f"{self.path}: frames [{start}, {stop}) outside [0, {self.n_frames})")
        return (
            out.shape == (stop - start, self.height, self.width)
            and out.dtype == self.dtype
            and out.flags.c_contiguous
        )

    @property
    def read_mode(self) -> str:
        """How the frames read so far came off the disk: 'direct' (``O_DIRECT``, page cache
        bypassed), 'buffered' (through the page cache, also every library reader), or
        'direct+buffered' (a folder whose files were read both ways)."""
        return "buffered"

    def buffer_shift(self, start: int) -> int | None:
        """Where in a page (bytes past a boundary) a buffer for frames from ``start`` should
        begin so that :meth:`read_into` can fill it without an extra copy
        (:func:`.direct.placed_frames`); None when this reader has no preference."""
        return None

    def window_buffer(self, n_frames: int) -> np.ndarray:
        """Bytes for windows of up to ``n_frames`` frames, placed by :meth:`placed_window`."""
        return np.empty(int(n_frames) * self.frame_bytes + PLACEMENT_SLACK, np.uint8)

    def placed_window(self, buffer: np.ndarray, start: int, stop: int) -> np.ndarray:
        """The (stop - start, H, W) array inside a :meth:`window_buffer` that frames
        [start, stop) should be read into (where :meth:`buffer_shift` asks)."""
        shape = (stop - start, self.height, self.width)
        return placed_frames(buffer, shape, self.dtype, self.buffer_shift(start))

    @abstractmethod
    def _read(self, start: int, stop: int) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 (optional hook: most readers hold no handle)
        """Release file handles (readers that hold some override this)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> dict:
        """JSON-ready facts about the movie for store provenance."""
        return {
            "path": str(self.path),
            "format": self.format,
            "n_frames": self.n_frames,
            "height": self.height,
            "width": self.width,
            "dtype": str(self.dtype),
            "dataset": self.dataset,
            "axis_order": self.axis_order,
            "fs_hz": self.fs_hz,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


class ArrayMovie(Movie):
    """A movie held in an array-like (NumPy array, memmap, zarr or h5py dataset) of (T, H, W)."""

    format = "array"

    def __init__(self, array, path: str | Path = "<array>"):
        super().__init__(path, array.shape, array.dtype)
        self._array = array

    def _read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._array[start:stop])


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

    Fortran-ordered files are memory-mapped instead (a window is then a strided read).
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
        self._mmap = None
        if fortran:
            Movie.__init__(self, path, shape, dtype)
            self._fd = None
            self._mmap = header
        else:
            del header
            super().__init__(path, shape, dtype, offset)

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._mmap is not None:
            return np.ascontiguousarray(self._mmap[start:stop])
        return super()._read(start, stop)

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if self._mmap is not None:
            return Movie.read_into(self, start, stop, out)
        return super().read_into(start, stop, out)

    def buffer_shift(self, start: int) -> int | None:
        return None if self._mmap is not None else super().buffer_shift(start)


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


class TiffMovie(Movie):
    """A multi-page TIFF / BigTIFF (one frame per page, or an ImageJ / shaped series).

    Uncompressed contiguous data is read like a raw file (``os.preadv`` at the data offset);
    an uncompressed page chain (an IFD before each frame, ScanImage's layout) from a table of
    the frames' offsets built at open, one span per window (:meth:`_read_pages`); anything
    else (zlib, LZW, tiles, ...) page by page through one open ``TiffFile`` handle. Both
    uncompressed paths use direct I/O when the file is large and not in the page cache.
    """

    format = "tiff"

    def __init__(self, path: str | Path):
        import tifffile

        path = Path(path)
        with _TiffProblems() as problems:
            try:
                self._tif = tifffile.TiffFile(path)
                series = self._tif.series[0]
                shape, dtype = series.shape, series.dtype
                len(self._tif.pages)  # walks the page chain: finds a cut-off file
            except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
                raise OSError(f"{path}: not a readable TIFF ({exc})") from exc
        if problems.messages:
            self._tif.close()
            raise OSError(f"{path}: TIFF is truncated or corrupt: {problems.messages[0]}")
        squeezed = [s for s in shape[:-2] if s != 1]
        if len(shape) < 2 or (len(shape) > 2 and len(squeezed) > 1):
            self._tif.close()
            raise ValueError(
                f"{path}: TIFF series of shape {shape} (axes {series.axes}); expected "
                f"frames of height x width (one channel, one plane)"
            )
        if len(shape) == 2 or not squeezed:
            self._tif.close()
            raise ValueError(
                f"{path}: holds a single {shape[-2]} x {shape[-1]} image; a movie "
                f"needs several frames (a multi-page TIFF or a folder of TIFFs)"
            )
        super().__init__(path, (squeezed[0], shape[-2], shape[-1]), dtype)
        self._raw = None
        self._pages = None  # (T,) file offsets of the frames of an uncompressed page chain
        disk_dtype = series.dtype.newbyteorder(self._tif.byteorder)
        offset = series.dataoffset
        if offset is not None:
            self._raw = RawFileMovie(path, self.shape, disk_dtype, offset)
            self.format = "tiff"
        else:
            self._check_not_truncated()
            self._pages = _page_offsets(series, self.n_frames, self.frame_bytes)
            if self._pages is not None:
                self._file = FileBytes(path, path.stat().st_size)
                self._disk_dtype = disk_dtype
                self._span = np.empty(0, np.uint8)  # the last window's bytes, reused
                self._lock = threading.Lock()
                self._check_page_reads()

    def _check_not_truncated(self) -> None:
        """The last page's data must lie inside the file (tifffile would return zeros)."""
        size = self.path.stat().st_size
        pages = self._tif.pages
        last = pages[len(pages) - 1]
        ends = [o + c for o, c in zip(last.dataoffsets, last.databytecounts)]
        if len(pages) != self.n_frames or (ends and max(ends) > size):
            raise OSError(
                f"{self.path}: TIFF is truncated or corrupt: {len(pages)} pages found "
                f"for {self.n_frames} frames, data up to byte {max(ends):,} but the "
                f"file has {size:,}"
            )

    def _check_page_reads(self) -> None:
        """Page-chain reads must give tifffile's first frame, bit for bit (else tifffile reads
        every page)."""
        mine = self._read_pages(0, 1, np.empty((1, self.height, self.width), self.dtype))
        theirs = np.asarray(self._tif.asarray(key=0, series=0, maxworkers=1), self.dtype)
        if mine.tobytes() != theirs.tobytes():
            self._file.close()
            self._pages = None

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if self._raw is not None:
            return self._raw.read_into(start, stop, out)
        if self._pages is not None and self._fills_in_place(start, stop, out):
            return self._read_pages(start, stop, out)
        return super().read_into(start, stop, out)

    def buffer_shift(self, start: int) -> int | None:
        return None if self._raw is None else self._raw.buffer_shift(start)

    @property
    def read_mode(self) -> str:
        if self._raw is not None:
            return self._raw.read_mode
        return "buffered" if self._pages is None else self._file.read_mode

    def _read_pages(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Frames [start, stop) of an uncompressed page chain: one read of the bytes from the
        first frame to the end of the last (the IFDs between them are small), then a copy of
        each frame out of it; frame by frame where the frames lie far apart."""
        offsets = self._pages[start:stop]
        if len(offsets) == 0:
            return out
        fb, n = self.frame_bytes, len(offsets)
        lo, hi = int(offsets[0]), int(offsets[-1]) + fb
        what = f"frames [{start}, {stop})"
        with self._lock:
            if hi - lo > n * (fb + PAGE_GAP_BYTES):  # far apart: frame by frame
                for k, off in enumerate(offsets):
                    self._file.read_into(memoryview(out[k].reshape(-1).view(np.uint8)), off, what)
                if not self._disk_dtype.isnative:
                    out.byteswap(inplace=True)
                return out
            if self._span.size < hi - lo + PLACEMENT_SLACK:
                self._span = np.empty(hi - lo + PLACEMENT_SLACK, np.uint8)
            span = placed_frames(self._span, (hi - lo,), np.uint8, lo % ALIGN)
            self._file.read_into(memoryview(span), lo, what)
            for k, off in enumerate(offsets - lo):
                out[k] = span[off : off + fb].view(self._disk_dtype).reshape(self.height, -1)
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._raw is not None:
            return self._raw._read(start, stop)
        if self._pages is not None:
            out = np.empty((stop - start, self.height, self.width), self.dtype)
            return self._read_pages(start, stop, out)
        try:
            data = self._tif.asarray(key=range(start, stop), series=0, maxworkers=1)
        except _TIFF_READ_ERRORS as exc:
            raise OSError(
                f"{self.path}: cannot read frame {self._first_bad_frame(start, stop)} (of "
                f"[{start}, {stop})): {exc}; the file may be truncated or corrupt"
            ) from exc
        return data.reshape(stop - start, self.height, self.width)

    def _first_bad_frame(self, start: int, stop: int) -> int | str:
        """The first frame of [start, stop) that does not decode (for the error message)."""
        for k in range(start, stop):
            try:
                self._tif.asarray(key=k, series=0, maxworkers=1)
            except _TIFF_READ_ERRORS:
                return k
        return "?"

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
        if self._pages is not None:
            self._file.close()
        self._tif.close()


#: a page chain whose frames lie on average more than this many bytes apart is read frame by
#: frame instead of as one span (the bytes between frames would be read for nothing)
PAGE_GAP_BYTES = 1 << 16


def _page_offsets(series, n_frames: int, frame_bytes: int) -> np.ndarray | None:
    """(T,) int64 file offsets of the frames when each page of ``series`` holds one frame,
    uncompressed, in one run of ``frame_bytes`` (ScanImage and most acquisition software
    write an IFD before each frame); None otherwise (tifffile then decodes every page)."""
    pages = series.pages
    if len(pages) != n_frames:
        return None
    offsets = np.empty(n_frames, np.int64)
    for k, page in enumerate(pages):
        if page is None or not page.is_contiguous:
            return None
        starts, counts = page.dataoffsets, page.databytecounts
        if sum(counts) != frame_bytes or any(
            a + c != b for a, c, b in zip(starts, counts, starts[1:])
        ):
            return None
        offsets[k] = starts[0]
    return offsets


# decoding a page: tifffile raises ValueError / OSError / IndexError, codecs (imagecodecs
# DeflateError, LzwError, ...) RuntimeError
_TIFF_READ_ERRORS = (ValueError, OSError, IndexError, RuntimeError)


class _TiffProblems(logging.Handler):
    """Collects tifffile's log messages about a broken page chain while a file is opened
    (tifffile logs them and returns the pages before the break instead of raising)."""

    _signs = ("invalid page offset", "truncat", "corrupt", "invalid tag")

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if any(sign in message.lower() for sign in self._signs):
            self.messages.append(message)

    def __enter__(self):
        logging.getLogger("tifffile").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("tifffile").removeHandler(self)


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


class TiffFolderMovie(Movie):
    """A folder of TIFF files in natural name order (``f2.tif`` before ``f10.tif``).

    Each file holds one frame, or several pages (when the first or the last file holds several,
    frame counts, frame sizes and dtypes are read from every file at open, headers only, and a
    file that differs from the first is refused naming it). A multi-page file is read by a
    :class:`TiffMovie` kept open while the reads stay in it (one at a time): uncompressed files
    from their offsets (direct I/O when large and uncached), others through one open handle,
    instead of parsing the file's page chain again for every window.
    """

    format = "tiff-folder"

    def __init__(self, path: str | Path):
        path = Path(path)
        files = sorted(
            (p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff") and p.is_file()),
            key=_natural_key,
        )
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no .tif/.tiff files")
        self._files = files
        first = self._page_info(files[0])
        # One frame per file (the usual layout) needs no header read beyond the first and the
        # last file (parts of a split recording may start with a short one)
        last = self._page_info(files[-1]) if len(files) > 1 else first
        several = first[0] > 1 or last[0] > 1
        infos = [first, *map(self._page_info, files[1:])] if several else None
        counts = [1] * len(files) if infos is None else [info[0] for info in infos]
        for file, info in zip(files, infos or []):
            if info[1:] != first[1:]:
                raise ValueError(
                    f"{file}: frames of {info[1][0]} x {info[1][1]} {info[2]}, expected "
                    f"{first[1][0]} x {first[1][1]} {first[2]} like {files[0].name}"
                )
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._counts = counts
        self._open: tuple[int, TiffMovie] | None = None  # the multi-page file being read
        self._modes: set[str] = set()  # read modes of the files read so far
        self._lock = threading.Lock()
        super().__init__(path, (int(self._starts[-1]), *first[1]), first[2])

    @staticmethod
    def _page_info(file: Path):
        import tifffile

        try:
            with tifffile.TiffFile(file) as tif:
                s = tif.series[0]
                return (
                    int(np.prod(s.shape[:-2], dtype=np.int64)),
                    tuple(s.shape[-2:]),
                    np.dtype(s.dtype).newbyteorder("="),
                )
        except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
            raise OSError(f"{file}: not a readable TIFF ({exc})") from exc

    def _file_movie(self, i: int) -> TiffMovie | None:
        """The open reader of file ``i`` when it holds several frames (the previous one is
        closed), None for a one-frame file. Called with the lock held."""
        if self._counts[i] < 2:
            return None
        if self._open is not None and self._open[0] == i:
            return self._open[1]
        self._close_open()
        movie = TiffMovie(self._files[i])
        if movie.n_frames != self._counts[i]:
            movie.close()
            raise OSError(
                f"{self._files[i]}: {movie.n_frames} frames now, {self._counts[i]} when the "
                "folder was opened; the file changed while it was read"
            )
        self._open = (i, movie)
        return movie

    def _close_open(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def _file_index(self, frame: int) -> int:
        return int(np.searchsorted(self._starts, frame, side="right") - 1)

    @property
    def read_mode(self) -> str:
        return "+".join(sorted(self._modes)) or "buffered"

    def buffer_shift(self, start: int) -> int | None:
        with self._lock:
            i = self._file_index(start)
            movie = self._file_movie(i)
            return None if movie is None else movie.buffer_shift(start - int(self._starts[i]))

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if not self._fills_in_place(start, stop, out):
            return super().read_into(start, stop, out)
        return self._fill(start, stop, out)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self._fill(
            start, stop, self.placed_window(self.window_buffer(stop - start), start, stop)
        )

    def _fill(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Frames [start, stop) into ``out`` (C-contiguous, the movie's shape and dtype), file
        by file."""
        i = self._file_index(start)
        pos = start
        with self._lock:
            while pos < stop:
                f0, f1 = int(self._starts[i]), int(self._starts[i + 1])
                lo, hi = pos - f0, min(stop, f1) - f0
                dest = out[pos - start : pos - start + hi - lo]
                movie = self._file_movie(i)
                if movie is not None:
                    movie.read_into(lo, hi, dest)
                    self._modes.add(movie.read_mode)
                else:
                    dest[...] = self._read_single(i)
                    self._modes.add("buffered")
                pos += hi - lo
                i += 1
        return out

    def _read_single(self, i: int) -> np.ndarray:
        """The one frame of file ``i`` as (1, H, W) of the movie's dtype (checked)."""
        import tifffile

        file = self._files[i]
        try:
            with tifffile.TiffFile(file) as tif:
                n = int(np.prod(tif.series[0].shape[:-2], dtype=np.int64))
                data = tif.asarray(key=0, maxworkers=1)
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, RuntimeError) as exc:
            # codecs (imagecodecs.DeflateError, ...) raise RuntimeError
            raise OSError(f"{file}: cannot read its frame: {exc}") from exc
        if n != 1:
            raise ValueError(
                f"{file}: holds {n} frames, but {self._files[0].name} holds one, so the folder "
                "was read as one frame per file; keep one layout per folder"
            )
        if data.shape != (self.height, self.width) or data.dtype != self.dtype:
            raise ValueError(
                f"{file}: frame of {' x '.join(map(str, data.shape))} {data.dtype}, expected "
                f"{self.height} x {self.width} {self.dtype} like {self._files[0].name}"
            )
        return data[None]

    def close(self) -> None:
        with self._lock:
            self._close_open()


def resolve_axis_order(
    shape: tuple[int, ...], expected_hw: tuple[int, int] | None, *, matlab: bool, where: str
) -> str:
    """Which of 'THW', 'TWH', 'HWT', 'WHT' a 3-D on-disk ``shape`` is.

    With ``expected_hw`` (the extraction's H, W) the shape decides, MATLAB's reversed order
    winning a tie when the file is a MATLAB v7.3 file (MATLAB [H W T] reads as (T, W, H)).
    Without it: 'TWH' for MATLAB files, else 'THW'.
    """
    if len(shape) != 3:
        raise ValueError(f"{where}: dataset of shape {tuple(shape)}; expected a 3-D movie")
    if expected_hw is None:
        return "TWH" if matlab else "THW"
    h, w = (int(v) for v in expected_hw)
    options = {
        "THW": shape[1:] == (h, w),
        "TWH": shape[1:] == (w, h),
        "HWT": shape[:2] == (h, w),
        "WHT": shape[:2] == (w, h),
    }
    preference = ("TWH", "THW", "WHT", "HWT") if matlab else ("THW", "TWH", "HWT", "WHT")
    for order in preference:
        if options[order]:
            return order
    raise ValueError(
        f"{where}: dataset of shape {tuple(shape)} does not contain frames of "
        f"{h} x {w} pixels (the extraction's field of view) in any axis order"
    )


class _OrderedArrayMovie(Movie):
    """A 3-D array-like stored in ``axis_order``, served as (T, H, W) by windows."""

    def __init__(self, path, array, axis_order: str, dataset: str | None):
        self._array = array
        self.axis_order = axis_order
        self.dataset = dataset
        sizes = dict(zip(axis_order, array.shape))
        super().__init__(path, (sizes["T"], sizes["H"], sizes["W"]), array.dtype)

    def _read(self, start: int, stop: int) -> np.ndarray:
        t = self.axis_order.index("T")
        index = [slice(None)] * 3
        index[t] = slice(start, stop)
        try:
            data = np.asarray(self._array[tuple(index)])
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise OSError(
                f"{self.path}: cannot read frames [{start}, {stop}) of "
                f"{self.dataset}: {exc}; the file may be truncated or corrupt"
            ) from exc
        perm = [self.axis_order.index(a) for a in "THW"]
        return np.ascontiguousarray(data.transpose(perm))


def _is_matlab_h5(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(19) == b"MATLAB 7.3 MAT-file"


class HDF5Movie(_OrderedArrayMovie):
    """A 3-D dataset of an HDF5 file (including MATLAB v7.3 ``.mat``), by name or the only one;
    in an NWB file by default the ``data`` of its one imaging series (TwoPhotonSeries,
    OnePhotonSeries or ImageSeries), read with h5py (no pynwb needed).

    MATLAB writes [H W T] which h5py sees as (T, W, H): the order is detected from the
    extraction's H and W (``expected_hw``) and logged; windows are transposed on read.
    A contiguous (unchunked) dataset with frames first is read like a raw file at its offset
    (:func:`_contiguous_hdf5_raw`); chunked or compressed ones through h5py.
    """

    format = "hdf5"

    def __init__(
        self,
        path: str | Path,
        dataset: str | None = None,
        expected_hw: tuple[int, int] | None = None,
    ):
        import h5py

        path = Path(path)
        try:
            self._file = h5py.File(path, "r")
        except OSError as exc:
            raise OSError(f"{path}: not a readable HDF5 file ({exc})") from exc
        try:
            nwb = "nwb_version" in self._file.attrs or path.suffix.lower() == ".nwb"
            if nwb:
                self.format = "nwb"
            name = dataset or (self._nwb_series(path) if nwb else self._only_3d(path))
            if name not in self._file or not isinstance(self._file[name], h5py.Dataset):
                raise KeyError(
                    f"{path}: no dataset {name!r}; 3-D datasets: {self._datasets_3d() or 'none'}"
                )
            array = self._file[name]
            matlab = _is_matlab_h5(path) or "MATLAB_class" in array.attrs
            order = resolve_axis_order(
                array.shape, expected_hw, matlab=matlab, where=f"{path}:{name}"
            )
        except Exception:
            self._file.close()
            raise
        super().__init__(path, array, order, name.lstrip("/"))
        self._raw = _contiguous_hdf5_raw(path, array, order)
        if order != "THW" or matlab:
            log.info(
                "%s:%s: dataset shape %s read as axis order %s%s",
                path,
                name,
                array.shape,
                order,
                " (MATLAB file: reversed dimensions)" if matlab else "",
            )

    def _datasets_3d(self) -> list[str]:
        import h5py

        found = []
        self._file.visititems(
            lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and o.ndim == 3 else None
        )
        return found

    def _nwb_series(self, path: Path) -> str:
        """The ``data`` of the NWB file's one imaging series (TwoPhotonSeries, OnePhotonSeries
        or ImageSeries with frames in the file)."""
        import h5py

        series, external = [], []

        def visit(name, obj):
            kind = obj.attrs.get("neurodata_type")
            kind = kind.decode() if isinstance(kind, bytes) else kind
            if not isinstance(obj, h5py.Group) or kind not in _NWB_IMAGING_SERIES:
                return
            data = obj.get("data")
            if isinstance(data, h5py.Dataset) and data.ndim == 3 and data.shape[0] > 1:
                series.append(f"{name}/data")
            elif "external_file" in obj:
                external.append(name)

        self._file.visititems(visit)
        if len(series) == 1:
            return series[0]
        if not series and external:
            raise ValueError(
                f"{path}: the imaging series {external} keep their frames in external files "
                "(external_file): pass those files as the movie"
            )
        raise ValueError(
            f"{path}: {len(series)} imaging series with frames {series}; expected exactly "
            "one: name its data with --dataset"
        )

    def _only_3d(self, path: Path) -> str:
        found = [n for n in self._datasets_3d() if n.split("/")[-1] != "F_per_pixel"]
        if len(found) != 1:
            raise ValueError(
                f"{path}: {len(found)} 3-D datasets {found}; expected exactly one "
                f"movie: name it with --dataset"
            )
        return found[0]

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._raw is None:
            return super()._read(start, stop)
        data = self._raw._read(start, stop)
        return data if self.axis_order == "THW" else _swap_rows_cols(data)

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if self._raw is not None and self.axis_order == "THW":
            return self._raw.read_into(start, stop, out)
        return super().read_into(start, stop, out)

    def buffer_shift(self, start: int) -> int | None:
        if self._raw is not None and self.axis_order == "THW":
            return self._raw.buffer_shift(start)
        return None

    @property
    def read_mode(self) -> str:
        return "buffered" if self._raw is None else self._raw.read_mode

    def close(self) -> None:
        if getattr(self, "_raw", None) is not None:
            self._raw.close()
        self._file.close()


def _swap_rows_cols(frames: np.ndarray) -> np.ndarray:
    """(n, A, B) frames -> (n, B, A), C order: each frame transposed 16 source rows at a time
    (tiles that stay in cache: about 1.7x the speed of one whole transposition)."""
    n, a, b = frames.shape
    out = np.empty((n, b, a), frames.dtype)
    for k in range(n):
        for r0 in range(0, a, 16):
            out[k, :, r0 : r0 + 16] = frames[k, r0 : r0 + 16].T
    return out


_CAIMAN_MMAP_NAME = re.compile(
    r"_d1_(\d+)_d2_(\d+)_d3_(\d+)_order_([CF])_frames_(\d+)_?\.mmap$", re.IGNORECASE
)


class CaimanMmapMovie(Movie):
    """CaImAn's memory-mapped movie (``*_d1_{H}_d2_{W}_d3_1_order_{C|F}_frames_{T}_.mmap``):
    a (H * W, T) float32 array (uint16 when the file size says so, as CaImAn's GUI allows)
    whose pixel index is Fortran order (``row + col * H``), stored in the order the name gives.

    ``order_F`` (motion correction's output): each frame's pixels lie together, so windows are
    read like a raw file (``preadv``, direct I/O when large and uncached) and transposed.
    ``order_C`` (CNMF's input): each pixel's time series lies together, so a window of frames
    is a strided read of every pixel (through a memory map: slower, and its pages count in
    the resident memory while they are cached).
    """

    format = "caiman-mmap"

    def __init__(self, path: str | Path):
        path = Path(path)
        match = _CAIMAN_MMAP_NAME.search(path.name)
        if match is None:
            raise ValueError(
                f"{path}: not a CaImAn memmap name (expected ..._d1_H_d2_W_d3_1_order_C|F_"
                "frames_T_.mmap, which gives its shape)"
            )
        h, w, d3, order, t = match.groups()
        h, w, d3, t, order = int(h), int(w), int(d3), int(t), order.upper()
        if d3 != 1:
            raise ValueError(f"{path}: a volume of {d3} planes (d3); one plane is expected")
        size = path.stat().st_size
        values = h * w * t
        itemsize = size // values if values and size % values == 0 else 0
        dtypes = {4: np.dtype(np.float32), 2: np.dtype(np.uint16)}
        if itemsize not in dtypes:
            raise OSError(
                f"{path}: {size:,} bytes do not hold {h} x {w} x {t} float32 (or uint16) "
                "values, as its name says; the file is truncated or was renamed"
            )
        super().__init__(path, (t, h, w), dtypes[itemsize])
        self.axis_order = "TWH" if order == "F" else "WHT"  # the slowest-varying axis first
        self._raw = None
        self._map = None
        if order == "F":  # frames one after another, each (W, H) in C order
            self._raw = RawFileMovie(path, (t, w, h), self.dtype, 0)
        else:
            self._map = np.memmap(path, dtype=self.dtype, mode="r", shape=(h * w, t), order="C")

    @property
    def read_mode(self) -> str:
        return "buffered" if self._raw is None else self._raw.read_mode

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._raw is not None:
            return _swap_rows_cols(self._raw._read(start, stop))
        # pixel = row + col * H: the map is (W, H, T); 16 columns at a time (a tile that
        # stays in cache while it is transposed: twice the speed of one whole transposition)
        pixels = self._map.reshape(self.width, self.height, self.n_frames)
        out = np.empty((stop - start, self.height, self.width), self.dtype)
        for c0 in range(0, self.width, 16):
            out[:, :, c0 : c0 + 16] = pixels[c0 : c0 + 16, :, start:stop].transpose(2, 1, 0)
        return out

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
        self._map = None


#: NWB neurodata types whose ``data`` is a movie (frames, rows, columns)
_NWB_IMAGING_SERIES = ("TwoPhotonSeries", "OnePhotonSeries", "ImageSeries")


def _contiguous_hdf5_raw(path: Path, array, order: str) -> RawFileMovie | None:
    """A raw reader (``preadv``, direct I/O when large and uncached) of an HDF5 dataset whose
    frames lie one after another in the file: contiguous layout (no chunks, so no filters), not
    virtual or external, a native-order number type, frames first (THW, or MATLAB's TWH).
    Its first frame must equal h5py's, bit for bit; None otherwise (h5py reads it)."""
    dtype = array.dtype
    if (
        order[0] != "T"
        or array.chunks is not None
        or getattr(array, "is_virtual", False)
        or getattr(array, "external", None)
        or dtype.kind not in "uif"
        or not dtype.isnative
        or array.shape[0] == 0
    ):
        return None
    offset = array.id.get_offset()  # from the start of the file (a MATLAB user block included)
    if offset is None:  # storage not allocated
        return None
    try:
        raw = RawFileMovie(path, tuple(array.shape), dtype, offset)
    except OSError:
        return None
    try:
        same = raw.read(0, 1).tobytes() == np.asarray(array[0:1]).tobytes()
    except OSError:
        same = False
    if not same:
        raw.close()
        return None
    return raw


class ZarrMovie(_OrderedArrayMovie):
    """A 3-D zarr v2/v3 array, or a group holding one (or one named by ``dataset``)."""

    format = "zarr"

    def __init__(
        self,
        path: str | Path,
        dataset: str | None = None,
        expected_hw: tuple[int, int] | None = None,
    ):
        import zarr

        path = Path(path)
        try:
            node = zarr.open(str(path), mode="r")
        except (ValueError, OSError, KeyError, FileNotFoundError) as exc:
            raise OSError(f"{path}: not a readable zarr array or group ({exc})") from exc
        name = None
        if isinstance(node, zarr.Group):
            arrays = {k: a for k, a in node.arrays() if a.ndim == 3}
            if dataset:
                if dataset not in node:
                    raise KeyError(f"{path}: no array {dataset!r}; 3-D arrays: {sorted(arrays)}")
                node, name = node[dataset], dataset
            elif len(arrays) == 1:
                name, node = next(iter(arrays.items()))
            else:
                raise ValueError(
                    f"{path}: {len(arrays)} 3-D arrays {sorted(arrays)}; expected "
                    f"exactly one movie: name it with --dataset"
                )
        order = resolve_axis_order(node.shape, expected_hw, matlab=False, where=str(path))
        super().__init__(path, node, order, name)
        if order != "THW":
            log.info("%s: array shape %s read as axis order %s", path, node.shape, order)


def _is_zarr_dir(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or any(
        (path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")
    )


def _file_with_suffix(*suffixes: str) -> Callable[[Path], bool]:
    return lambda path: not path.is_dir() and path.suffix.lower() in suffixes


def _is_tiff_folder(path: Path) -> bool:
    return (
        path.is_dir()
        and not _is_zarr_dir(path)
        and any(p.suffix.lower() in (".tif", ".tiff") for p in path.iterdir())
    )


def _is_suite2p_bin(path: Path) -> bool:
    if path.is_dir():
        return (path / "data.bin").is_file()
    return path.suffix.lower() == ".bin"


@dataclass(frozen=True)
class MovieReader:
    """One movie format.

    name : the format's name (``Movie.format``, ``open_movie(format=...)``)
    description : one line on the paths it reads, for the docs, help and error messages
    detect : path -> whether the path is this format (tried in table order)
    open : (path, dataset, expected_hw) -> :class:`Movie`
    """

    name: str
    description: str
    detect: Callable[[Path], bool]
    open: Callable[[Path, str | None, tuple[int, int] | None], Movie]


MOVIE_READERS: dict[str, MovieReader] = {
    r.name: r
    for r in (
        MovieReader(
            "tiff",
            ".tif/.tiff multi-page TIFF or BigTIFF",
            _file_with_suffix(".tif", ".tiff"),
            lambda path, dataset, hw: TiffMovie(path),
        ),
        MovieReader(
            "tiff-folder",
            "a folder of .tif/.tiff files (natural name order)",
            _is_tiff_folder,
            lambda path, dataset, hw: TiffFolderMovie(path),
        ),
        MovieReader(
            "hdf5",
            ".h5/.hdf5/.mat (v7.3) with a 3-D dataset",
            _file_with_suffix(".h5", ".hdf5", ".hdf", ".mat"),
            HDF5Movie,
        ),
        MovieReader(
            "nwb",
            ".nwb: the data of its one TwoPhotonSeries / OnePhotonSeries / ImageSeries",
            _file_with_suffix(".nwb"),
            HDF5Movie,
        ),
        MovieReader(
            "zarr",
            ".zarr (or a folder with zarr.json/.zarray/.zgroup) v2/v3 array or group",
            lambda path: path.is_dir() and _is_zarr_dir(path),
            ZarrMovie,
        ),
        MovieReader(
            "suite2p-bin",
            "Suite2p data.bin with ops.npy beside it",
            _is_suite2p_bin,
            lambda path, dataset, hw: Suite2pBinMovie(path / "data.bin" if path.is_dir() else path),
        ),
        MovieReader(
            "npy",
            ".npy (T, H, W)",
            _file_with_suffix(".npy"),
            lambda path, dataset, hw: NpyMovie(path),
        ),
        MovieReader(
            "caiman-mmap",
            "CaImAn .mmap (shape and order in its name: _d1_H_d2_W_d3_1_order_C|F_frames_T_)",
            _file_with_suffix(".mmap"),
            lambda path, dataset, hw: CaimanMmapMovie(path),
        ),
    )
}
MOVIE_FORMATS = tuple(MOVIE_READERS)


def _detect_movie_format(path: Path) -> str:
    for reader in MOVIE_READERS.values():
        if reader.detect(path):
            return reader.name
    if path.is_dir():
        raise ValueError(
            f"{path}: folder is not a zarr store, holds no TIFF files and no "
            f"data.bin; supported movies: {_formats_text()}"
        )
    suffix = path.suffix.lower()
    raise ValueError(
        f"{path}: unknown movie format {suffix or '(no extension)'!r}; supported: {_formats_text()}"
    )


def _formats_text() -> str:
    return "; ".join(f"{r.name}: {r.description}" for r in MOVIE_READERS.values())


def open_movie(
    path: str | Path,
    *,
    dataset: str | None = None,
    format: str = "auto",
    expected_hw: tuple[int, int] | None = None,
) -> Movie:
    """Open a movie file or folder as a :class:`Movie` of shape (T, H, W).

    path : TIFF, folder of TIFFs, HDF5 / MATLAB v7.3, NWB, zarr, Suite2p ``data.bin`` (or its
        folder), ``.npy``, CaImAn ``.mmap``.
    dataset : HDF5 dataset / zarr array name (default: the only 3-D one; NWB: the data of the
        only imaging series).
    format : one of :data:`MOVIE_FORMATS` (rows of :data:`MOVIE_READERS`) or 'auto' (from the
        path: the first row whose ``detect`` accepts it).
    expected_hw : (H, W) of the extraction, used to find the axis order of HDF5/zarr data.

    Close the movie (or use it as a context manager) to release the file handle.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: movie not found")
    fmt = _detect_movie_format(path) if format == "auto" else format
    reader = MOVIE_READERS.get(fmt)
    if reader is None:
        raise ValueError(f"unknown movie format {fmt!r}; supported: {', '.join(MOVIE_FORMATS)}")
    return reader.open(path, dataset, expected_hw)
