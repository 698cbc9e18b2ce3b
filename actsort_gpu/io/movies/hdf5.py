"""HDF5 movies (MATLAB v7.3 ``.mat`` and NWB included): a 3-D dataset read through h5py, or
like a raw file at its offset when unchunked with frames first."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .axes import (
    _OrderedArrayMovie,
    _swap_rows_cols,
    movie_shape,
    resolve_axis_order,
    window_index,
)
from .interleave import LayoutNeeded
from .raw import RawFileMovie

log = logging.getLogger(__name__)

__all__ = ["HDF5Movie"]


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
        interleave=None,
    ):
        """interleave : an ``Interleave``: an axis of the dataset whose size is its channels
        (planes) reads its channel (plane) (``axes.movie_axes``); ``resolved`` says so."""
        import h5py

        path = Path(path)
        self._interleave = interleave
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
                movie_shape(array.shape, interleave),
                expected_hw,
                matlab=matlab,
                where=f"{path}:{name}",
            )
        except Exception:
            self._file.close()
            raise
        super().__init__(path, array, order, name.lstrip("/"), interleave)
        if nwb:
            self.fs_hz = _nwb_rate(array.parent)
        self._raw = _contiguous_hdf5_raw(path, array, order, self._fixed)
        if order != "THW" or matlab:
            log.info(
                "%s:%s: dataset shape %s read as axis order %s%s",
                path,
                name,
                array.shape,
                order,
                " (MATLAB file: reversed dimensions)" if matlab else "",
            )

    def _datasets(self) -> dict[str, tuple[int, ...]]:
        """Every dataset of the file: name -> shape, in the file's order."""
        import h5py

        found: dict[str, tuple[int, ...]] = {}

        def visit(name, obj) -> None:  # a value other than None would end h5py's visit
            if isinstance(obj, h5py.Dataset):
                found[name] = obj.shape

        self._file.visititems(visit)
        return found

    def _datasets_3d(self) -> list[str]:
        return [
            name
            for name, shape in self._datasets().items()
            if len(movie_shape(shape, self._interleave)) == 3
        ]

    def _nwb_series(self, path: Path) -> str:
        """The ``data`` of the NWB file's one imaging series (TwoPhotonSeries, OnePhotonSeries
        or ImageSeries with frames in the file)."""
        import h5py

        series, stacked, external = [], [], []

        def visit(name, obj):
            kind = obj.attrs.get("neurodata_type")
            kind = kind.decode() if isinstance(kind, bytes) else kind
            if not isinstance(obj, h5py.Group) or kind not in _NWB_IMAGING_SERIES:
                return
            data = obj.get("data")
            if (
                isinstance(data, h5py.Dataset)
                and len(movie_shape(data.shape, self._interleave)) == 3
                and data.shape[0] > 1
            ):
                series.append(f"{name}/data")
            elif isinstance(data, h5py.Dataset) and len(movie_shape(data.shape)) > 3:
                stacked.append(f"{name}/data {data.shape}")
            elif "external_file" in obj:
                external.append(name)

        self._file.visititems(visit)
        if len(series) == 1:
            return series[0]
        if not series and stacked:
            raise LayoutNeeded(
                f"{path}: the imaging series {stacked} have a channel or plane axis: choose "
                "one with --channels N --channel K or --planes N --plane K"
            )
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
        if len(found) > 1:
            raise ValueError(
                f"{path}: {len(found)} 3-D datasets {found}; expected exactly one "
                f"movie: name it with --dataset"
            )
        if not found:
            shapes = self._datasets()
            held = [f"{name} {shape}" for name, shape in shapes.items()][:8]
            several = any(len(movie_shape(shape)) > 3 for shape in shapes.values())
            raise (LayoutNeeded if several else ValueError)(
                f"{path}: no 3-D (frames, height, width) dataset; it holds "
                f"{', '.join(held) or 'no dataset'} (a movie with a channel or plane axis: "
                "choose one with --channels N --channel K or --planes N --plane K)"
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


def _nwb_rate(series) -> float | None:
    """Frames per second of an NWB series group: its ``starting_time``'s ``rate``, else from
    its ``timestamps`` (s; the median step of the first 1,000); None when neither gives one."""
    start = series.get("starting_time")
    if start is not None and "rate" in start.attrs:
        rate = float(start.attrs["rate"])
        return rate if np.isfinite(rate) and rate > 0 else None
    stamps = series.get("timestamps")
    if stamps is None or stamps.ndim != 1 or stamps.shape[0] < 2:
        return None
    step = float(np.median(np.diff(np.asarray(stamps[:1001], np.float64))))
    return 1.0 / step if np.isfinite(step) and step > 0 else None


#: NWB neurodata types whose ``data`` is a movie (frames, rows, columns)
_NWB_IMAGING_SERIES = ("TwoPhotonSeries", "OnePhotonSeries", "ImageSeries")


def _contiguous_hdf5_raw(
    path: Path, array, order: str, fixed: dict[int, int]
) -> RawFileMovie | None:
    """A raw reader (``preadv``, direct I/O when large and uncached) of an HDF5 dataset whose
    frames lie one after another in the file: contiguous layout (no chunks, so no filters), not
    virtual or external, a native-order number type, frames first (THW, or MATLAB's TWH), no
    channel or plane axis chosen (``fixed``: only axes of size 1). Its first frame must equal
    h5py's, bit for bit; None otherwise (h5py reads it)."""
    dtype = array.dtype
    if (
        order[0] != "T"
        or any(array.shape[k] != 1 for k in fixed)
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
        raw = RawFileMovie(path, movie_shape(array.shape), dtype, offset)  # sizes of 1 dropped
    except OSError:
        return None
    try:
        first = np.asarray(array[window_index(array.shape, 0, 0, 1, fixed)])  # frame 0 only
        same = raw.read(0, 1).tobytes() == first.tobytes()
    except OSError:
        same = False
    if not same:
        raw.close()
        return None
    return raw
