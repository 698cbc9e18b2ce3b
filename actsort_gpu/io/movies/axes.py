"""Movies stored in another axis order (MATLAB's (T, W, H), pixel-major layouts): finding
the order from the extraction's (H, W), and serving windows as (T, H, W)."""

from __future__ import annotations

import numpy as np

from .base import Movie

__all__ = ["resolve_axis_order", "movie_shape", "window_index"]


def movie_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A dataset's shape without its axes of size 1 (a (T, H, W, 1) or (T, 1, H, W) movie is
    (T, H, W)), when that leaves 3 axes; else the shape as it is."""
    kept = tuple(int(n) for n in shape if n != 1)
    return kept if len(kept) == 3 and len(shape) > 3 else tuple(int(n) for n in shape)


def resolve_axis_order(
    shape: tuple[int, ...], expected_hw: tuple[int, int] | None, *, matlab: bool, where: str
) -> str:
    """Which of 'THW', 'TWH', 'HWT', 'WHT' a 3-D on-disk ``shape`` is.

    With ``expected_hw`` (the extraction's H, W) the shape decides, MATLAB's reversed order
    winning a tie when the file is a MATLAB v7.3 file (MATLAB [H W T] reads as (T, W, H)).
    Without it: 'TWH' for MATLAB files, else 'THW'.
    """
    if len(shape) != 3:
        raise ValueError(f"{where}: dataset of shape {tuple(shape)}; expected a 3-D movie")
    if expected_hw is None:
        return "TWH" if matlab else "THW"
    h, w = (int(v) for v in expected_hw)
    options = {
        "THW": shape[1:] == (h, w),
        "TWH": shape[1:] == (w, h),
        "HWT": shape[:2] == (h, w),
        "WHT": shape[:2] == (w, h),
    }
    preference = ("TWH", "THW", "WHT", "HWT") if matlab else ("THW", "TWH", "HWT", "WHT")
    for order in preference:
        if options[order]:
            return order
    raise ValueError(
        f"{where}: dataset of shape {tuple(shape)} does not contain frames of "
        f"{h} x {w} pixels (the extraction's field of view) in any axis order"
    )


def window_index(shape: tuple[int, ...], t: int, start: int, stop: int) -> tuple:
    """The index of frames [start, stop) of an array of ``shape`` whose ``t``-th movie axis is
    time (axes of size 1 beyond the movie's three read at 0: :func:`movie_shape`)."""
    axes = [k for k, n in enumerate(shape) if n != 1] if len(shape) > 3 else list(range(3))
    index: list = [0] * len(shape)
    for k in axes:
        index[k] = slice(None)
    index[axes[t]] = slice(start, stop)
    return tuple(index)


class _OrderedArrayMovie(Movie):
    """A 3-D array-like stored in ``axis_order``, served as (T, H, W) by windows; axes of size
    1 beyond those three (a (T, H, W, 1) dataset) are read at index 0 (:func:`movie_shape`)."""

    def __init__(self, path, array, axis_order: str, dataset: str | None):
        self._array = array
        self.axis_order = axis_order
        self.dataset = dataset
        sizes = dict(zip(axis_order, movie_shape(array.shape)))
        super().__init__(path, (sizes["T"], sizes["H"], sizes["W"]), array.dtype)

    def _read(self, start: int, stop: int) -> np.ndarray:
        index = window_index(self._array.shape, self.axis_order.index("T"), start, stop)
        try:
            data = np.asarray(self._array[index])
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise OSError(
                f"{self.path}: cannot read frames [{start}, {stop}) of "
                f"{self.dataset}: {exc}; the file may be truncated or corrupt"
            ) from exc
        perm = [self.axis_order.index(a) for a in "THW"]
        return np.ascontiguousarray(data.transpose(perm))


def _swap_rows_cols(frames: np.ndarray) -> np.ndarray:
    """(n, A, B) frames -> (n, B, A), C order: each frame transposed 16 source rows at a time
    (tiles that stay in cache: about 1.7x the speed of one whole transposition)."""
    n, a, b = frames.shape
    out = np.empty((n, b, a), frames.dtype)
    for k in range(n):
        for r0 in range(0, a, 16):
            out[k, :, r0 : r0 + 16] = frames[k, r0 : r0 + 16].T
    return out
