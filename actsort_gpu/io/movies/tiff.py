"""Multi-page TIFF / BigTIFF movies: uncompressed ones by windows at their offsets (one run
of frames, or a page table for ScanImage's IFD-per-frame layout), others through tifffile."""

from __future__ import annotations

import logging
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..direct import ALIGN, PLACEMENT_SLACK, FileBytes, placed_frames
from .base import Movie
from .raw import PAGE_GAP_BYTES, RawFileMovie
from .scanimage import saved_channel_count

__all__ = ["TiffMovie", "PAGE_GAP_BYTES"]


class TiffMovie(Movie):
    """A multi-page TIFF / BigTIFF (one frame per page, or an ImageJ / shaped series).

    Uncompressed contiguous data is read like a raw file (``os.preadv`` at the data offset);
    an uncompressed page chain (an IFD before each frame, ScanImage's layout) from a table of
    the frames' offsets built at open, one span per window (:meth:`_read_pages`); anything
    else (zlib, LZW, tiles, ...) page by page through one open ``TiffFile`` handle. Both
    uncompressed paths use direct I/O when the file is large and not in the page cache.
    """

    format = "tiff"

    def __init__(self, path: str | Path, pages: bool = False):
        """pages : read a series with several leading axes (an ImageJ or ScanImage hyperstack
        of channels or planes, e.g. TCYX) as its pages in file order, (T * C, H, W), for an
        :class:`~.interleave.InterleavedMovie` to pick one channel and plane from; without
        it such a series is refused."""
        import tifffile

        path = Path(path)
        with _TiffProblems() as problems:
            try:
                self._tif = tifffile.TiffFile(path)
                chain = uniform_chain(self._tif, path)
                if chain is not None:  # counted from the file's size, not walked
                    shape, axes, dtype = chain.shape, chain.axes, chain.dtype
                    dataoffset = None
                else:
                    series = self._tif.series[0]
                    shape, axes, dtype = series.shape, series.axes, series.dtype
                    dataoffset = series.dataoffset
                    len(self._tif.pages)  # walks the page chain: finds a cut-off file
            except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
                raise OSError(f"{path}: not a readable TIFF ({exc})") from exc
        if problems.messages:
            self._tif.close()
            raise OSError(f"{path}: TIFF is truncated or corrupt: {problems.messages[0]}")
        squeezed = [s for s in shape[:-2] if s != 1]
        #: the series' leading axes and sizes (e.g. 'TC', (600, 2)) when it has several
        self.stack = (axes[:-2], tuple(shape[:-2])) if len(squeezed) > 1 else None
        if len(shape) > 2 and len(squeezed) > 1:
            if not pages:
                self._tif.close()
                raise ValueError(
                    f"{path}: TIFF series of shape {shape} (axes {axes}): "
                    f"{_stack_words(axes[:-2], shape[:-2])} interleaved; pick one with "
                    "--channels N --channel K and / or --planes N --plane K (ingest), or "
                    "open_movie(..., interleave=Interleave(...))"
                )
            squeezed = [int(np.prod(shape[:-2], dtype=np.int64))]
        if len(shape) < 2:
            self._tif.close()
            raise ValueError(f"{path}: TIFF series of shape {shape}; expected frames")
        if len(shape) == 2 or not squeezed:
            self._tif.close()
            raise ValueError(
                f"{path}: holds a single {shape[-2]} x {shape[-1]} image; a movie "
                f"needs several frames (a multi-page TIFF or a folder of TIFFs)"
            )
        super().__init__(path, (squeezed[0], shape[-2], shape[-1]), dtype)
        self._raw = None
        self._pages = None  # (T,) file offsets of the frames of an uncompressed page chain
        self._decoded = np.empty((0, *self.shape[1:]), self.dtype)  # pages cut to rows, reused
        disk_dtype = np.dtype(dtype).newbyteorder(self._tif.byteorder)
        if dataoffset is not None:
            self._raw = RawFileMovie(path, self.shape, disk_dtype, dataoffset)
            self.format = "tiff"
        else:
            if chain is not None:
                self._pages = chain.offsets
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
        theirs = np.asarray(self._tif.pages.first.asarray(maxworkers=1), self.dtype)
        if mine.tobytes() != theirs.tobytes():
            self._file.close()
            self._pages = None

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        if self._raw is not None:
            return self._raw.read_into(start, stop, out)
        if not self._fills_in_place(start, stop, out):
            return super().read_into(start, stop, out)
        if self._pages is not None:
            return self._read_pages(start, stop, out)
        return self._decode(start, stop, out)

    def buffer_shift(self, start: int) -> int | None:
        return None if self._raw is None else self._raw.buffer_shift(start)

    @property
    def read_mode(self) -> str:
        if self._raw is not None:
            return self._raw.read_mode
        return "buffered" if self._pages is None else self._file.read_mode

    def read_pages_into(
        self, pages: range, out: np.ndarray, rows: slice | None = None
    ) -> np.ndarray | None:
        """The frames ``pages`` (a range, any step: one channel of interleaved pages) into
        ``out`` ((len(pages), H, W), or (len(pages), rows, W) with ``rows``: one ROI strip of
        multi-ROI pages; C-contiguous), reading or decoding only those; None when the frames
        lie in one run of bytes (reading the span is as good). An uncompressed page chain reads
        only the rows' bytes of each page; compressed pages are decoded whole and cut."""
        if self._raw is not None:  # frames one after another: read as a raw file's
            return self._raw.read_pages_into(pages, out, rows)
        self._check_pages(pages, out, rows)
        if self._pages is not None:
            offsets = self._pages[pages.start : pages.stop : pages.step]
            if rows is not None:
                offsets = offsets + rows.start * self.width * self.dtype.itemsize
            return self._read_offsets(offsets, out, pages)
        if rows is None:
            return self._decode_keys(pages, out)
        if self._decoded.shape[0] < len(pages):
            self._decoded = np.empty((len(pages), self.height, self.width), self.dtype)
        out[...] = self._decode_keys(pages, self._decoded[: len(pages)])[:, rows]
        return out

    def _read_pages(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Frames [start, stop) of an uncompressed page chain (:meth:`_read_offsets`)."""
        return self._read_offsets(self._pages[start:stop], out, range(start, stop))

    def _read_offsets(self, offsets: np.ndarray, out: np.ndarray, pages: range) -> np.ndarray:
        """The frames (or strips of rows: ``out[k]``'s bytes each) at file ``offsets`` of an
        uncompressed page chain: one read of the bytes from the first to the end of the last
        (the IFDs between them are small), then a copy of each out of it; one by one where
        they lie far apart."""
        if len(offsets) == 0:
            return out
        fb, n = out[0].nbytes, len(offsets)
        lo, hi = int(offsets[0]), int(offsets[-1]) + fb
        what = f"frames {_pages_text(pages)}"
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
                out[k] = span[off : off + fb].view(self._disk_dtype).reshape(out.shape[1], -1)
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._raw is not None:
            return self._raw._read(start, stop)
        out = np.empty((stop - start, self.height, self.width), self.dtype)
        if self._pages is not None:
            return self._read_pages(start, stop, out)
        return self._decode(start, stop, out)

    def _decode(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Frames [start, stop) decoded by tifffile straight into ``out`` (:meth:`_decode_keys`)."""
        return self._decode_keys(range(start, stop), out)

    def _decode_keys(self, pages: range, out: np.ndarray) -> np.ndarray:
        """The frames ``pages`` decoded by tifffile straight into ``out`` (C-contiguous),
        pages on tifffile's threads (half the cores: the codecs release the GIL)."""
        try:
            # tifffile sets the shape of the array it fills to what was read, (H, W) for one
            # frame, on the very object it is handed: a view of ``out`` keeps ``out`` 3-D
            self._tif.asarray(key=pages, series=0, out=out.view())
        except _TIFF_READ_ERRORS as exc:
            raise OSError(
                f"{self.path}: cannot read frame {self._first_bad_frame(pages)} (of "
                f"{_pages_text(pages)}): {exc}; the file may be truncated or corrupt"
            ) from exc
        return out

    def _first_bad_frame(self, pages: range) -> int | str:
        """The first frame of ``pages`` that does not decode (for the error message)."""
        for k in pages:
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


def _pages_text(pages: range) -> str:
    """'[10, 20)' or '[10, 20) step 2' for error messages."""
    step = f" step {pages.step}" if pages.step != 1 else ""
    return f"[{pages.start}, {pages.stop}){step}"


def _stack_words(axes: str, sizes) -> str:
    """'2 channels and 3 planes' from a series' leading axes ('TZCYX' without 'YX')."""
    names = {"C": "channels", "Z": "planes", "S": "samples"}
    words = [
        f"{n} {names.get(a, 'entries of axis ' + a)}"
        for a, n in zip(axes, sizes)
        if a != "T" and n > 1
    ]
    return " and ".join(words) or f"axes {axes} of sizes {tuple(sizes)}"


#: pages of a uniform page chain checked (spread over the file; the last one too) before its
#: stride is trusted
CHAIN_CHECKS = 64


@dataclass(frozen=True)
class UniformChain:
    """An uncompressed page chain whose pages after the first lie one stride apart.

    offsets : (n_pages,) int64 file offsets of the pages' data; shape, axes : the series
    (pages, H, W) 'IYX', or (time points, channels, H, W) 'TCYX' for a ScanImage file that
    saved several channels and holds whole time points (a part of a split recording may end
    inside one: its pages as they are); dtype : of the samples."""

    offsets: np.ndarray
    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype


def uniform_chain(tif, path: Path) -> UniformChain | None:
    """The page table of an uncompressed page chain (an IFD before each frame, as ScanImage
    and tifffile write them) from its first three pages and the file's size, without walking
    the chain: a terabyte recording holds millions of pages, and walking them cost 0.28 s per
    GB from a cold cache here (twice for a folder of parts). The stride is confirmed at up to
    :data:`CHAIN_CHECKS` pages spread over the file (each IFD's entry count, its frame's
    offset and its link to the next) and at the last, whose link must be 0 (a cut-off file
    fails it). None for anything else (ImageJ, OME or shaped series, compressed or tiled
    pages, fewer than 3 pages, a chain whose pages are not evenly spaced): the caller lets
    tifffile walk the chain."""
    pages = tif.pages
    first = pages.first
    if first.flags - {"scanimage"} or len(first.shape) != 2 or not first.is_contiguous:
        return None
    frame_bytes = int(np.prod(first.shape)) * first.dtype.itemsize
    try:
        second, third = pages[1], pages[2]
    except IndexError:
        return None
    for page in (second, third):
        if (page.shape, page.dtype, page.is_contiguous) != (first.shape, first.dtype, True):
            return None
    ifd1, data1 = second.offset, second.dataoffsets[0]
    stride = third.offset - ifd1
    if stride < frame_bytes or third.dataoffsets[0] - data1 != stride:
        return None
    n = 2 + (path.stat().st_size - data1 - frame_bytes) // stride
    if n < 3:
        return None
    checks = set(np.linspace(1, n - 1, min(CHAIN_CHECKS, n - 1)).astype(int).tolist())
    with open(path, "rb") as fh:
        ifds = _IfdReader(fh, tif.byteorder, tif.is_bigtiff)
        entries = ifds.read(ifd1)[0]
        for k in sorted(checks | {n - 1}):
            count, strip, link = ifds.read(ifd1 + (k - 1) * stride)
            expected_link = 0 if k == n - 1 else ifd1 + k * stride
            if (count, strip, link) != (entries, data1 + (k - 1) * stride, expected_link):
                return None
    offsets = np.empty(n, np.int64)
    offsets[0] = first.dataoffsets[0]
    offsets[1:] = data1 + np.arange(n - 1, dtype=np.int64) * stride
    shape, axes = (n, *first.shape), "IYX"
    channels = saved_channel_count(tif) if "scanimage" in first.flags else 1
    if channels > 1 and n % channels == 0:  # else its pages as they are, as tifffile does
        shape, axes = (n // channels, channels, *first.shape), "TCYX"
    return UniformChain(offsets, shape, axes, first.dtype)


class _IfdReader:
    """Reads (entry count, first strip offset, link to the next IFD) of a TIFF's IFDs at any
    offset (classic or BigTIFF, either byte order)."""

    _TYPES = {3: "H", 4: "I", 16: "Q"}  # StripOffsets: SHORT, LONG or LONG8

    def __init__(self, fh, order: str, big: bool):
        self._fh = fh
        self._count = struct.Struct(order + ("Q" if big else "H"))
        self._entry = struct.Struct(order + ("HHQ8s" if big else "HHI4s"))
        self._link = struct.Struct(order + ("Q" if big else "I"))
        self._order = order

    def read(self, offset: int) -> tuple[int, int, int]:
        fh = self._fh
        fh.seek(offset)
        head = fh.read(self._count.size)
        if len(head) < self._count.size:
            return -1, -1, -1
        (count,) = self._count.unpack(head)
        if not 0 < count < 4096:
            return -1, -1, -1
        body = fh.read(count * self._entry.size + self._link.size)
        if len(body) < count * self._entry.size + self._link.size:
            return -1, -1, -1
        strip = -1
        for k in range(count):
            tag, kind, n, value = self._entry.unpack_from(body, k * self._entry.size)
            if tag == 273 and kind in self._TYPES:
                item = struct.Struct(self._order + self._TYPES[kind])
                if n * item.size > len(value):  # the values lie elsewhere: the first of them
                    (at,) = struct.unpack(self._order + ("Q" if len(value) == 8 else "I"), value)
                    fh.seek(at)
                    value = fh.read(item.size)
                (strip,) = item.unpack_from(value)
        (link,) = self._link.unpack_from(body, count * self._entry.size)
        return count, strip, link


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
