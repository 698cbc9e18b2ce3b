"""Per-candidate geometry: centres, outlines, neighbours and crop windows (reference section 2,
steps 3 and 5-7), computed from the max-normalised CSR footprints of the store.

Coordinates are 0-based (row, col) pixel centres. Deliberate differences from ActSort
(docs/differences.md): the neighbour test excludes only the candidate itself (ActSort B9 used
"centre x differs AND centre y differs", dropping candidates sharing one coordinate).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

log = logging.getLogger(__name__)

__all__ = ["Geometry", "compute_geometry", "centers_from_footprints", "trace_boundary",
           "outline_from_mask", "find_neighbors", "crop_windows"]

# Moore neighbourhood in clockwise order on screen (row down, col right), starting west.
_DIRS = np.array([(0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1)])


@dataclass
class Geometry:
    """Geometry of N candidates.

    centers : (N, 2) float32 (row, col), NaN for empty footprints.
    outlines : list of N (M_i, 2) float32 arrays of (row, col), NaN rows between boundaries.
    neighbors : list of N int32 arrays of neighbour indices.
    crops : (N, 4) int32 (row0, row1, col0, col1), half-open; (0, 0, 0, 0) for empty footprints.
    """

    centers: np.ndarray
    outlines: list
    neighbors: list
    crops: np.ndarray


def centers_from_footprints(fp: sp.csr_matrix, width: int) -> np.ndarray:
    """Unweighted mean (row, col) of the pixels with footprint > 0 (ActSort find_center)."""
    fp = sp.csr_matrix(fp)
    pos = fp.data > 0
    rows_of = np.repeat(np.arange(fp.shape[0]), np.diff(fp.indptr))[pos]
    idx = fp.indices[pos].astype(np.int64)
    n = fp.shape[0]
    count = np.bincount(rows_of, minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.bincount(rows_of, weights=idx // width, minlength=n) / count
        c = np.bincount(rows_of, weights=idx % width, minlength=n) / count
    return np.stack([r, c], axis=1).astype(np.float32)


def trace_boundary(mask: np.ndarray) -> np.ndarray:
    """Moore-neighbour trace of the outer boundary of the single 8-connected object in ``mask``.

    Starts at the first object pixel in column-major order (as MATLAB ``bwboundaries``), goes
    clockwise, and returns the closed list of (row, col) pixel positions (first point repeated
    at the end; a one-pixel object gives two identical points). int64 (M, 2).
    """
    cols = np.flatnonzero(mask.any(axis=0))
    c0 = int(cols[0])
    r0 = int(np.flatnonzero(mask[:, c0])[0])
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    start = (r0 + 1, c0 + 1)
    out = [start]
    cur = start
    back = 0                       # direction index pointing to the (background) west pixel
    second = None
    for _ in range(4 * mask.size + 8):
        found = None
        for k in range(1, 9):
            d = (back + k) % 8
            cand = (cur[0] + _DIRS[d][0], cur[1] + _DIRS[d][1])
            if padded[cand]:
                found, fd = cand, d
                break
        if found is None:          # isolated pixel
            out.append(cur)
            break
        if cur == start and second is not None and found == second:
            break
        if second is None:
            second = found
        # backtrack: the neighbour checked just before ``found``, seen from ``found``
        prev = ((fd + 7) % 8)
        pr = (cur[0] + _DIRS[prev][0], cur[1] + _DIRS[prev][1])
        delta = (pr[0] - found[0], pr[1] - found[1])
        back = int(np.flatnonzero((_DIRS[:, 0] == delta[0]) & (_DIRS[:, 1] == delta[1]))[0])
        cur = found
        out.append(cur)
    pts = np.asarray(out, dtype=np.int64) - 1
    return pts


def _smooth3(x: np.ndarray) -> np.ndarray:
    """MATLAB ``smooth(x, 3)``: span-3 moving average, first and last samples unchanged."""
    y = x.astype(np.float64).copy()
    if len(x) > 2:
        y[1:-1] = (x[:-2] + x[1:-1] + x[2:]) / 3.0
    return y


def outline_from_mask(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Outer boundaries of every 8-connected object of ``mask`` (``bwboundaries 'noholes'``),
    each smoothed (span 3) and rounded (half away from zero) like ActSort find_boundary,
    concatenated with NaN rows between boundaries; returned as (M, 2) float32 (row, col)
    shifted by ``offset``.
    """
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2), np.float32)
    # order objects like bwlabel: by first pixel in column-major order
    first = ndimage.minimum(np.arange(mask.size).reshape(mask.shape, order="F"), labels,
                            index=np.arange(1, n + 1))
    pieces = []
    for lab in np.argsort(first) + 1:
        filled = ndimage.binary_fill_holes(labels == lab)
        pts = trace_boundary(filled)
        r = np.floor(_smooth3(pts[:, 0]) + 0.5) + offset[0]
        c = np.floor(_smooth3(pts[:, 1]) + 0.5) + offset[1]
        if pieces:
            pieces.append(np.full((1, 2), np.nan))
        pieces.append(np.stack([r, c], axis=1))
    return np.concatenate(pieces).astype(np.float32)


