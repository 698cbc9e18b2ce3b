"""CaImAn's memory-mapped movies (``.mmap``), shape and pixel order given by the file name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .axes import _swap_rows_cols
from .base import Movie
from .pixel_major import PixelMajorMovie
from .raw import RawFileMovie

__all__ = ["CaimanMmapMovie"]


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
    is a strided read of every pixel (:class:`.PixelMajorMovie`: a memory map read 16 columns
    at a time, each tile's pages released after it; slower than ``order_F``).
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
        self._raw = self._pixels = None
        if order == "F":  # frames one after another, each (W, H) in C order
            self._raw = RawFileMovie(path, (t, w, h), self.dtype, 0)
        else:  # pixel = row + col * H, each pixel's T values together
            self._pixels = PixelMajorMovie(path, (t, h, w), self.dtype, 0)

    @property
    def _reader(self) -> Movie:
        return self._raw if self._raw is not None else self._pixels

    @property
    def read_mode(self) -> str:
        return self._reader.read_mode

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._raw is not None:
            return _swap_rows_cols(self._raw._read(start, stop))
        return self._pixels._read(start, stop)

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if self._pixels is not None:
            return self._pixels.read_into(start, stop, out)
        return super().read_into(start, stop, out)

    def close(self) -> None:
        if getattr(self, "_raw", None) is not None or getattr(self, "_pixels", None) is not None:
            self._reader.close()
