"""Extraction outputs -> one :class:`~actsort_gpu.io.candidates.Candidates`.

``read_extraction(path)`` picks the reader from the path (``format`` overrides). The formats are
the rows of :data:`EXTRACTION_READERS`, in detection order: the CLI's ``--format`` choices and
:data:`EXTRACTION_FORMATS` come from it, and :func:`formats_markdown` renders it as a table.

This module imports the readers (each on its first read); the readers import only
:mod:`._footprints` and :mod:`.candidates`, never this module.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import IngestConfig
from ._footprints import MissingShapeError

if TYPE_CHECKING:
    from .candidates import Candidates

log = logging.getLogger(__name__)

__all__ = [
    "EXTRACTION_FORMATS",
    "EXTRACTION_READERS",
    "ExtractionReader",
    "MissingShapeError",
    "detect_extraction_format",
    "formats_markdown",
    "read_extraction",
]

_HDF5_SUFFIXES = (".hdf5", ".h5", ".hdf")


@dataclass(frozen=True)
class ExtractionReader:
    """One extraction format.

    name : the format's name (``--format``, ``Candidates.source_format``)
    accepts : one line on the paths it reads, for the docs, ``--help`` and error messages
    detect : path -> whether the path is this format (tried in table order)
    module, function : the reader in this package, imported on the first read (so optional
        packages such as pynwb are needed only to read that format)
    options : the keywords of :func:`read_extraction` the reader takes (config, hw, progress,
        movie_shape)
    folder : whether it reads a folder (True), a file (False) or either (None): a ``--format``
        given against the path's kind is refused before the reader's own error
    """

    name: str
    accepts: str
    detect: Callable[[Path], bool]
    module: str
    function: str
    options: tuple[str, ...] = ()
    folder: bool | None = False

    def reader(self) -> Callable[..., Candidates]:
        return getattr(importlib.import_module(f".{self.module}", __package__), self.function)

    def read(self, path: Path, **options) -> Candidates:
        """Read ``path`` with this format's reader, passing the ``options`` it takes."""
        return self.reader()(path, **{k: v for k, v in options.items() if k in self.options})


def _has_zarr_meta(path: Path) -> bool:
    return any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zarray"))