def _outlines(fp: sp.csr_matrix, height: int, width: int, threshold: float) -> list:
    out = []
    for i in range(fp.shape[0]):
        lo, hi = fp.indptr[i], fp.indptr[i + 1]
        idx = fp.indices[lo:hi][fp.data[lo:hi] >= threshold].astype(np.int64)
        if idx.size == 0:
            out.append(np.zeros((0, 2), np.float32))
            continue
        r, c = idx // width, idx % width
        r0, c0 = int(r.min()), int(c.min())
        mask = np.zeros((int(r.max()) - r0 + 1, int(c.max()) - c0 + 1), bool)
        mask[r - r0, c - c0] = True
        out.append(outline_from_mask(mask, (r0, c0)))
    return out


def _bbox(outlines: list) -> np.ndarray:
    """(N, 4) float64 (rmin, rmax, cmin, cmax) of each outline; NaN when it has no point."""
    box = np.full((len(outlines), 4), np.nan)
    for i, o in enumerate(outlines):
        if len(o) and np.isfinite(o).any():
            box[i] = (np.nanmin(o[:, 0]), np.nanmax(o[:, 0]), np.nanmin(o[:, 1]),
                      np.nanmax(o[:, 1]))
    return box


def find_neighbors(centers: np.ndarray, box: np.ndarray, height: int, width: int,
                   margin: int) -> list:
    """Neighbours of each candidate: the other candidates whose centre lies strictly inside its
    outline box +/- ``margin`` px (clipped to the FOV). The candidate itself is excluded by
    index (ActSort's B9 fix). centers (N, 2) (row, col); box (N, 4) from the outlines.
    """
    n = len(centers)
    valid = np.flatnonzero(np.isfinite(centers).all(axis=1))
    order = valid[np.argsort(centers[valid, 0], kind="stable")]
    rows_sorted = centers[order, 0]
    out = []
    for i in range(n):
        if not np.isfinite(box[i]).all():
            out.append(np.zeros(0, np.int32))
            continue
        r_lo = max(box[i, 0] - margin, 0)
        r_hi = min(box[i, 1] + margin, height - 1)
        c_lo = max(box[i, 2] - margin, 0)
        c_hi = min(box[i, 3] + margin, width - 1)
        a = np.searchsorted(rows_sorted, r_lo, side="right")
        b = np.searchsorted(rows_sorted, r_hi, side="left")
        cand = order[a:b]
        cc = centers[cand, 1]
        cand = cand[(cc > c_lo) & (cc < c_hi) & (cand != i)]
        out.append(np.sort(cand).astype(np.int32))
    return out


def crop_windows(box: np.ndarray, neighbors: list, height: int, width: int,
                 margin: int) -> np.ndarray:
    """Crop (row0, row1, col0, col1), half-open: the outline box +/- margin widened to contain
    every neighbour's outline, clipped to the FOV (ActSort find_limits, 0-based)."""
    n = len(box)
    crops = np.zeros((n, 4), np.int32)
    for i in range(n):
        if not np.isfinite(box[i]).all():
            continue
        lo_r, hi_r = box[i, 0] - margin, box[i, 1] + margin
        lo_c, hi_c = box[i, 2] - margin, box[i, 3] + margin
        nb = neighbors[i]
        if len(nb):
            nbox = box[nb]
            nbox = nbox[np.isfinite(nbox).all(axis=1)]
            if len(nbox):
                lo_r, hi_r = min(lo_r, nbox[:, 0].min()), max(hi_r, nbox[:, 1].max())
                lo_c, hi_c = min(lo_c, nbox[:, 2].min()), max(hi_c, nbox[:, 3].max())
        r0 = int(np.clip(lo_r, 0, height - 1))
        r1 = int(np.clip(hi_r, 0, height - 1)) + 1
        c0 = int(np.clip(lo_c, 0, width - 1))
        c1 = int(np.clip(hi_c, 0, width - 1)) + 1
        crops[i] = (r0, r1, c0, c1)
    return crops


def compute_geometry(footprints: sp.csr_matrix, height: int, width: int, *,
                     threshold: float = 0.05, margin: int = 7) -> Geometry:
    """Centres, outlines, neighbours and crops of all candidates (footprints (N, H*W) CSR,
    max-normalised)."""
    fp = sp.csr_matrix(footprints)
    centers = centers_from_footprints(fp, width)
    outlines = _outlines(fp, height, width, threshold)
    box = _bbox(outlines)
    neighbors = find_neighbors(centers, box, height, width, margin)
    crops = crop_windows(box, neighbors, height, width, margin)
    return Geometry(centers, outlines, neighbors, crops)
