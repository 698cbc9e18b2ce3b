"""Features 38, 40, 42 and 43 of a group of footprint crops in one compiled loop.

For each crop :func:`crop_shapes` does what :func:`actsort_gpu.features.spatial._image_features`
does per candidate with SciPy and Python: 8-connected components numbered in MATLAB's
column-major order (``bwlabel``), Moore traces of their outer boundaries with Jacob's stopping
rule (steps 1 or sqrt 2), the largest component of ``S > 0.3`` and its ``regionprops`` second
moments. About 0.4 ms per candidate in Python (labels, padding, a Python loop per boundary
pixel, SciPy calls), ~15 us for a 25 x 25 crop compiled. The Python code stays as the twin
used where Numba does not run. The two agree exactly on ``multiple_bodies`` and
``support_perimeter`` (the same additions in the same order) and to rounding on
``circularity`` and ``axis_ratio`` (the moments are sums in another order than NumPy's
pairwise ones: ~1e-16 relative, below the float32 the feature matrix stores).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ..jit import available, jitted, why

__all__ = ["crop_shapes", "shapes_unusable"]


@cache
def shapes_unusable() -> str | None:
    """None when :func:`crop_shapes` runs (compiled once per process on a one-pixel crop), else
    why not (the caller then runs the Python twin)."""
    if not available():
        return "Numba does not import"
    try:
        one = np.ones((1, 1, 1))
        crop_shapes(one, one > 0, np.ones(1, np.int64), np.ones(1, np.int64))
    except Exception as exc:  # a Numba typing / lowering error, or a broken llvmlite
        return why(exc)
    return None


def crop_shapes(crops, adaptive, heights, widths):
    """Features 38, 40, 42, 43 of G footprint crops.

    crops : (G, h_pad, w_pad) float64, each footprint on its bounding box (top-left aligned,
        zero beyond its ``heights[k]`` x ``widths[k]``)
    adaptive : (G, h_pad, w_pad) bool, ``imbinarize(S, 'adaptive')`` on the same crops
    heights, widths : (G,) int, each crop's size in pixels

    Returns (multiple_bodies, support_perimeter, circularity, axis_ratio): four (G,) float64
    (definitions: :mod:`actsort_gpu.features.spatial`).
    """
    from .spatial import _BACK, _DIRS, _STEP

    g = crops.shape[0]
    out = np.empty((4, g))
    jitted(_crop_shapes_py)(
        np.ascontiguousarray(crops, dtype=np.float64),
        np.ascontiguousarray(adaptive, dtype=np.bool_),
        np.asarray(heights, np.int64),
        np.asarray(widths, np.int64),
        np.asarray(_DIRS, np.int64),
        np.asarray(_STEP, np.float64),
        np.asarray(_BACK, np.int64),
        out,
    )
    return out[0], out[1], out[2], out[3]


def _crop_shapes_py(crops, adaptive, heights, widths, dirs, step, back, out):  # pragma: no cover
    g, h_pad, w_pad = crops.shape
    # padded grid: 0 background, -1 object not yet labelled, then the component's label
    grid = np.zeros((h_pad + 2, w_pad + 2), np.int64)
    stack = np.empty((h_pad * w_pad, 2), np.int64)
    first_r = np.empty(h_pad * w_pad + 1, np.int64)
    first_c = np.empty(h_pad * w_pad + 1, np.int64)
    area = np.zeros(h_pad * w_pad + 1, np.int64)
    for k in range(g):
        h, w = heights[k], widths[k]
        # mask 0: the adaptive threshold (38); 1: S != 0 (40); 2: S > 0.3 (42, 43)
        for which in range(3):
            grid[: h + 2, : w + 2] = 0
            for r in range(h):
                for c in range(w):
                    s = crops[k, r, c]
                    if which == 0:
                        on = adaptive[k, r, c]
                    elif which == 1:
                        on = s != 0
                    else:
                        on = s > 0.3
                    if on:
                        grid[r + 1, c + 1] = -1
            # 8-connected labels in column-major scan order (bwlabel's numbering). The same
            # flood fill as preprocess.compiled._outlines_py (plus the areas), written twice on
            # purpose: Numba's disk cache does not see a change in a jitted helper that a
            # kernel in another file calls, so a shared helper could run stale code
            n_labels, best = 0, 0
            for cc in range(1, w + 1):
                for rr in range(1, h + 1):
                    if grid[rr, cc] != -1:
                        continue
                    n_labels += 1
                    first_r[n_labels], first_c[n_labels] = rr, cc
                    area[n_labels] = 1
                    grid[rr, cc] = n_labels
                    stack[0, 0], stack[0, 1] = rr, cc
                    top = 1
                    while top > 0:
                        top -= 1
                        pr, pc = stack[top, 0], stack[top, 1]
                        for d in range(8):
                            qr, qc = pr + dirs[d, 0], pc + dirs[d, 1]
                            if grid[qr, qc] == -1:
                                grid[qr, qc] = n_labels
                                area[n_labels] += 1
                                stack[top, 0], stack[top, 1] = qr, qc
                                top += 1
            if which == 0:
                out[0, k] = 1.0 if n_labels >= 2 else 0.0
                continue
            if which == 1:
                lab_from, lab_to = 1, n_labels + 1  # every component's boundary
            elif n_labels == 0:
                out[2, k] = np.inf
                out[3, k] = np.inf
                continue
            else:
                best = 1  # the largest, first in label order on ties
                for lab in range(2, n_labels + 1):
                    if area[lab] > area[best]:
                        best = lab
                lab_from, lab_to = best, best + 1
            total = 0.0
            for lab in range(lab_from, lab_to):
                # Moore trace from the component's first pixel, clockwise, Jacob's stop
                sr, sc = first_r[lab], first_c[lab]
                cr, cc = sr, sc
                bk, first_dir = 0, -1
                length = 0.0
                while True:
                    fd = -1
                    for j in range(1, 8):
                        d = (bk + j) & 7
                        if grid[cr + dirs[d, 0], cc + dirs[d, 1]] != 0:
                            fd = d
                            break
                    if fd < 0:  # an isolated pixel
                        length = 0.0
                        break
                    if cr == sr and cc == sc and fd == first_dir:
                        break
                    if first_dir < 0:
                        first_dir = fd
                    length += step[fd]
                    cr, cc = cr + dirs[fd, 0], cc + dirs[fd, 1]
                    bk = back[fd]
                total += length
            if which == 1:
                out[1, k] = total
                continue
            # regionprops moments of the largest component (row-major pixel order)
            n = area[best]
            sx, sy = 0.0, 0.0
            for r in range(h):
                for c in range(w):
                    if grid[r + 1, c + 1] == best:
                        sx += c
                        sy += r
            mx, my = sx / n, sy / n
            vxx, vyy, vxy = 0.0, 0.0, 0.0
            for r in range(h):
                for c in range(w):
                    if grid[r + 1, c + 1] == best:
                        dx, dy = c - mx, r - my
                        vxx += dx * dx
                        vyy += dy * dy
                        vxy += dx * dy
            uxx = vxx / n + 1.0 / 12.0
            uyy = vyy / n + 1.0 / 12.0
            uxy = vxy / n
            common = np.sqrt((uxx - uyy) ** 2 + 4.0 * uxy**2)
            major = 2.0 * np.sqrt(2.0) * np.sqrt(uxx + uyy + common)
            minor = 2.0 * np.sqrt(2.0) * np.sqrt(max(uxx + uyy - common, 0.0))
            out[2, k] = 4.0 * np.pi * n / total**2 if total > 0 else np.inf
            out[3, k] = major / minor if minor > 0 else np.inf
