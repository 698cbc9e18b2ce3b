"""The movie interface: shape (T, H, W), read by windows of frames into buffers a reader
may place for direct I/O; and :class:`ArrayMovie`, a movie held in an array."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..direct import PLACEMENT_SLACK, placed_frames

__all__ = ["Movie", "ArrayMovie", "SIGNATURE_FRAMES", "signature_frames"]

#: frames whose values make a movie's :meth:`Movie.pixel_signature`
SIGNATURE_FRAMES = 8


def signature_frames(n_frames: int) -> list[int]:
    """The :data:`SIGNATURE_FRAMES` frame indices of :meth:`Movie.pixel_signature`, spread
    from the first frame to the last (fewer in a shorter movie)."""
    picks = np.linspace(0, n_frames - 1, SIGNATURE_FRAMES).round().astype(int)
    return [int(f) for f in np.unique(picks)]


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

    def _check_pages(self, pages: range, out: np.ndarray, rows: slice | None = None) -> None:
        """For a ``read_pages_into(pages, out, rows)``: ``out`` must be (len(pages), the rows
        (all H without ``rows``), W) of the movie's dtype, C-contiguous, and every page and row
        inside the movie."""
        if rows is not None and not 0 <= rows.start < rows.stop <= self.height:
            raise IndexError(f"{self.path}: rows {rows} outside [0, {self.height})")
        n_rows = self.height if rows is None else rows.stop - rows.start
        if (
            out.shape != (len(pages), n_rows, self.width)
            or out.dtype != self.dtype
            or not out.flags.c_contiguous
        ):
            raise ValueError(f"out has shape {out.shape} {out.dtype} for {len(pages)} frames")
        if pages and not 0 <= min(pages[0], pages[-1]) <= max(pages[0], pages[-1]) < self.n_frames:
            raise IndexError(f"{self.path}: pages {pages} outside [0, {self.n_frames})")

    @property
    def read_mode(self) -> str:
        """How the frames read so far came off the disk: 'direct' (``O_DIRECT``, page cache
        bypassed), 'buffered' (through the page cache, also every library reader), or
        'direct+buffered' (a folder whose files were read both ways)."""
        return "buffered"

    def buffer_shift(self, start: int) -> int | None:
        """Where in a page (bytes past a boundary) a buffer for frames from ``start`` should
        begin so that :meth:`read_into` can fill it without an extra copy
        (:func:`actsort_gpu.io.direct.placed_frames`); None when this reader has no preference."""
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

    def pixel_signature(self, frames=None) -> dict:
        """``{"frames": [...], "sha256": hex}``: a digest of the values of a few frames
        (``frames``, default :func:`signature_frames`), taken as float64
        so that the same recording in another file format or dtype gives the same digest.
        Recorded at ingest; the movie pass compares it (another recording of the same shape,
        or an edited file, is refused). Reads only those frames."""
        return self.sample_frames(frames)[0]

    def sample_frames(self, frames=None) -> tuple[dict, np.ndarray]:
        """(:meth:`pixel_signature`, the (H, W) float64 mean of the same frames), each frame
        read once and let go (ingest needs both: the mean is compared with the extraction's
        mean image)."""
        frames = [int(f) for f in (signature_frames(self.n_frames) if frames is None else frames)]
        digest = hashlib.sha256()
        total = np.zeros((self.height, self.width), np.float64)
        for f in frames:
            values = np.ascontiguousarray(self.read(f, f + 1)[0], dtype="<f8")
            digest.update(values.tobytes())
            total += values
        signature = {"frames": frames, "sha256": digest.hexdigest()}
        return signature, total / max(len(frames), 1)

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
