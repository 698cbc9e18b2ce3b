"""Extraction outputs -> one :class:`~actsort_gpu.io.candidates.Candidates`.

``read_extraction(path)`` picks the reader from the path (``format`` overrides):

| format | path | reader |
|---|---|---|
| ``suite2p`` | plane folder (``stat.npy`` ...), ``suite2p/`` with ``plane0``, ``stat.npy`` | \
:mod:`.suite2p` |
| ``extract`` | ``.mat`` (v5/v7 via scipy, v7.3 via h5py) | :mod:`.extract_mat` |
| ``caiman`` | ``.hdf5``/``.h5`` with ``estimates/A`` | :mod:`.caiman` |
| ``minian`` | folder with ``A.zarr``/``C.zarr``, or a zarr group with ``A``, ``C`` | \
:mod:`.minian` |
| ``nwb`` | ``.nwb`` (needs the ``nwb`` extra: pynwb) | :mod:`.nwb` |
| ``npz`` | ``.npz`` generic layout | :mod:`.npz` |

Footprints are built as CSR directly from pixel lists or sparse matrices (dense 3-D sources
are converted in blocks of candidates), so memory is proportional to the non-zeros.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..config import IngestConfig
from .candidates import Candidates

log = logging.getLogger(__name__)

__all__ = ["read_extraction", "detect_extraction_format", "EXTRACTION_FORMATS", "MissingShapeError"]

EXTRACTION_FORMATS = ("suite2p", "extract", "caiman", "minian", "nwb", "npz")


class MissingShapeError(ValueError):
    """The source does not record the field of view (H, W): pass ``hw`` (e.g. from the movie)."""


def _has_zarr_meta(path: Path) -> bool:
    return any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zarray"))


def detect_extraction_format(path: str | Path) -> str:
    """The extraction format of ``path`` from its name and, for folders / HDF5, its contents."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        if (path / "stat.npy").is_file() or any(path.glob("plane*/stat.npy")):
            return "suite2p"
        if (path / "A.zarr").exists() or (_has_zarr_meta(path) and (path / "A").exists()):
            return "minian"
        raise ValueError(
            f"{path}: folder is neither a Suite2p output (stat.npy, or plane*/"
            f"stat.npy) nor a minian output (A.zarr, C.zarr); pass --format one of "
            f"{', '.join(EXTRACTION_FORMATS)}"
        )
    if path.name == "stat.npy":
        return "suite2p"
    if suffix == ".mat":
        return "extract"
    if suffix in (".hdf5", ".h5", ".hdf"):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "estimates" in f:
                    return "caiman"
        except OSError as exc:
            raise OSError(f"{path}: not a readable HDF5 file ({exc})") from exc
        if path.open("rb").read(19) == b"MATLAB 7.3 MAT-file":
            return "extract"
        raise ValueError(
            f"{path}: HDF5 file without an 'estimates' group (CaImAn) or MATLAB "
            f"header (EXTRACT); pass --format"
        )
    if suffix == ".nwb":
        return "nwb"
    if suffix == ".npz":
        return "npz"
    if suffix == ".zarr":
        return "minian"
    raise ValueError(
        f"{path}: unknown extraction format {suffix or '(no extension)'!r}; "
        f"supported: Suite2p folder or stat.npy, EXTRACT .mat, CaImAn .hdf5, minian "
        f"folder/.zarr, .nwb, .npz (formats: {', '.join(EXTRACTION_FORMATS)})"
    )


