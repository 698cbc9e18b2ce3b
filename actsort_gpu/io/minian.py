"""minian output: zarr arrays ``A`` (unit_id, height, width) and ``C`` (unit_id, frame).

minian saves each variable with xarray ``to_zarr``: a folder holding ``A.zarr`` and ``C.zarr``
(each a zarr group with the data array plus coordinate arrays such as ``unit_id``), or one
zarr group with arrays ``A`` and ``C``. Both are read with zarr directly (no xarray).
``max_proj`` becomes the image ``minian_max_proj``; ``unit_id`` the metric ``minian_unit_id``.
C is read by blocks of rows when ingest writes the traces (never held whole).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from ._footprints import check_fov, csr_from_dense_blocks
from .candidates import Candidates, RowBlockTraces

log = logging.getLogger(__name__)

__all__ = ["read_minian"]


def _variable(folder: Path, name: str, required: bool = True):
    """(data array, its group or None) for variable ``name``."""
    import zarr

    for location, key in ((folder / f"{name}.zarr", name), (folder, name)):
        if not location.exists():
            continue
        try:
            node = zarr.open(str(location), mode="r")
        except (ValueError, OSError, KeyError, FileNotFoundError) as exc:
            raise OSError(f"{location}: not a readable zarr store ({exc})") from exc
        if isinstance(node, zarr.Array):
            return node, None
        if key in node and isinstance(node[key], zarr.Array):
            return node[key], node
    if required:
        raise FileNotFoundError(
            f"{folder}: minian variable {name!r} not found (expected "
            f"{name}.zarr or an array {name!r} in the zarr group)"
        )
    return None, None


def _trace_rows(folder: Path, c, order: np.ndarray, rows: slice) -> np.ndarray:
    """Rows ``rows`` of C in A's unit order (C's rows ``order[rows]``), float32: read by
    blocks of rows as ingest writes them, so C is never held whole."""
    wanted = order[rows]
    by_row = np.argsort(wanted)  # zarr reads the rows in increasing order
    out = np.empty((len(wanted), c.shape[1]), np.float32)
    try:
        out[by_row] = c.get_orthogonal_selection((wanted[by_row], slice(None)))
    except (ValueError, OSError, KeyError) as exc:
        raise OSError(
            f"{folder}: cannot read rows {rows.start}-{rows.stop} of C (corrupt zarr chunks?): "
            f"{exc}"
        ) from exc
    return out


def _unit_ids(group, n: int):
    if group is not None and "unit_id" in group:
        ids = np.asarray(group["unit_id"][:])
        if ids.shape == (n,):
            return ids
    return None


def read_minian(
    path: str | Path, *, progress: bool = False, movie_shape: tuple[int, int, int] | None = None
) -> Candidates:
    """Read a minian output folder (or zarr group) into Candidates; ``movie_shape`` (when
    known) bounds A's height and width before A is read."""
    folder = Path(path)
    a, a_group = _variable(folder, "A")
    c, c_group = _variable(folder, "C")
    if a.ndim != 3:
        raise ValueError(f"{folder}: A has shape {a.shape}, expected (unit_id, height, width)")
    n = a.shape[0]
    h, w = check_fov(a.shape[1], a.shape[2], f"{folder}: A", movie_shape)
    try:
        footprints = csr_from_dense_blocks(lambda k0, k1: a[k0:k1], n, h, w, progress=progress)
    except (ValueError, OSError, KeyError) as exc:
        raise OSError(f"{folder}: cannot read A (corrupt zarr chunks?): {exc}") from exc
    if c.ndim != 2 or c.shape[0] != n or c.dtype.kind not in "biuf":
        raise ValueError(
            f"{folder}: C has shape {c.shape} and dtype {c.dtype}, expected ({n}, frames) "
            f"numbers: one trace per unit of A"
        )
    ids_a, ids_c = _unit_ids(a_group, n), _unit_ids(c_group, n)
    order = np.arange(n)  # C's row of each unit of A
    if ids_a is not None and ids_c is not None and not np.array_equal(ids_a, ids_c):
        pos = {u: i for i, u in enumerate(ids_c.tolist())}
        if set(pos) != set(ids_a.tolist()):
            raise ValueError(f"{folder}: A and C hold different unit_id sets")
        order = np.array([pos[u] for u in ids_a.tolist()], dtype=np.int64)
        log.info("%s: C reordered to A's unit_id order", folder)
    traces = RowBlockTraces(c.shape, functools.partial(_trace_rows, folder, c, order))
    metrics = {}
    if ids_a is not None and np.issubdtype(ids_a.dtype, np.number):
        metrics["minian_unit_id"] = ids_a.astype(np.float32)
    images = {}
    mp, _ = _variable(folder, "max_proj", required=False)
    if mp is not None and mp.shape == (h, w):
        images["minian_max_proj"] = np.asarray(mp[:], dtype=np.float32)
    return Candidates(footprints, traces, h, w, "minian", folder, metrics=metrics, images=images)
