"""Spatial features 37-46 of ActSort (footprint only; docs/actsort_reference.md section 3.2).

Columns returned by :func:`spatial_columns` (raw values: NaN/Inf where the reference produces
them; the feature driver applies the NaN/Inf policy once), by name:

==  ==================  ==================================================================
#   name                definition (S = the max-normalised footprint on the H x W FOV)
==  ==================  ==================================================================
37  area                number of pixels with S > 0.1
38  multiple_bodies     k = number of 8-connected components of ``imbinarize(S, 'adaptive')``
                        (window 2*floor(H/16)+1 x 2*floor(W/16)+1 over the FULL FOV,
                        replicate padding at the FOV border); 1 if k >= 2, else 0
                        (ActSort also flags k = 0 with 1: bug B17, see docs/differences.md)
39  footprint_sum       sum of all pixel weights (a sum, whatever ActSort's code name says)
40  support_perimeter   summed length of the outer 8-connected boundaries (Moore tracing,
                        steps 1 or sqrt 2) of every component of S != 0
41  edge_distance       (r, c) = the ceil(k/2)-th of the k maximal pixels in column-major
                        order, 1-based; min(r, H - r, c, W - c) (asymmetric, as MATLAB)
42  circularity         4 pi Area / Perimeter^2 of the largest component of S > 0.3
                        (first in MATLAB label order on ties); Inf when there is none
43  axis_ratio          MajorAxisLength / MinorAxisLength of that region (regionprops moments
                        with the +1/12 correction); Inf when there is none
44  footprint_mean      sum / (H W)
45  spatial_corruption  V_l / V_g with the 4x4 replicate box mean (origin (2, 2))
46  max_pos_corr        max Pearson correlation over all H W pixels with any other candidate
                        whose footprint overlaps (positive inner product); 0 if none
==  ==================  ==================================================================

Every image operation works on the footprint's bounding box (the box filters use small
"clamped box" matrices that reproduce the full-image replicate padding exactly), so the cost
does not grow with the FOV. Feature 46 uses the sparse overlap graph ``F[rows] @ F.T`` and
Pearson statistics from sparse sums, never a dense H*W vector per pair.

All work here is host work: connected components, boundary tracing and region moments are
per-footprint loops (compiled in one Numba call per group of crops, :mod:`.shapes`, with the
SciPy / Python code below as its twin), and the sparse product is cheaper on the host than
moving F to a GPU.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from .columns import NamedColumns
from .registry import SPATIAL_NAMES
from .shapes import crop_shapes, shapes_unusable

log = logging.getLogger(__name__)

__all__ = [
    "spatial_columns",
    "spatial_features",
    "transpose_footprints",
    "boundary_length",
    "adaptive_threshold_mask",
]

_EIGHT = np.ones((3, 3), dtype=bool)
# Moore neighbourhood, clockwise (rows grow downwards) starting from the west neighbour.
_DIRS = ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1))
_STEP = tuple(math.hypot(dr, dc) for dr, dc in _DIRS)
# after a move in direction k the last background pixel checked (direction k-1 from the old
# pixel) seen from the new pixel: dir[k-1] - dir[k]
_BACK = tuple(
    _DIRS.index((_DIRS[k - 1][0] - _DIRS[k][0], _DIRS[k - 1][1] - _DIRS[k][1])) for k in range(8)
)


def transpose_footprints(footprints) -> sp.csr_matrix:
    """``footprints.T`` as CSR, shape (H*W, N): pass it to every :func:`spatial_features` call
    of one stage so the O(nnz) transpose is done once, not once per block."""
    return sp.csr_matrix(_as_host_csr(footprints, "footprints").T)


def _as_host_csr(footprints, name):
    if type(footprints).__module__.split(".")[0] == "cupyx":
        footprints = footprints.get()
    if not sp.issparse(footprints):
        raise TypeError(
            f"{name}: expected a scipy.sparse CSR matrix, got {type(footprints).__name__}"
        )
    return footprints.tocsr()


def spatial_columns(
    footprints,
    height: int,
    width: int,
    rows,
    *,
    xp=None,
    footprints_t=None,
    max_batch_pixels: int = 1 << 22,
) -> NamedColumns:
    """Spatial features 37-46 for the candidates ``rows``, each under its name.

    footprints : CSR (N, H*W) float32, max-normalised, pixel index = row * W + col
        (all candidates: feature 46 compares each row with every other candidate)
    height, width : int, the FOV size H, W in pixels
    rows : slice or 1-D int array of candidate indices to compute
    xp : accepted for a uniform stage API; the work runs on the host (module docstring)
    footprints_t : optional CSR (H*W, N) = :func:`transpose_footprints` (footprints); computed
        here when None (an O(nnz) copy: pass it when calling block by block)
    max_batch_pixels : padded crop pixels per vectorised group (memory bound)

    Returns NamedColumns with names ``registry.SPATIAL_NAMES`` and (n_rows, 10) float32
    values (module docstring).
    """
    del xp  # host-only by design
    H, W = int(height), int(width)
    F = _as_host_csr(footprints, "footprints")
    if H < 1 or W < 1 or F.shape[1] != H * W:
        raise ValueError(
            f"footprints: expected shape (N, height*width) = (N, {H * W}), "
            f"got {F.shape} with height={height}, width={width}"
        )
    n_all = F.shape[0]
    idx = np.arange(n_all)[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
    if idx.ndim != 1 or (idx.size and (idx.min() < -n_all or idx.max() >= n_all)):
        raise ValueError(
            f"rows: expected a slice or 1-D indices into {n_all} candidates, got {rows!r}"
        )
    idx = np.where(idx < 0, idx + n_all, idx)
    if footprints_t is None:
        log.debug("spatial_features: transposing %d footprints (pass footprints_t to avoid)", n_all)
        FT = F.T.tocsr()
    else:
        FT = _as_host_csr(footprints_t, "footprints_t")
        if FT.shape != (H * W, n_all):
            raise ValueError(f"footprints_t: expected shape {(H * W, n_all)}, got {FT.shape}")

    sub = F[idx].astype(np.float32)
    sub.sum_duplicates()
    sub.eliminate_zeros()
    if idx.size == 0:
        return NamedColumns(SPATIAL_NAMES, np.zeros((0, len(SPATIAL_NAMES)), np.float32))
    counts = np.diff(sub.indptr)
    rowid = np.repeat(np.arange(idx.size), counts)
    pix = sub.indices.astype(np.int64)
    r, c = pix // W, pix % W
    data = sub.data.astype(np.float64)

    total = np.bincount(rowid, weights=data, minlength=idx.size)
    cols = {
        "area": np.bincount(rowid, weights=(data > 0.1).astype(np.float64), minlength=idx.size),
        "footprint_sum": total,
        "footprint_mean": total / (H * W),
        "edge_distance": _edge_distance(sub, rowid, r, c, data, H, W),
        "max_pos_corr": _max_positive_correlation(F, FT, sub, idx, H * W),
        **_image_features(sub, rowid, r, c, data, H, W, max_batch_pixels),
    }
    # computed in float64, handed on as float32 (the precision the driver has always stored)
    return NamedColumns.from_dict(cols, SPATIAL_NAMES, dtype=np.float32)


def spatial_features(
    footprints,
    height: int,
    width: int,
    rows,
    *,
    xp=None,
    footprints_t=None,
    max_batch_pixels: int = 1 << 22,
) -> np.ndarray:
    """Spatial features 37-46 as a matrix: :func:`spatial_columns`' values.

    Returns (n_rows, 10) float32, columns in ``registry.SPATIAL_NAMES`` order. Parameters as
    :func:`spatial_columns`.
    """
    return spatial_columns(
        footprints,
        height,
        width,
        rows,
        xp=xp,
        footprints_t=footprints_t,
        max_batch_pixels=max_batch_pixels,
    ).select(SPATIAL_NAMES)


# --------------------------------------------------------------------------- feature 41
def _edge_distance(sub, rowid, r, c, data, H, W):
    n = sub.shape[0]
    counts = np.diff(sub.indptr)
    rowmax = np.full(n, -np.inf)
    np.maximum.at(rowmax, rowid, data)
    # the zeros that are not stored are maximal when no stored value is positive
    zero_max = (counts < H * W) & (rowmax <= 0)
    rr = np.zeros(n, np.int64)
    cc = np.zeros(n, np.int64)
    sel = np.nonzero((data == rowmax[rowid]) & ~zero_max[rowid])[0]
    if sel.size:
        key = c[sel] * H + r[sel]  # column-major order
        order = np.lexsort((key, rowid[sel]))
        ids = rowid[sel][order]
        k = np.bincount(ids, minlength=n)
        start = np.concatenate([[0], np.cumsum(k)[:-1]])
        has = k > 0
        pick = order[start[has] + (k[has] + 1) // 2 - 1]  # ceil(k/2)-th, 1-based
        rr[has], cc[has] = r[sel][pick], c[sel][pick]
    for i in np.nonzero(zero_max)[0]:  # empty or non-positive footprints: rare
        dense = np.ones(H * W, bool)
        lo, hi = sub.indptr[i], sub.indptr[i + 1]
        dense[sub.indices[lo:hi]] = sub.data[lo:hi] == 0
        colmajor = np.nonzero(dense.reshape(H, W).T.ravel())[0]
        j = colmajor[(colmajor.size + 1) // 2 - 1]
        cc[i], rr[i] = divmod(j, H)
    r1, c1 = rr + 1, cc + 1
    return np.minimum.reduce([r1, H - r1, c1, W - c1]).astype(np.float64)


# --------------------------------------------------------------------------- feature 46
def _max_positive_correlation(F, FT, sub, idx, n_pix):
    gram = (sub @ FT).tocsr()  # (n_rows, N), only overlapping pairs
    gram.sum_duplicates()
    g_rows = np.repeat(np.arange(sub.shape[0]), np.diff(gram.indptr))
    g_cols = gram.indices.astype(np.int64)
    keep = (g_cols != idx[g_rows]) & (gram.data > 0)
    g_rows, g_cols, dot = g_rows[keep], g_cols[keep], gram.data[keep].astype(np.float64)
    result = np.zeros(sub.shape[0])
    if dot.size == 0:
        return result
    uniq, inv = np.unique(g_cols, return_inverse=True)
    others = F[uniq]
    s1_o, s2_o = _row_sums(others)
    s1_i, s2_i = _row_sums(sub)
    mean_i, mean_o = s1_i / n_pix, s1_o / n_pix
    var_i = s2_i / n_pix - mean_i**2
    var_o = s2_o / n_pix - mean_o**2
    cov = dot / n_pix - mean_i[g_rows] * mean_o[inv]
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.sqrt(var_i[g_rows] * var_o[inv])
    best = np.full(sub.shape[0], np.nan)
    np.fmax.at(best, g_rows, corr)  # MATLAB max ignores NaN
    has = np.zeros(sub.shape[0], bool)
    has[g_rows] = True
    result[has] = best[has]
    return result


def _row_sums(m):
    rid = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    d = m.data.astype(np.float64)
    return (
        np.bincount(rid, weights=d, minlength=m.shape[0]),
        np.bincount(rid, weights=d * d, minlength=m.shape[0]),
    )


# --------------------------------------------------------------------------- crops
def _clamp_box_matrix(lo, n, size, n_pad, before, after):
    """(G, n_pad, n_pad) A with A[g, a, b] = #{o in [-before, after] : clamp(lo+a+o) == lo+b}.

    ``A_r @ S @ A_c.T`` is the box sum over offsets [-before, after] with replicate padding at
    the FOV border [0, size), restricted to a crop that holds all non-zero pixels (zero
    elsewhere inside the FOV). Rows/columns at or beyond ``n`` (padding) are zero.
    """
    a = np.arange(n_pad)[None, :, None]
    b = np.arange(n_pad)[None, None, :]
    i = lo[:, None, None] + a
    p = lo[:, None, None] + b
    lower = np.where(p <= 0, -before, p - i)
    upper = np.where(p >= size - 1, after, p - i)
    cnt = np.minimum(upper, after) - np.maximum(lower, -before) + 1
    cnt = np.clip(cnt, 0, None)
    valid = (a < n[:, None, None]) & (b < n[:, None, None])
    return np.where(valid, cnt, 0).astype(np.float64)


def adaptive_threshold_mask(crop, r0, c0, height, width):
    """``imbinarize(S, 'adaptive')`` of the full-FOV footprint, evaluated on a crop.

    crop : (h, w) float, the footprint's values on rows r0..r0+h-1, cols c0..c0+w-1 of an
        H x W FOV on which it is zero outside the crop.
    Returns (h, w) bool, identical to the full-image result on those pixels (and the full-image
    result is False outside the crop, where S = 0).
    """
    crop = np.asarray(crop, dtype=np.float64)[None]
    h, w = crop.shape[1:]
    return _adaptive_bw(
        crop, np.array([r0]), np.array([c0]), np.array([h]), np.array([w]), int(height), int(width)
    )[0]


def _adaptive_bw(S, r0, c0, bh, bw, H, W):
    hr, hc = H // 16, W // 16  # window 2*floor(size/16)+1
    Ar = _clamp_box_matrix(r0, bh, H, S.shape[1], hr, hr)
    Ac = _clamp_box_matrix(c0, bw, W, S.shape[2], hc, hc)
    box = Ar @ S @ np.swapaxes(Ac, 1, 2)
    thr = np.clip(1.1 * box / ((2 * hr + 1) * (2 * hc + 1)), 0.0, 1.0)
    return thr < S


def _corruption(S, r0, c0, bh, bw, H, W):
    Ar = _clamp_box_matrix(r0, bh, H, S.shape[1], 1, 2)  # 4x4 box, origin (2, 2)
    Ac = _clamp_box_matrix(c0, bw, W, S.shape[2], 1, 2)
    local = Ar @ S @ np.swapaxes(Ac, 1, 2) / 16.0
    mask = S > 1e-3
    n_m = mask.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.where(mask, S, 0).sum(axis=(1, 2)) / n_m
        v_g = np.where(mask, (S - mu[:, None, None]) ** 2, 0).sum(axis=(1, 2)) / (
            np.maximum(mu, 0.01) * n_m
        )
        v_l = np.where(mask, (S - local) ** 2 / np.maximum(0.01, local), 0).sum(axis=(1, 2)) / n_m
        return v_l / v_g


def _groups(bh, bw, max_pixels):
    """Split candidates (sorted by crop size) into groups whose padded crops fit max_pixels."""
    order = np.lexsort((np.minimum(bh, bw), np.maximum(bh, bw)))
    groups, cur, hp, wp = [], [], 0, 0
    for i in order:
        nh, nw = max(hp, bh[i]), max(wp, bw[i])
        if cur and (len(cur) + 1) * nh * nw > max_pixels:
            groups.append(np.array(cur))
            cur, nh, nw = [], bh[i], bw[i]
        cur.append(i)
        hp, wp = nh, nw
    if cur:
        groups.append(np.array(cur))
    return groups


def _image_features(sub, rowid, r, c, data, H, W, max_pixels) -> dict:
    """Features 38, 40, 42, 43, 45 of the rows of ``sub``: name -> (n,) float64."""
    n = sub.shape[0]
    bodies, perimeter, circ, ratio, corrupt = (np.zeros(n) for _ in range(5))
    counts = np.diff(sub.indptr)
    nonempty = counts > 0
    r0 = np.zeros(n, np.int64)
    c0 = np.zeros(n, np.int64)
    r1 = np.zeros(n, np.int64)
    c1 = np.zeros(n, np.int64)
    starts = sub.indptr[:-1][nonempty]
    r0[nonempty] = np.minimum.reduceat(r, starts)
    r1[nonempty] = np.maximum.reduceat(r, starts) + 1
    c0[nonempty] = np.minimum.reduceat(c, starts)
    c1[nonempty] = np.maximum.reduceat(c, starts) + 1
    bh, bw = r1 - r0, c1 - c0
    empty = np.nonzero(~nonempty)[0]
    bodies[empty] = 0.0  # no component: not several bodies (B17)
    perimeter[empty] = 0.0
    circ[empty] = np.inf
    ratio[empty] = np.inf
    corrupt[empty] = np.nan  # 0 / 0, as the reference
    ids = np.nonzero(nonempty)[0]
    compiled = shapes_unusable() is None
    for grp in _groups(bh[ids], bw[ids], max_pixels):
        g = ids[grp]
        hp, wp = int(bh[g].max()), int(bw[g].max())
        S = np.zeros((g.size, hp, wp))
        pos = np.full(n, -1)
        pos[g] = np.arange(g.size)
        m = pos[rowid] >= 0
        gi = pos[rowid[m]]
        S[gi, r[m] - r0[rowid[m]], c[m] - c0[rowid[m]]] = data[m]
        bw_adapt = _adaptive_bw(S, r0[g], c0[g], bh[g], bw[g], H, W)
        corrupt[g] = _corruption(S, r0[g], c0[g], bh[g], bw[g], H, W)
        if compiled:  # the loop below in one compiled call (features.shapes)
            bodies[g], perimeter[g], circ[g], ratio[g] = crop_shapes(S, bw_adapt, bh[g], bw[g])
            continue
        for k, i in enumerate(g):
            crop = S[k, : bh[i], : bw[i]]
            bodies[i] = 1.0 if _n_components(bw_adapt[k, : bh[i], : bw[i]]) >= 2 else 0.0
            perimeter[i] = _support_perimeter(crop != 0)
            circ[i], ratio[i] = _region_shape(crop > 0.3)
    return {
        "multiple_bodies": bodies,
        "support_perimeter": perimeter,
        "circularity": circ,
        "axis_ratio": ratio,
        "spatial_corruption": corrupt,
    }


def _n_components(mask):
    return ndimage.label(mask, structure=_EIGHT)[1]


def _column_major_labels(mask):
    """8-connected labels numbered in MATLAB (column-major) scan order, and the first
    pixel (row, col) of every label in that order."""
    lab_t, k = ndimage.label(mask.T, structure=_EIGHT)
    flat = lab_t.ravel()
    first = np.zeros(k + 1, np.int64)
    nz = np.nonzero(flat)[0]
    labs = flat[nz]
    # first occurrence of every label in the transposed raster = column-major order
    _, where = np.unique(labs, return_index=True)
    first[1:] = nz[where]
    h = mask.shape[0]
    first_rc = np.stack([first % h, first // h], axis=1)
    return lab_t.T, k, first_rc


def _support_perimeter(mask):
    labels, k, first_rc = _column_major_labels(mask)
    if k == 0:
        return 0.0
    padded = np.pad(mask, 1).astype(np.uint8)
    img, stride = padded.tobytes(), padded.shape[1]
    return float(sum(_trace(img, stride, (rr + 1) * stride + cc + 1) for rr, cc in first_rc[1:]))


def _region_shape(mask):
    labels, k, first_rc = _column_major_labels(mask)
    if k == 0:
        return np.inf, np.inf
    areas = np.bincount(labels.ravel(), minlength=k + 1)
    best = int(np.argmax(areas[1:])) + 1  # first in label order on ties
    region = labels == best
    area = float(areas[best])
    padded = np.pad(region, 1).astype(np.uint8)
    rr, cc = first_rc[best]
    perim = _trace(padded.tobytes(), padded.shape[1], (rr + 1) * padded.shape[1] + cc + 1)
    ys, xs = np.nonzero(region)
    uxx = xs.var() + 1.0 / 12.0
    uyy = ys.var() + 1.0 / 12.0
    uxy = ((xs - xs.mean()) * (ys - ys.mean())).mean()
    common = math.sqrt((uxx - uyy) ** 2 + 4.0 * uxy**2)
    major = 2.0 * math.sqrt(2.0) * math.sqrt(uxx + uyy + common)
    minor = 2.0 * math.sqrt(2.0) * math.sqrt(max(uxx + uyy - common, 0.0))
    circ = 4.0 * math.pi * area / perim**2 if perim > 0 else np.inf
    ratio = major / minor if minor > 0 else np.inf
    return circ, ratio


def _trace(img, stride, start):
    """Length of the closed outer boundary (Moore tracing, 8-connected) of the object whose
    first pixel in column-major order is ``start``.

    img : bytes of a zero-padded (by 1) binary image, row-major with ``stride`` columns.
    Steps cost 1 (edge neighbour) or sqrt 2 (diagonal); an isolated pixel has length 0.
    Stops when the trace would leave ``start`` in its first direction again (Jacob's rule),
    so objects that touch themselves at a pixel are traced completely.
    """
    offs = [dr * stride + dc for dr, dc in _DIRS]
    p, back = start, 0  # came from the west (background)
    first_dir = -1
    length = 0.0
    while True:
        for j in range(1, 8):
            k = (back + j) & 7
            if img[p + offs[k]]:
                break
        else:
            return 0.0  # isolated pixel
        if p == start and k == first_dir:
            return length
        if first_dir < 0:
            first_dir = k
        length += _STEP[k]
        p += offs[k]
        back = _BACK[k]


def boundary_length(mask) -> float:
    """Summed outer-boundary length of every 8-connected object of ``mask`` (2-D bool), as
    ``bwboundaries(mask, 'noholes')`` polylines (feature 40's definition)."""
    return _support_perimeter(np.asarray(mask, dtype=bool))
