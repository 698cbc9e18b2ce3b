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
    "MissingShapeError",
    "as_metric",
    "csr_from_dense_blocks",
    "csr_from_pixel_lists",
    "fortran_pixels_to_c",
]


class MissingShapeError(ValueError):
    """The source does not record the field of view (H, W): pass ``hw`` (e.g. from the movie)."""


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
    import scipy.sparse as sp
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
