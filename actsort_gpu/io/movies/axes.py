"""Movies stored in another axis order (MATLAB's (T, W, H), pixel-major layouts): finding
the order from the extraction's (H, W), and serving windows as (T, H, W)."""

from __future__ import annotations

import numpy as np

from .base import Movie
from .interleave import LayoutNeeded

__all__ = ["resolve_axis_order", "movie_axes", "movie_shape", "window_index"]


def movie_axes(shape: tuple[int, ...], interleave=None):
    """(the 3 movie axes' sizes in disk order, {other axis: the index read there}, the part of
    ``interleave`` an axis selects or None) of a dataset of ``shape``: beyond three axes, the
    one axis whose size is ``interleave.channels`` (> 1) reads ``interleave.channel``
    (1-based), the one of ``interleave.planes`` reads its plane, and axes of size 1 read 0 (a
    (T, H, W, 1) dataset). ``shape`` itself, {} and None when that does not leave three axes
    (not a movie: callers refuse it)."""
    shape = tuple(int(n) for n in shape)
    if len(shape) <= 3:
        return shape, {}, None
    rest, fixed, found = list(range(len(shape))), {}, {}
    if interleave is not None:
        wanted = {
            "channels": (interleave.channels, interleave.channel - 1),
            "planes": (interleave.planes, interleave.plane),
        }
        for name, (size, index) in wanted.items():
            hits = [k for k in rest if shape[k] == size]
            if size > 1 and len(hits) == 1:
                fixed[hits[0]] = index
                rest.remove(hits[0])
                found[name] = True
    ones = [k for k in rest if shape[k] == 1]
    if len(rest) - len(ones) == 3:
        for k in ones:
            fixed[k] = 0
            rest.remove(k)
    if len(rest) != 3:
        return shape, {}, None
    resolved = None
    if found:
        resolved = type(interleave)(
            planes=interleave.planes if "planes" in found else 1,
            plane=interleave.plane if "planes" in found else 0,
            channels=interleave.channels if "channels" in found else 1,
            channel=interleave.channel if "channels" in found else 1,
        )
    return tuple(shape[k] for k in rest), fixed, resolved


def movie_shape(shape: tuple[int, ...], interleave=None) -> tuple[int, ...]:
    """The movie axes' sizes of a dataset (:func:`movie_axes`)."""
    return movie_axes(shape, interleave)[0]


def resolve_axis_order(
    shape: tuple[int, ...], expected_hw: tuple[int, int] | None, *, matlab: bool, where: str
) -> str:
    """Which of 'THW', 'TWH', 'HWT', 'WHT' a 3-D on-disk ``shape`` is.

    With ``expected_hw`` (the extraction's H, W) the shape decides, MATLAB's reversed order
    winning a tie when the file is a MATLAB v7.3 file (MATLAB [H W T] reads as (T, W, H)).
    Without it: 'TWH' for MATLAB files, else 'THW'.
    """
    if len(shape) != 3:
        error = LayoutNeeded if len(shape) > 3 else ValueError
        raise error(
            f"{where}: dataset of shape {tuple(shape)}; expected a 3-D movie (with a channel "
            "or plane axis: choose one with --channels N --channel K or --planes N --plane K)"
        )
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


def window_index(
    shape: tuple[int, ...], t: int, start: int, stop: int, fixed: dict[int, int] | None = None
) -> tuple:
    """The index of frames [start, stop) of an array of ``shape`` whose ``t``-th movie axis is
    time; the other axes read at ``fixed`` (default: :func:`movie_axes` without a choice)."""
    fixed = movie_axes(shape)[1] if fixed is None else fixed
    index: list = [fixed.get(k, slice(None)) for k in range(len(shape))]
    axes = [k for k in range(len(shape)) if k not in fixed]
    index[axes[t]] = slice(start, stop)
    return tuple(index)


class _OrderedArrayMovie(Movie):
    """A 3-D array-like stored in ``axis_order``, served as (T, H, W) by windows; its other
    axes are read where :func:`movie_axes` says for ``interleave`` (a channel, a plane, 0 for
    an axis of size 1). ``resolved``: the channel / plane so chosen (None: none)."""

    def __init__(
        self,
        path,
        array,
        axis_order: str,
        dataset: str | None,
        interleave=None,
    ):
        self._array = array
        self.axis_order = axis_order
        self.dataset = dataset
        disk_shape, self._fixed, self.resolved = movie_axes(array.shape, interleave)
        sizes = dict(zip(axis_order, disk_shape))
        super().__init__(path, (sizes["T"], sizes["H"], sizes["W"]), array.dtype)

    def describe(self) -> dict:
        info = super().describe()
        if self.resolved is not None:  # reopened with the same choice
            info["interleave"] = self.resolved.as_dict()
        return info

    def _read(self, start: int, stop: int) -> np.ndarray:
        index = window_index(
            self._array.shape, self.axis_order.index("T"), start, stop, self._fixed
        )
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
