"""A folder of TIFF files (one frame or many per file) read as one movie, in natural
name order, with one part open at a time."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from .base import Movie
from .interleave import Interleave, LayoutNeeded
from .tiff import TiffMovie, uniform_chain

__all__ = ["TiffFolderMovie"]


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def tiff_files(path: Path) -> list[Path]:
    """The .tif / .tiff files of a folder, in natural name order."""
    return sorted(
        (p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff") and p.is_file()),
        key=_natural_key,
    )


#: a channel in a file name, as Bruker's PrairieView writes them (``..._Cycle00001_Ch2_000001``)
_CHANNEL_TAG = re.compile(r"_Ch(\d+)_", re.IGNORECASE)


def _channel_files(path: Path, files: list[Path], channel: int | None) -> tuple[list[Path], int]:
    """(The files of one channel, how many channels the names carry) when they carry several
    (``_Ch<k>_``): those of ``channel`` (1-based), an error naming the channels when it is None
    or absent; (``files``, 1) when they carry one channel or none."""
    tags = [_CHANNEL_TAG.search(f.name) for f in files]
    found = sorted({int(t.group(1)) for t in tags if t})
    if len(found) < 2:
        return files, 1
    counts = ", ".join(
        f"Ch{k}: {sum(1 for t in tags if t and int(t.group(1)) == k)} files" for k in found
    )
    if channel is None:
        raise LayoutNeeded(
            f"{path}: its files hold {len(found)} channels ({counts}; Bruker's naming): choose "
            f"one with --channels {len(found)} --channel K (K = the number after _Ch)"
        )
    picked = [f for f, t in zip(files, tags) if t and int(t.group(1)) == channel]
    if not picked:
        raise ValueError(f"{path}: no file of channel {channel} (_Ch{channel}_); it holds {counts}")
    return picked, len(found)


def bruker_frame_rate(folder: Path, n_frames: int = 200) -> float | None:
    """Frames per second of a Bruker PrairieView T-series folder: the median step of the
    ``relativeTime`` (s) of the first ``n_frames`` frames its ``.xml`` lists (read only that
    far; an XML whose root is not ``PVScan`` is left after its first tag); None without such a
    file, for a volume series (``ZSeries``), or when the times give no rate."""
    import xml.etree.ElementTree as ET

    for xml in sorted(folder.glob("*.xml")):
        times: list[float] = []
        try:
            for k, (_, element) in enumerate(ET.iterparse(xml, events=("start",))):
                if k == 0 and element.tag != "PVScan":
                    break
                if element.tag == "Sequence" and "ZSeries" in element.get("type", ""):
                    return None
                if element.tag == "Frame" and element.get("relativeTime") is not None:
                    times.append(float(element.get("relativeTime")))
                    if len(times) >= n_frames:
                        break
        except (ET.ParseError, OSError, ValueError):
            continue
        if len(times) > 1:
            step = float(np.median(np.diff(times)))
            return 1.0 / step if np.isfinite(step) and step > 0 else None
    return None


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

    def __init__(self, path: str | Path, channel: int | None = None):
        """channel : when the file names carry several channels (Bruker's ``_Ch<k>_``), the
        files of this one (1-based) are the movie; such a folder is refused without it.
        ``resolved`` records which (None: every file)."""
        path = Path(path)
        files = tiff_files(path)
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no .tif/.tiff files")
        files, n_channels = _channel_files(path, files, channel)
        #: the channel chosen by file name (an ``Interleave``), None: every file
        self.resolved = Interleave(channels=n_channels, channel=channel) if n_channels > 1 else None
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
        self.fs_hz = bruker_frame_rate(path)

    def describe(self) -> dict:
        info = super().describe()
        if self.resolved is not None:  # the files of one channel: reopened the same way
            info["interleave"] = self.resolved.as_dict()
        return info

    @staticmethod
    def _page_info(file: Path):
        import tifffile

        try:
            with tifffile.TiffFile(file) as tif:
                # a uniform page chain is counted from its size (not walked)
                s = uniform_chain(tif, file) or tif.series[0]
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
        movie = TiffMovie(self._files[i], pages=True)  # pages counted as frames at open
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

    def read_pages_into(
        self, pages: range, out: np.ndarray, rows: slice | None = None
    ) -> np.ndarray:
        """The frames ``pages`` (a range, any step: one channel of interleaved pages) into
        ``out`` ((len(pages), H, W), or (len(pages), rows, W) with ``rows``; C-contiguous),
        file by file: a one-frame file is read only when chosen, a multi-page one reads or
        decodes only the chosen pages (``TiffMovie.read_pages_into``) or, stored in one run,
        its span."""
        self._check_pages(pages, out, rows)
        every_row = slice(None) if rows is None else rows
        step, k = pages.step, 0
        with self._lock:
            while k < len(pages):
                first = pages[k]
                i = self._file_index(first)
                f0, f1 = int(self._starts[i]), int(self._starts[i + 1])
                n = min(len(pages) - k, (f1 - 1 - first) // step + 1)  # chosen pages in file i
                dest = out[k : k + n]
                movie = self._file_movie(i)
                if movie is None:
                    dest[...] = self._read_single(i)[every_row]
                    self._modes.add("buffered")
                else:
                    local = range(first - f0, first - f0 + (n - 1) * step + 1, step)
                    if movie.read_pages_into(local, dest, rows) is None:  # one run of bytes
                        dest[...] = movie.read(local.start, local.stop)[::step, every_row]
                    self._modes.add(movie.read_mode)
                k += n
        return out

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
