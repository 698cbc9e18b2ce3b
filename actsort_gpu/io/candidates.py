"""``Candidates``: what every extraction reader returns, validated at the boundary."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._footprints import check_sparse

log = logging.getLogger(__name__)

__all__ = [
    "Candidates",
    "RowBlockTraces",
    "TRACE_BLOCK_VALUES",
    "hdf5_row_traces",
    "trace_row_blocks",
]

#: values of a trace matrix that block-wise passes over it handle at a time (64 MB of float32):
#: a whole-matrix temporary at 100,000 x 10,000 would be another 1-4 GB
TRACE_BLOCK_VALUES = 1 << 24


def trace_row_blocks(n_rows: int, n_frames: int, *, mapped=None, align: int = 1) -> Iterator[slice]:
    """Slices of the rows of an (n_rows, n_frames) trace matrix, each of at most
    :data:`TRACE_BLOCK_VALUES` values (at least one row), or a multiple of ``align`` rows
    (the store's chunk rows: whole chunks are written).

    mapped : a C-ordered ``np.memmap`` whose rows the loop reads: once the loop body is done
        with a block, that block's pages leave the resident set (``io.direct.release_memmap``),
        so a pass over a mapped matrix never holds all of it.
    """
    from .direct import release_memmap

    align = max(int(align), 1)
    step = max(1, TRACE_BLOCK_VALUES // max(int(n_frames), 1))
    step = max(align, step - step % align)
    for r0 in range(0, int(n_rows), step):
        rows = slice(r0, min(r0 + step, int(n_rows)))
        yield rows
        release_memmap(mapped, rows)


class RowBlockTraces:
    """An (n_candidates, n_frames) float32 trace matrix computed block by block from files,
    never held whole: ``traces[rows]`` (a contiguous slice of rows) computes those rows with
    ``block(rows)``; ``np.asarray(traces)`` computes them all (small data, tests). A reader
    returns one for a trace it derives from mapped files (Suite2p's ``F - 0.7 Fneu``);
    ingest reads it by blocks of rows like a memory-mapped matrix.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, shape: tuple[int, int], block: Callable[[slice], np.ndarray]):
        self.shape = (int(shape[0]), int(shape[1]))
        self._block = block

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("RowBlockTraces: only a contiguous slice of rows")
        rows = slice(*rows.indices(self.shape[0])[:2])
        return np.asarray(self._block(rows), dtype=np.float32).reshape(-1, self.shape[1])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, np.float32)
        for rows in trace_row_blocks(*self.shape):
            out[rows] = self[rows]
        return out if dtype is None else out.astype(dtype, copy=False)


def _is_mapped(values) -> bool:
    """Whether ``values`` is a numeric 2-D ``np.memmap`` still backed by its file (not an
    in-memory copy of one, which NumPy also types as ``np.memmap``)."""
    return (
        isinstance(values, np.memmap)
        and getattr(values, "_mmap", None) is not None
        and values.ndim == 2
        and values.dtype.kind in "biuf"
    )


def mapped_row_traces(mapped: np.memmap):
    """A memory-mapped (N, T) trace matrix as ingest reads it, never whole: a float32
    C-ordered map as it is (ingest releases each block's pages), any other (float64, integer,
    or Fortran-ordered as ``numpy.savez`` writes a transposed array) as a
    :class:`RowBlockTraces` whose blocks are float32 copies.

    A C-ordered map's pages are released block by block. In a Fortran-ordered map a block of
    rows is a run of each column: with the blocks ingest reads (16 M values: 1,677 rows of
    10,000 frames) each run spans a few pages, so the file is read about once, but pages at
    the runs' ends serve two blocks; they are released when the last rows are read
    (``direct.release_memmap``; file pages, which the kernel reclaims under pressure, unlike
    a whole copy in memory).
    """
    from .direct import release_memmap

    if mapped.dtype == np.float32 and mapped.flags.c_contiguous:
        return mapped

    def block(rows: slice) -> np.ndarray:
        with np.errstate(over="ignore"):  # beyond float32: Inf, as ingest counts it
            out = np.array(mapped[rows], dtype=np.float32, order="C")
        release_memmap(mapped, rows)
        return out

    return RowBlockTraces(mapped.shape, block)