def read_extraction(
    path: str | Path,
    *,
    format: str = "auto",
    config: IngestConfig = IngestConfig(),
    hw: tuple[int, int] | None = None,
    progress: bool = False,
) -> Candidates:
    """Read an extraction output into :class:`Candidates`.

    path : file or folder (see the module table).
    format : 'auto' (from the path) or one of :data:`EXTRACTION_FORMATS`.
    config : ingest parameters (``suite2p_trace``, ``neuropil_coefficient``, ``caiman_trace``).
    hw : (H, W) of the field of view, needed only when the source does not record it (an
        EXTRACT 2-D sparse matrix without a summary image, NWB pixel masks without an image);
        otherwise :class:`MissingShapeError` is raised.
    progress : show a progress bar for long reads.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: extraction output not found")
    fmt = detect_extraction_format(path) if format in (None, "auto") else format
    if fmt == "suite2p":
        from .suite2p import read_suite2p

        cands = read_suite2p(path, config=config, progress=progress)
    elif fmt == "extract":
        from .extract_mat import read_extract_mat

        cands = read_extract_mat(path, hw=hw, progress=progress)
    elif fmt == "caiman":
        from .caiman import read_caiman

        cands = read_caiman(path, config=config)
    elif fmt == "minian":
        from .minian import read_minian

        cands = read_minian(path, progress=progress)
    elif fmt == "nwb":
        from .nwb import read_nwb

        cands = read_nwb(path, hw=hw)
    elif fmt == "npz":
        from .npz import read_npz

        cands = read_npz(path)
    else:
        raise ValueError(
            f"{path}: unknown extraction format {fmt!r}; expected one of "
            f"{', '.join(EXTRACTION_FORMATS)} or auto"
        )
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


# ---------------------------------------------------------------- helpers shared by readers
def csr_from_pixel_lists(
    rows: list[np.ndarray],
    cols: list[np.ndarray],
    weights: list[np.ndarray],
    height: int,
    width: int,
    where: str,
) -> sp.csr_matrix:
    """(N, H*W) CSR float32 from per-candidate pixel lists (duplicates summed, indices sorted).

    Pixels outside the field of view raise a ValueError naming the candidate.
    """
    counts = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    r = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols).astype(np.int64) if cols else np.zeros(0, np.int64)
    bad = (r < 0) | (r >= height) | (c < 0) | (c >= width)
    if bad.any():
        k = int(np.searchsorted(indptr, np.flatnonzero(bad)[0], side="right") - 1)
        raise ValueError(
            f"{where}: candidate {k} has pixels outside the {height} x {width} "
            f"field of view (e.g. row {r[bad][0]}, col {c[bad][0]})"
        )
    data = np.concatenate(weights).astype(np.float32) if weights else np.zeros(0, np.float32)
    m = sp.csr_matrix((data, r * width + c, indptr), shape=(len(rows), height * width))
    m.sum_duplicates()
    return m


def csr_from_dense_blocks(
    get_block,
    n: int,
    height: int,
    width: int,
    *,
    block: int = 256,
    progress: bool = False,
    desc: str = "footprints",
) -> sp.csr_matrix:
    """(N, H*W) CSR float32 from a dense source read ``block`` candidates at a time.

    get_block(k0, k1) -> (k1 - k0, H, W) array in C (row, col) order.
    """
    from tqdm.auto import tqdm

    parts = []
    for k0 in tqdm(
        range(0, n, block), desc=desc, disable=not progress or n <= block, unit_scale=block
    ):
        b = np.asarray(get_block(k0, min(n, k0 + block)), dtype=np.float32)
        parts.append(sp.csr_matrix(b.reshape(b.shape[0], height * width)))
    return (
        sp.vstack(parts, format="csr")
        if parts
        else sp.csr_matrix((0, height * width), dtype=np.float32)
    )


def fortran_pixels_to_c(pixels_by_candidates, height: int, width: int) -> sp.csr_matrix:
    """(H*W, N) sparse with Fortran (column-major) pixel order -> (N, H*W) CSR in C order."""
    csr = sp.csr_matrix(sp.csc_matrix(pixels_by_candidates).T, dtype=np.float32)
    p = csr.indices.astype(np.int64)
    csr.indices = ((p % height) * width + p // height).astype(csr.indices.dtype)
    csr.has_sorted_indices = False
    csr.sort_indices()
    return csr


def as_metric(values, n: int, name: str, where: str) -> np.ndarray | None:
    """(n,) float32 metric, or None (logged) when the source's array does not fit."""
    try:
        arr = np.asarray(values, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        log.info("%s: metric %s is not numeric; skipped", where, name)
        return None
    if arr.shape != (n,):
        log.info("%s: metric %s has %d values for %d candidates; skipped", where, name, arr.size, n)
        return None
    return arr
