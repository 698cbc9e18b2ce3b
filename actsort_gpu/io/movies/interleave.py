"""One channel of one plane of a movie whose frames interleave channels and planes.

ScanImage (and Suite2p's input convention) writes, for each time point, every plane and within
each plane every channel: page ``t * planes * channels + plane * channels + (channel - 1)``
holds time point ``t`` of ``plane`` (0-based, as Suite2p's ``planeN`` folders) and ``channel``
(1-based, as ScanImage's channels and Suite2p's ``functional_chan``). ImageJ hyperstacks
(TZCYX) store their pages in the same order. :class:`InterleavedMovie` serves one channel of
one plane of such a movie as an ordinary (T, H, W) :class:`~.base.Movie`.

ScanImage's multi-ROI (mesoscope) recordings stack their ROIs down each page, with the fly-to
lines between them; Suite2p turns each ROI of each plane into a plane folder whose ops name the
ROI's ``lines`` of the page. ``Interleave.rows`` reads that strip of every chosen page.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace

import numpy as np

from .base import Movie

__all__ = ["Interleave", "InterleavedMovie", "LayoutNeeded", "INNER_WINDOW_BYTES"]

#: the most bytes of the interleaved movie read at once (a window of the selected frames is
#: read in pieces of at most this many bytes of all channels and planes)
INNER_WINDOW_BYTES = 64 << 20


class LayoutNeeded(ValueError):
    """A movie that holds several channels or planes side by side (an array with a channel or
    plane axis, a folder of several channels' files) and cannot be read before one is chosen
    (``open_movie(..., interleave=...)``; ingest takes the extraction's when it records one)."""


@dataclass(frozen=True)
class Interleave:
    """Which channel of which plane to read from interleaved pages.

    planes, channels : how many planes and channels the pages interleave (>= 1)
    plane : 0-based (Suite2p's ``plane0`` is 0); channel : 1-based (ScanImage's channel 1 is
    1, Suite2p's ``functional_chan``)
    rows : (first, stop) rows of each page to read (one ROI of a ScanImage multi-ROI page, as
        Suite2p's ops ``lines``), None: whole pages
    """

    planes: int = 1
    plane: int = 0
    channels: int = 1
    channel: int = 1
    rows: tuple[int, int] | None = None

    def __post_init__(self):
        for name in ("planes", "plane", "channels", "channel"):
            _check_whole(name, getattr(self, name))
        if self.rows is not None:
            rows = tuple(self.rows)
            if len(rows) != 2:
                raise ValueError(f"rows: expected (first, stop), got {self.rows!r}")
            for value in rows:
                _check_whole("rows", value)
            if not 0 <= rows[0] < rows[1]:
                raise ValueError(f"rows {rows[0]}:{rows[1]}: expected 0 <= first < stop")
            object.__setattr__(self, "rows", (int(rows[0]), int(rows[1])))
        if self.planes < 1 or self.channels < 1:
            raise ValueError(
                f"planes and channels must be >= 1, got {self.planes} planes, "
                f"{self.channels} channels"
            )
        if not 0 <= self.plane < self.planes:
            raise ValueError(
                f"plane {self.plane} outside 0..{self.planes - 1} (planes are 0-based, as "
                "Suite2p's plane0, plane1, ...)"
            )
        if not 1 <= self.channel <= self.channels:
            raise ValueError(
                f"channel {self.channel} outside 1..{self.channels} (channels are 1-based, as "
                "ScanImage's and Suite2p's functional_chan)"
            )

    @property
    def stride(self) -> int:
        """Pages per time point."""
        return self.planes * self.channels

    @property
    def offset(self) -> int:
        """The page of time point 0."""
        return self.plane * self.channels + self.channel - 1

    @property
    def is_plain(self) -> bool:
        """One channel, one plane, whole pages: every page is a frame."""
        return self.stride == 1 and self.rows is None

    def without_rows(self) -> Interleave:
        return replace(self, rows=None)

    def n_frames(self, n_pages: int) -> int:
        """Time points of this channel and plane in ``n_pages`` pages (a last, incomplete time
        point counts when it reaches this channel and plane, as Suite2p's ``[offset::stride]``)."""
        return max(0, (int(n_pages) - self.offset + self.stride - 1) // self.stride)

    def describe(self) -> str:
        """'channel 2 of 2, plane 0 of 3' (the parts that are not single)."""
        parts = []
        if self.channels > 1:
            parts.append(f"channel {self.channel} of {self.channels}")
        if self.planes > 1:
            parts.append(f"plane {self.plane} of {self.planes} (0-based)")
        if self.rows is not None:
            parts.append(f"rows {self.rows[0]}:{self.rows[1]} (one ROI of a multi-ROI page)")
        return ", ".join(parts) or "every page (one channel, one plane)"

    def as_dict(self) -> dict:
        """Its fields (``rows`` only when set: stores written before rows existed match)."""
        out = asdict(self)
        if self.rows is None:
            del out["rows"]
        else:
            out["rows"] = list(self.rows)
        return out

    @classmethod
    def from_dict(cls, value: dict | None) -> Interleave | None:
        """The interleave a store recorded (None: a plain movie)."""
        if not value:
            return None
        fields = {k: int(v) for k, v in value.items() if k != "rows"}
        rows = value.get("rows")
        return cls(**fields, rows=None if rows is None else tuple(int(v) for v in rows))


def _check_whole(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected a whole number, got {value!r}")


class InterleavedMovie(Movie):
    """The frames of ``inner`` (its pages) at ``interleave.offset + t * interleave.stride``.

    A window of frames is read in pieces of at most :data:`INNER_WINDOW_BYTES` of pages: a
    reader that can read or decode only the chosen pages (``read_pages_into``: uncompressed
    TIFFs, ``.npy`` and raw files when the pages lie far apart, compressed TIFFs, TIFF
    folders) does, and of a ROI strip (``interleave.rows``) an uncompressed file reads only the
    strip's bytes; otherwise the span of pages is read and the chosen ones (rows) copied out.
    Memory stays bounded by the piece, whatever the window. Closing it closes ``inner``.
    """

    def __init__(self, inner: Movie, interleave: Interleave):
        n = interleave.n_frames(inner.n_frames)
        if n < 1:
            raise ValueError(
                f"{inner.path}: {inner.n_frames} pages hold no frame of {interleave.describe()}"
            )
        rows = interleave.rows or (0, inner.height)
        if rows[1] > inner.height:
            raise ValueError(
                f"{inner.path}: rows {rows[0]}:{rows[1]} asked for, but its pages have "
                f"{inner.height} rows"
            )
        super().__init__(inner.path, (n, rows[1] - rows[0], inner.width), inner.dtype)
        self._rows = slice(*rows)
        #: the rows asked of ``read_pages_into``: None for whole pages
        self._strip = None if rows == (0, inner.height) else self._rows
        self.inner = inner
        self.interleave = interleave
        self.format = inner.format
        self.fs_hz = inner.fs_hz
        self.dataset = inner.dataset
        self.axis_order = inner.axis_order
        stride_bytes = interleave.stride * inner.frame_bytes
        self._per_piece = max(1, INNER_WINDOW_BYTES // stride_bytes)  # frames per inner read
        self._buffer = None  # inner pages of one piece, reused
        self._lock = threading.Lock()

    def _pages(self, start: int, stop: int) -> tuple[int, int]:
        """The span of inner pages [first, last) holding frames [start, stop)."""
        il = self.interleave
        return il.offset + start * il.stride, il.offset + (stop - 1) * il.stride + 1

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if not self._fills_in_place(start, stop, out):
            return super().read_into(start, stop, out)
        stride = self.interleave.stride
        chosen_only = getattr(self.inner, "read_pages_into", None)
        with self._lock:
            for lo in range(start, stop, self._per_piece):
                hi = min(stop, lo + self._per_piece)
                first, last = self._pages(lo, hi)
                dest = out[lo - start : hi - start]
                chosen = range(first, last, stride)
                if chosen_only is not None and chosen_only(chosen, dest, self._strip) is not None:
                    continue
                if self._buffer is None:  # the longest span of a piece
                    self._buffer = self.inner.window_buffer((self._per_piece - 1) * stride + 1)
                pages = self.inner.read_into(
                    first, last, self.inner.placed_window(self._buffer, first, last)
                )
                dest[...] = pages[::stride, self._rows]
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.height, self.width), self.dtype)
        return self.read_into(start, stop, out)

    @property
    def read_mode(self) -> str:
        return self.inner.read_mode

    def describe(self) -> dict:
        inner = self.inner.describe()
        chosen = self.interleave.as_dict()
        # a channel or plane the reader chose (a Bruker folder's files, an array's axis): kept
        for count, index in (("channels", "channel"), ("planes", "plane")):
            by_reader = (inner.get("interleave") or {}).get(count, 1)
            if by_reader > 1:
                chosen.update({count: by_reader, index: inner["interleave"][index]})
        return {
            **inner,
            "n_frames": self.n_frames,
            "pages": self.inner.n_frames,
            "interleave": chosen,
        }

    def close(self) -> None:
        self.inner.close()