def hdf5_row_traces(
    path: Path,
    datasets: Sequence[str],
    shape: tuple[int, int],
    *,
    frames_first: bool = False,
    source_rows: np.ndarray | None = None,
) -> RowBlockTraces:
    """The (N, T) sum of the HDF5 ``datasets`` of ``path``, read by blocks of candidates as
    ingest writes them: each block's datasets converted to float32, then added (the values of
    the whole-matrix expression). A block that cannot be read (a file corrupt, or changed since
    it was opened) raises OSError naming the file.

    frames_first : the datasets are stored (T, S), one column per source trace (NWB's
        ``RoiResponseSeries``, a MATLAB N x T matrix): a block reads its columns, so the file's
        matrix is never transposed whole (a block of ~1,700 columns of a contiguous
        100,000-column dataset reads in about a tenth of a second).
    source_rows : (S,) int64, distinct: the candidate row of each source trace (an NWB series
        over some of the table's ROIs, in any order); candidates without one are NaN. None:
        the identity (S == N). A block reads the source traces of its candidates: one run of
        them when the rows increase, else those of its rows, in file order.
    """
    n, n_frames = int(shape[0]), int(shape[1])
    order = None  # source positions sorted by candidate row, when the rows do not increase
    if source_rows is not None:
        source_rows = np.asarray(source_rows, dtype=np.int64)
        if len(np.unique(source_rows)) != len(source_rows):
            raise ValueError("hdf5_row_traces: source_rows must be distinct")
        if np.any(np.diff(source_rows) <= 0):
            order = np.argsort(source_rows, kind="stable")
    sorted_rows = source_rows if order is None else source_rows[order]

    def block(rows: slice) -> np.ndarray:
        import h5py

        # the source traces of these rows: a run [lo, hi), or positions in increasing order
        if source_rows is None:
            cols = slice(rows.start, rows.stop)
        else:
            lo, hi = np.searchsorted(sorted_rows, [rows.start, rows.stop])
            cols = slice(lo, hi) if order is None else np.sort(order[lo:hi])
            full = np.full((rows.stop - rows.start, n_frames), np.nan, np.float32)
            if len(source_rows[cols]) == 0:  # none of these rows has a trace
                return full
        try:
            with h5py.File(path, "r") as f:
                parts = []
                for name in datasets:
                    data = f[name]
                    part = data[:, cols].T if frames_first else data[cols]
                    parts.append(np.ascontiguousarray(part, dtype=np.float32))
        except (OSError, KeyError, ValueError) as exc:
            raise OSError(
                f"{path}: cannot read rows {rows.start}-{rows.stop} of {' + '.join(datasets)} "
                f"(corrupt, or changed since it was opened?): {exc}"
            ) from exc
        out = parts[0]  # a fresh array from h5py: summed in place
        for part in parts[1:]:
            out += part
        if source_rows is None:
            return out
        full[source_rows[cols] - rows.start] = out
        return full

    return RowBlockTraces((n, n_frames), block)


@dataclass
class Candidates:
    """Cell candidates proposed by an extraction program.

    footprints : (n_candidates, height * width) CSR float32, the source's scale; pixel index
        = row * width + col (C order).
    traces : (n_candidates, n_frames) float32, the source's units and frame rate: an array, a
        read-only ``np.memmap`` of the source file, or a :class:`RowBlockTraces`.
    height, width : field of view in pixels.
    source_format : 'extract' | 'suite2p' | 'caiman' | 'minian' | 'nwb' | 'npz'.
    source_path : the file or folder read.
    metrics : name -> (n_candidates,) float32 values the source computed (Suite2p iscell
        probability, CaImAn SNR, ...).
    images : name -> (h, w) float32 summary images of the source.
    fs_hz : frame rate of the traces when the source records it.
    source_index : (n_candidates,) int64 index of each candidate in the source.
    movie_layout : what the source says about the movie's pages, when it interleaves channels
        or planes (Suite2p ops): ``io.movies.Interleave`` of the channel and plane it was
        extracted from; None otherwise.
    registration_shift_px : the largest frame shift the source's motion registration applied
        (Suite2p ops ``yoff`` / ``xoff``), None when unknown; registered_movie : the
        registered movie it wrote (Suite2p's ``data.bin``), None when it kept none. Footprints
        and traces are in the registered frames: ingest warns when another movie is given
        after a large shift.
    """

    footprints: sp.csr_matrix
    traces: np.ndarray
    height: int
    width: int
    source_format: str
    source_path: Path
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    fs_hz: float | None = None
    source_index: np.ndarray | None = None
    movie_layout: object | None = None
    registration_shift_px: float | None = None
    registered_movie: Path | None = None

    def __post_init__(self):
        where = str(self.source_path)
        if sp.issparse(self.footprints):
            check_sparse(self.footprints, where)  # before scipy works on parts from a file
        self.footprints = sp.csr_matrix(self.footprints, dtype=np.float32)
        # a memory-mapped matrix (.npy, stored .npz member) stays mapped and a RowBlockTraces
        # uncomputed: ingest reads them by blocks of rows
        if _is_mapped(self.traces):
            self.traces = mapped_row_traces(self.traces)
        lazy = isinstance(self.traces, (np.memmap, RowBlockTraces))
        traces = self.traces if lazy else np.asarray(self.traces)
        if traces.dtype.kind not in "biuf":
            raise ValueError(f"{where}: traces have dtype {traces.dtype}, expected numbers")
        self.traces = (
            traces if isinstance(traces, RowBlockTraces) else traces.astype(np.float32, copy=False)
        )
        n = self.footprints.shape[0]
        if self.footprints.shape[1] != self.height * self.width:
            raise ValueError(
                f"{where}: footprints have {self.footprints.shape[1]} pixels, "
                f"expected {self.height} x {self.width} = {self.height * self.width}"
            )
        if self.traces.ndim != 2 or self.traces.shape[0] != n:
            raise ValueError(
                f"{where}: traces have shape {self.traces.shape}, expected "
                f"({n}, n_frames): one trace per footprint"
            )
        for name, values in self.metrics.items():
            if np.shape(values) != (n,) or np.asarray(values).dtype.kind not in "biuf":
                raise ValueError(
                    f"{where}: metric {name!r} has shape {np.shape(values)} and dtype "
                    f"{np.asarray(values).dtype}, expected ({n},) numbers"
                )
        for name, image in self.images.items():
            if np.ndim(image) != 2 or np.asarray(image).dtype.kind not in "biuf":
                raise ValueError(
                    f"{where}: image {name!r} has shape {np.shape(image)} and dtype "
                    f"{np.asarray(image).dtype}, expected a 2-D array of numbers"
                )
        if self.fs_hz is not None and not (np.isfinite(self.fs_hz) and self.fs_hz > 0):
            log.warning("%s: frame rate %r is not a positive number; ignored", where, self.fs_hz)
            self.fs_hz = None
        if self.source_index is None:
            self.source_index = np.arange(n, dtype=np.int64)

    @property
    def n_candidates(self) -> int:
        return self.footprints.shape[0]

    @property
    def n_frames(self) -> int:
        return self.traces.shape[1]