def _hdf5_kind(path: Path) -> str | None:
    """'caiman' (an ``estimates`` group), 'extract' (a MATLAB v7.3 header) or None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "estimates" in f:
                return "caiman"
    except OSError as exc:
        raise OSError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with path.open("rb") as fh:
        return "extract" if fh.read(19) == b"MATLAB 7.3 MAT-file" else None


def _is_suite2p(path: Path) -> bool:
    if path.is_dir():
        return (path / "stat.npy").is_file() or any(path.glob("plane*/stat.npy"))
    return path.name == "stat.npy"


def _is_extract(path: Path) -> bool:
    suffix = path.suffix.lower()
    if path.is_dir():
        return False
    return suffix == ".mat" or (suffix in _HDF5_SUFFIXES and _hdf5_kind(path) == "extract")


def _is_caiman(path: Path) -> bool:
    suffix = path.suffix.lower()
    return not path.is_dir() and suffix in _HDF5_SUFFIXES and _hdf5_kind(path) == "caiman"


def _is_minian(path: Path) -> bool:
    if path.is_dir():
        return (path / "A.zarr").exists() or (_has_zarr_meta(path) and (path / "A").exists())
    return path.suffix.lower() == ".zarr"


def _has_suffix(suffix: str) -> Callable[[Path], bool]:
    return lambda path: not path.is_dir() and path.suffix.lower() == suffix


EXTRACTION_READERS: dict[str, ExtractionReader] = {
    r.name: r
    for r in (
        ExtractionReader(
            "suite2p",
            "plane folder (stat.npy, F.npy, ...), suite2p/ folder with one plane*, or stat.npy",
            _is_suite2p,
            "suite2p",
            "read_suite2p",
            ("config", "progress", "movie_shape"),
            folder=None,
        ),
        ExtractionReader(
            "extract",
            "EXTRACT .mat (v5/v7 via scipy, v7.3 via h5py; also .h5 with a MATLAB header)",
            _is_extract,
            "extract_mat",
            "read_extract_mat",
            ("hw", "progress", "movie_shape"),
        ),
        ExtractionReader(
            "caiman",
            "CaImAn .hdf5/.h5 (cnm.save) with estimates/A",
            _is_caiman,
            "caiman",
            "read_caiman",
            ("config", "movie_shape"),
        ),
        ExtractionReader(
            "minian",
            "minian folder with A.zarr/C.zarr, or a zarr group with A and C",
            _is_minian,
            "minian",
            "read_minian",
            ("progress", "movie_shape"),
            folder=None,
        ),
        ExtractionReader(
            "nwb",
            "NWB .nwb ophys PlaneSegmentation (needs pynwb: the nwb extra)",
            _has_suffix(".nwb"),
            "nwb",
            "read_nwb",
            ("hw",),
        ),
        ExtractionReader(
            "npz",
            "generic .npz (footprints, traces; see actsort_gpu.io.npz)",
            _has_suffix(".npz"),
            "npz",
            "read_npz",
            ("movie_shape",),
        ),
    )
}
EXTRACTION_FORMATS = tuple(EXTRACTION_READERS)


def _formats_text() -> str:
    return "; ".join(f"{r.name}: {r.accepts}" for r in EXTRACTION_READERS.values())


def formats_markdown() -> str:
    """The reader table as a Markdown table (format, accepted paths, reader function)."""
    rows = ["| format | accepted path | reader |", "|---|---|---|"]
    for r in EXTRACTION_READERS.values():
        accepts = r.accepts.replace("|", "\\|")
        rows.append(f"| `{r.name}` | {accepts} | `{__package__}.{r.module}.{r.function}` |")
    return "\n".join(rows) + "\n"


def detect_extraction_format(path: str | Path) -> str:
    """The extraction format of ``path`` from its name and, for folders / HDF5, its contents:
    the first row of :data:`EXTRACTION_READERS` whose ``detect`` accepts it."""
    path = Path(path)
    for reader in EXTRACTION_READERS.values():
        if reader.detect(path):
            return reader.name
    suffix = path.suffix.lower()
    if path.is_dir():
        raise ValueError(
            f"{path}: folder is neither a Suite2p output (stat.npy, or plane*/"
            f"stat.npy) nor a minian output (A.zarr, C.zarr); pass --format one of "
            f"{', '.join(EXTRACTION_FORMATS)}"
        )
    if suffix in _HDF5_SUFFIXES:
        raise ValueError(
            f"{path}: HDF5 file without an 'estimates' group (CaImAn) or MATLAB "
            f"header (EXTRACT); pass --format"
        )
    raise ValueError(
        f"{path}: unknown extraction format {suffix or '(no extension)'!r}; "
        f"supported: {_formats_text()}"
    )


def read_extraction(
    path: str | Path,
    *,
    format: str = "auto",
    config: IngestConfig = IngestConfig(),
    hw: tuple[int, int] | None = None,
    progress: bool = False,
    movie_shape: tuple[int, int, int] | None = None,
) -> Candidates:
    """Read an extraction output into :class:`Candidates`.

    path : file or folder (see :data:`EXTRACTION_READERS`).
    format : 'auto' (from the path) or one of :data:`EXTRACTION_FORMATS`.
    config : ingest parameters (``suite2p_trace``, ``neuropil_coefficient``, ``caiman_trace``).
    hw : (H, W) of the field of view, needed only when the source does not record it (an
        EXTRACT 2-D sparse matrix without a summary image, NWB pixel masks without an image);
        otherwise :class:`MissingShapeError` is raised.
    progress : show a progress bar for long reads.
    movie_shape : the movie's shape (sizes in any axis order), when known: readers whose
        field of view comes from a header (Suite2p ops Ly / Lx, CaImAn dims, .npz height /
        width) check it against these sizes before allocating anything of that size.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: extraction output not found")
    fmt = detect_extraction_format(path) if format in (None, "auto") else format
    reader = EXTRACTION_READERS.get(fmt)
    if reader is None:
        raise ValueError(
            f"{path}: unknown extraction format {fmt!r}; expected one of "
            f"{', '.join(EXTRACTION_FORMATS)} or auto"
        )
    if reader.folder is not None and path.is_dir() != reader.folder:
        raise ValueError(
            f"{path}: a {'folder' if path.is_dir() else 'file'}, but --format {fmt} reads a "
            f"{'folder' if reader.folder else 'file'} ({reader.accepts})"
        )
    cands = reader.read(path, config=config, hw=hw, progress=progress, movie_shape=movie_shape)
    log.info(
        "read %s output %s: %d candidates, %d frames, %d x %d pixels",
        fmt,
        path,
        cands.n_candidates,
        cands.n_frames,
        cands.height,
        cands.width,
    )
    return cands
