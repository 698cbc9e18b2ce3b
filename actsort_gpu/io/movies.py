"""Movies: one interface, shape (T, H, W), read by windows of frames, never loaded whole.

``open_movie(path)`` picks the reader from the path. Every reader keeps memory bounded by the
window it is asked for: iterating over a terabyte movie uses one chunk of frames at a time.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Movie", "ArrayMovie", "NpyMovie", "open_movie"]


class Movie(ABC):
    """A calcium-imaging movie of ``shape`` (n_frames, height, width) and ``dtype``.

    Subclasses implement :meth:`_read` for a window of frames; everything else is shared.
    """

    path: Path
    format: str = "?"

    def __init__(self, path: str | Path, shape: tuple[int, int, int], dtype):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"{self.path}: expected a (frames, height, width) movie, "
                             f"got shape {self.shape}")

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
            raise OSError(f"{self.path}: read of frames [{start}, {stop}) returned shape "
                          f"{out.shape}; the file may be truncated or corrupt")
        return out

    def iter_chunks(self, frames_per_chunk: int, start: int = 0,
                    stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first_frame, frames) for consecutive windows of ``frames_per_chunk`` frames."""
        if frames_per_chunk < 1:
            raise ValueError(f"frames_per_chunk must be >= 1, got {frames_per_chunk}")
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        for first in range(int(start), stop, frames_per_chunk):
            yield first, self.read(first, min(first + frames_per_chunk, stop))

    @abstractmethod
    def _read(self, start: int, stop: int) -> np.ndarray: ...

    def close(self) -> None:
        """Release file handles (readers that hold some override this)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> dict:
        """JSON-ready facts about the movie for store provenance."""
        return {"path": str(self.path), "format": self.format, "n_frames": self.n_frames,
                "height": self.height, "width": self.width, "dtype": str(self.dtype)}

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


class NpyMovie(ArrayMovie):
    """A ``.npy`` file of shape (T, H, W), memory-mapped (never read whole)."""

    format = "npy"

    def __init__(self, path: str | Path):
        path = Path(path)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise OSError(f"{path}: not a readable .npy movie ({exc})") from exc
        if array.ndim != 3:
            raise ValueError(f"{path}: expected a 3-D (frames, height, width) array, "
                             f"got shape {array.shape}")
        super().__init__(array, path)
