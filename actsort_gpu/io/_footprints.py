"""Helpers the extraction readers share: footprints as (N, H*W) CSR, per-candidate metrics, and
:class:`MissingShapeError`.

A leaf module: it imports no reader and not :mod:`.extraction` (which imports the readers).
Footprints are built as CSR directly from pixel lists or sparse matrices (dense 3-D sources are
converted in blocks of candidates), so memory is proportional to the non-zeros. scipy is
imported on first use: the CLI imports :mod:`.extraction` (hence this module) for its choices.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

log = logging.getLogger(__name__)

__all__ = [
    "MAX_PIXELS",
    "MissingShapeError",
    "as_metric",
    "check_compressed",
    "check_fov",
    "check_sparse",
    "csr_from_dense_blocks",
    "csr_from_pixel_lists",
    "fortran_pixels_to_c",
]


#: largest field of view (H * W pixels): the store keeps pixel indices as int32
MAX_PIXELS = 2**31 - 1
#: bytes of one dense block of footprints read at a time (csr_from_dense_blocks)
_DENSE_BLOCK_BYTES = 256 * 2**20


class MissingShapeError(ValueError):
    """The source does not record the field of view (H, W): pass ``hw`` (e.g. from the movie)."""


def check_fov(
    height, width, where: str, movie_shape: tuple[int, ...] | None = None
) -> tuple[int, int]:
    """(H, W) as ints, checked before anything proportional to H * W is allocated.

    Positive, at most :data:`MAX_PIXELS` pixels, and, given ``movie_shape`` (the movie's 3
    sizes, in any axis order: readers of HDF5 / zarr movies need (H, W) to find the order),
    no larger than the movie allows: H and W at most its largest size, H * W at most the
    product of its two largest sizes. A header that lies about its size (Suite2p ops.npy
    Ly / Lx) thus fails at once, naming ``where``, instead of after allocating gigabytes; the
    cost of anything allocated later is bounded by the movie's size. The exact (H, W) match
    with the movie is checked by ingest, with its own message.
    """
    try:
        h, w = int(height), int(width)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(
            f"{where}: height and width must be integers, got {height!r} x {width!r}"
        ) from exc
    if h < 1 or w < 1 or h * w > MAX_PIXELS:
        raise ValueError(
            f"{where}: field of view {h} x {w} pixels is not plausible (expected positive "
            f"sizes, at most {MAX_PIXELS:,} pixels)"
        )
    if movie_shape is not None:
        sizes = sorted(int(v) for v in movie_shape)
        if max(h, w) > sizes[-1] or h * w > sizes[-1] * sizes[-2]:
            raise ValueError(
                f"{where}: field of view {h} x {w} pixels is larger than the movie, of shape "
                f"{tuple(int(v) for v in movie_shape)}, allows; is this the extraction output "
                f"of this movie?"
            )
    return h, w


def check_compressed(
    indptr, indices, data, n_major: int, n_minor: int, where: str, what: str = "footprints"
) -> None:
    """Check the parts of a CSR (or CSC) matrix before scipy touches them.

    scipy trusts its inputs: an index >= n_minor or a decreasing ``indptr`` corrupts memory
    (segfaults) in later operations. Checks, naming ``where`` and ``what``: 1-D parts, integer
    ``indptr`` / ``indices`` and numeric ``data``, ``len(indptr) == n_major + 1``,
    ``indptr[0] == 0``, ``indptr`` non-decreasing, ``indptr[-1] == nnz == len(data)``,
    ``0 <= indices < n_minor``. O(nnz), no copy of the parts.
    """
    parts = {"indptr": np.asarray(indptr), "indices": np.asarray(indices), "data": np.asarray(data)}
    for name, arr in parts.items():
        kinds = "biuf" if name == "data" else "iu"
        if arr.ndim != 1 or arr.dtype.kind not in kinds:
            raise ValueError(
                f"{where}: {what} {name} has shape {arr.shape} and dtype {arr.dtype}; expected "
                f"a 1-D array of {'numbers' if name == 'data' else 'integers'}"
            )
    indptr, indices, data = parts["indptr"], parts["indices"], parts["data"]
    if len(indptr) != int(n_major) + 1:
        raise ValueError(
            f"{where}: {what} indptr has {len(indptr)} entries, expected {int(n_major) + 1} "
            f"(one per row plus one)"
        )
    if len(indices) != len(data):
        raise ValueError(f"{where}: {what} has {len(indices)} indices but {len(data)} data values")
    if indptr[0] != 0:
        raise ValueError(f"{where}: {what} indptr starts at {indptr[0]}, expected 0")
    steps = np.diff(indptr)
    if (steps < 0).any():
        k = int(np.flatnonzero(steps < 0)[0])
        raise ValueError(
            f"{where}: {what} indptr decreases at row {k} ({indptr[k]} -> {indptr[k + 1]}); "
            f"it must be non-decreasing"
        )
    if indptr[-1] != len(indices):
        raise ValueError(
            f"{where}: {what} indptr ends at {indptr[-1]} but there are {len(indices)} "
            f"non-zeros (indptr[-1] must equal nnz)"
        )
    if len(indices):
        lo, hi = indices.min(), indices.max()
        if lo < 0 or hi >= n_minor:
            bad = int(lo) if lo < 0 else int(hi)
            raise ValueError(
                f"{where}: {what} has index {bad} outside [0, {int(n_minor)}) (pixel indices "
                f"must be < height x width)"
            )


def check_sparse(matrix, where: str, what: str = "footprints") -> None:
    """:func:`check_compressed` on a scipy CSR / CSC matrix read from a file."""
    fmt = getattr(matrix, "format", None)
    if fmt not in ("csr", "csc"):
        return  # other formats are checked by scipy when built
    major, minor = matrix.shape if fmt == "csr" else matrix.shape[::-1]
    check_compressed(matrix.indptr, matrix.indices, matrix.data, major, minor, where, what)


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
    import scipy.sparse as sp

    if not len(rows) == len(cols) == len(weights):
        raise ValueError(
            f"{where}: {len(rows)} row lists, {len(cols)} column lists and {len(weights)} "
            f"weight lists; expected one of each per candidate"
        )
    for k, (rr, cc, ww) in enumerate(zip(rows, cols, weights)):
        if not np.ndim(rr) == np.ndim(cc) == np.ndim(ww) == 1 or not len(rr) == len(cc) == len(ww):
            raise ValueError(
                f"{where}: candidate {k} has {np.size(rr)} row, {np.size(cc)} column and "
                f"{np.size(ww)} weight values; expected three 1-D lists of equal length"
            )
    counts = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    try:
        r = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols).astype(np.int64) if cols else np.zeros(0, np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: pixel rows / columns are not integers ({exc})") from exc
    bad = (r < 0) | (r >= height) | (c < 0) | (c >= width)
    if bad.any():
        k = int(np.searchsorted(indptr, np.flatnonzero(bad)[0], side="right") - 1)
        raise ValueError(
            f"{where}: candidate {k} has pixels outside the {height} x {width} "
            f"field of view (e.g. row {r[bad][0]}, col {c[bad][0]})"
        )
    try:
        data = np.concatenate(weights).astype(np.float32) if weights else np.zeros(0, np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: pixel weights are not numbers ({exc})") from exc
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
    import scipy.sparse as sp
    from tqdm.auto import tqdm

    # bounded memory whatever H x W: a block of candidates is read densely
    block = max(1, min(int(block), _DENSE_BLOCK_BYTES // max(4 * height * width, 1)))
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
    import scipy.sparse as sp

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
