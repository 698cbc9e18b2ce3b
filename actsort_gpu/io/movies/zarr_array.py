"""zarr v2/v3 movies: a 3-D array, or a group holding one."""

from __future__ import annotations

import logging
from pathlib import Path

from .axes import _OrderedArrayMovie, movie_shape, resolve_axis_order
from .interleave import LayoutNeeded

log = logging.getLogger(__name__)

__all__ = ["ZarrMovie"]


class ZarrMovie(_OrderedArrayMovie):
    """A 3-D zarr v2/v3 array, or a group holding one (or one named by ``dataset``)."""

    format = "zarr"

    def __init__(
        self,
        path: str | Path,
        dataset: str | None = None,
        expected_hw: tuple[int, int] | None = None,
        interleave=None,
    ):
        """interleave : an ``Interleave`` whose channel / plane an axis of the array selects
        (``axes.movie_axes``)."""
        import zarr

        path = Path(path)
        try:
            node = zarr.open(str(path), mode="r")
        except (ValueError, OSError, KeyError, FileNotFoundError) as exc:
            raise OSError(f"{path}: not a readable zarr array or group ({exc})") from exc
        name = None
        if isinstance(node, zarr.Group):
            arrays = {k: a for k, a in node.arrays() if len(movie_shape(a.shape, interleave)) == 3}
            if dataset:
                if dataset not in node:
                    raise KeyError(f"{path}: no array {dataset!r}; 3-D arrays: {sorted(arrays)}")
                node, name = node[dataset], dataset
            elif len(arrays) == 1:
                name, node = next(iter(arrays.items()))
            elif not arrays and any(len(movie_shape(a.shape)) > 3 for _, a in node.arrays()):
                raise LayoutNeeded(
                    f"{path}: no 3-D array; its arrays "
                    f"{sorted(f'{k} {a.shape}' for k, a in node.arrays())} have a channel or "
                    "plane axis: choose one with --channels N --channel K or --planes N --plane K"
                )
            else:
                raise ValueError(
                    f"{path}: {len(arrays)} 3-D arrays {sorted(arrays)}; expected "
                    f"exactly one movie: name it with --dataset"
                )
        order = resolve_axis_order(
            movie_shape(node.shape, interleave), expected_hw, matlab=False, where=str(path)
        )
        super().__init__(path, node, order, name, interleave)
        if order != "THW":
            log.info("%s: array shape %s read as axis order %s", path, node.shape, order)
