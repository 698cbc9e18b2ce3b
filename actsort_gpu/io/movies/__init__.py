"""Movies: one interface, shape (T, H, W), read by windows of frames, never loaded whole.

``open_movie(path)`` picks the reader from the path. Every reader keeps memory bounded by the
window it is asked for: iterating over a terabyte movie uses one chunk of frames at a time.

One module per format family (``raw``, ``pixel_major``, ``tiff``, ``tiff_folder``, ``hdf5``,
``zarr_array``, ``caiman``) on the interface in ``base``; this module holds the table of formats
(:data:`MOVIE_READERS`), detection from the path and :func:`open_movie`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .axes import resolve_axis_order
from .base import ArrayMovie, Movie
from .caiman import CaimanMmapMovie
from .hdf5 import HDF5Movie
from .interleave import Interleave, InterleavedMovie, LayoutNeeded
from .pixel_major import PixelMajorMovie
from .raw import NpyMovie, RawFileMovie, Suite2pBinMovie
from .tiff import TiffMovie
from .tiff_folder import TiffFolderMovie
from .zarr_array import ZarrMovie

__all__ = [
    "Movie",
    "ArrayMovie",
    "NpyMovie",
    "RawFileMovie",
    "TiffMovie",
    "TiffFolderMovie",
    "CaimanMmapMovie",
    "PixelMajorMovie",
    "HDF5Movie",
    "ZarrMovie",
    "Suite2pBinMovie",
    "open_movie",
    "MOVIE_FORMATS",
    "MOVIE_READERS",
    "MovieReader",
    "resolve_axis_order",
    "Interleave",
    "InterleavedMovie",
    "LayoutNeeded",
]


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
    open : (path, dataset, expected_hw, interleave) -> :class:`Movie` (``interleave`` given:
        a TIFF hyperstack of channels / planes is read as its pages instead of refused, and a
        TIFF folder whose file names carry channels keeps ``interleave.channel``'s files)
    """

    name: str
    description: str
    detect: Callable[[Path], bool]
    open: Callable[[Path, str | None, tuple[int, int] | None, Interleave | None], Movie]


MOVIE_READERS: dict[str, MovieReader] = {
    r.name: r
    for r in (
        MovieReader(
            "tiff",
            ".tif/.tiff multi-page TIFF or BigTIFF",
            _file_with_suffix(".tif", ".tiff"),
            lambda path, dataset, hw, il: TiffMovie(path, pages=il is not None),
        ),
        MovieReader(
            "tiff-folder",
            "a folder of .tif/.tiff files (natural name order)",
            _is_tiff_folder,
            lambda path, dataset, hw, il: TiffFolderMovie(path, channel=_file_channel(il)),
        ),
        MovieReader(
            "hdf5",
            ".h5/.hdf5/.mat (v7.3) with a 3-D dataset",
            _file_with_suffix(".h5", ".hdf5", ".hdf", ".mat"),
            lambda path, dataset, hw, il: HDF5Movie(path, dataset, hw, il),
        ),
        MovieReader(
            "nwb",
            ".nwb: the data of its one TwoPhotonSeries / OnePhotonSeries / ImageSeries",
            _file_with_suffix(".nwb"),
            lambda path, dataset, hw, il: HDF5Movie(path, dataset, hw, il),
        ),
        MovieReader(
            "zarr",
            ".zarr (or a folder with zarr.json/.zarray/.zgroup) v2/v3 array or group",
            lambda path: path.is_dir() and _is_zarr_dir(path),
            lambda path, dataset, hw, il: ZarrMovie(path, dataset, hw, il),
        ),
        MovieReader(
            "suite2p-bin",
            "Suite2p data.bin with ops.npy beside it",
            _is_suite2p_bin,
            lambda path, dataset, hw, il: Suite2pBinMovie(
                path / "data.bin" if path.is_dir() else path
            ),
        ),
        MovieReader(
            "npy",
            ".npy (T, H, W)",
            _file_with_suffix(".npy"),
            lambda path, dataset, hw, il: NpyMovie(path),
        ),
        MovieReader(
            "caiman-mmap",
            "CaImAn .mmap (shape and order in its name: _d1_H_d2_W_d3_1_order_C|F_frames_T_)",
            _file_with_suffix(".mmap"),
            lambda path, dataset, hw, il: CaimanMmapMovie(path),
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
    interleave: Interleave | None = None,
) -> Movie:
    """Open a movie file or folder as a :class:`Movie` of shape (T, H, W).

    path : TIFF, folder of TIFFs, HDF5 / MATLAB v7.3, NWB, zarr, Suite2p ``data.bin`` (or its
        folder), ``.npy``, CaImAn ``.mmap``.
    dataset : HDF5 dataset / zarr array name (default: the only 3-D one; NWB: the data of the
        only imaging series).
    format : one of :data:`MOVIE_FORMATS` (rows of :data:`MOVIE_READERS`) or 'auto' (from the
        path: the first row whose ``detect`` accepts it).
    expected_hw : (H, W) of the extraction, used to find the axis order of HDF5/zarr data.
    interleave : one channel of one plane of a movie whose frames interleave several
        (:class:`Interleave`; ScanImage's page order); ``Interleave()`` reads every page as a
        frame, also those of a TIFF hyperstack (refused without it).

    Close the movie (or use it as a context manager) to release the file handle.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: movie not found")
    fmt = _detect_movie_format(path) if format == "auto" else format
    reader = MOVIE_READERS.get(fmt)
    if reader is None:
        raise ValueError(f"unknown movie format {fmt!r}; supported: {', '.join(MOVIE_FORMATS)}")
    movie = reader.open(path, dataset, expected_hw, interleave)
    if interleave is None:
        return movie
    resolved = getattr(movie, "resolved", None)
    if resolved is not None:
        # the reader chose a channel (a TIFF folder's files, an array's axis) or a plane (an
        # array's axis): the pages interleave what is left
        interleave = Interleave(
            planes=1 if resolved.planes > 1 else interleave.planes,
            plane=0 if resolved.planes > 1 else interleave.plane,
            channels=1 if resolved.channels > 1 else interleave.channels,
            channel=1 if resolved.channels > 1 else interleave.channel,
            rows=interleave.rows,
        )
    try:
        _check_stack(movie, interleave)
        return movie if interleave.is_plain else InterleavedMovie(movie, interleave)
    except Exception:
        movie.close()
        raise


def _file_channel(interleave: Interleave | None) -> int | None:
    """The channel a TIFF folder's file names select (Bruker's ``_Ch<k>_``), when one is asked
    for."""
    return interleave.channel if interleave is not None and interleave.channels > 1 else None


def _check_stack(movie: Movie, interleave: Interleave) -> None:
    """A TIFF hyperstack that names its axes says how many channels (C) and planes (Z) it
    holds: ``interleave`` must agree (a plain selection reads its pages as they are)."""
    stack = getattr(movie, "stack", None)
    if stack is None or interleave.is_plain:
        return
    axes, sizes = stack[0], dict(zip(*stack))
    checks = [("C", "channels", interleave.channels)]
    if "T" in axes and "Z" in axes and axes.index("T") < axes.index("Z"):
        # ImageJ's TZCYX; tifffile calls a ScanImage file's outer axis Z ('ZTCYX'), which
        # holds time points (and planes) in a fast-z recording: not a plane count
        checks.append(("Z", "planes", interleave.planes))
    for axis, name, given in checks:
        if axis in sizes and sizes[axis] != given:
            raise ValueError(
                f"{movie.path}: the TIFF holds {sizes[axis]} {name} (axes {stack[0]}, "
                f"sizes {stack[1]}), not {given}"
            )
