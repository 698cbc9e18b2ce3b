"""EXTRACT output in a MATLAB ``.mat`` file (any struct layout ActSort accepts).

As ActSort's ``parse_extract_output.m`` / ``findField.m``: the loaded variables are searched
recursively (current level first, then sub-structs in field order, first hit wins) for

- footprints: ``spatial_weights`` | ``filters`` | ``spatialWeights``: H x W x N dense, or a
  2-D sparse (H*W) x N with column-major (MATLAB) pixel order;
- traces: ``temporal_weights`` | ``traces``: T x N;
- summary image (optional): ``max_image`` | ``summary_image`` | ``max_im``: H x W;
- EXTRACT's ``cellcheck`` struct (optional, best effort): ``is_bad`` and ``metrics``
  (n_metrics x N) -> metrics ``extract_is_bad``, ``extract_cellcheck_<i>``.

v5/v7 files are read with scipy.io.loadmat, v7.3 (HDF5) files with h5py, where MATLAB's
dimension order is reversed: H x W x N appears as (N, W, H), T x N as (N, T), and a sparse
matrix is a group with ``data``, ``ir``, ``jc`` and attribute ``MATLAB_sparse`` (row count).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._footprints import (
    MissingShapeError,
    as_metric,
    check_compressed,
    check_fov,
    check_sparse,
    csr_from_dense_blocks,
    fortran_pixels_to_c,
)
from .candidates import Candidates, RowBlockTraces, hdf5_row_traces

log = logging.getLogger(__name__)

__all__ = ["read_extract_mat", "FOOTPRINT_NAMES", "TRACE_NAMES", "IMAGE_NAMES"]

FOOTPRINT_NAMES = ("spatial_weights", "filters", "spatialWeights")
TRACE_NAMES = ("temporal_weights", "traces")
IMAGE_NAMES = ("max_image", "summary_image", "max_im")


# ------------------------------------------------------------------ struct views
class _Node:
    """A MATLAB struct seen uniformly: ``fields()`` in order, ``get(name)``, ``is_struct(v)``."""


class _V5(_Node):
    def __init__(self, obj):
        self.obj = obj

    def fields(self):
        if isinstance(self.obj, dict):
            return [k for k in self.obj if not k.startswith("__")]
        return list(getattr(self.obj, "_fieldnames", []))

    def get(self, name):
        return self.obj[name] if isinstance(self.obj, dict) else getattr(self.obj, name)

    @staticmethod
    def child(value):
        from scipy.io.matlab import mat_struct

        if isinstance(value, mat_struct):
            return _V5(value)
        if (
            isinstance(value, np.ndarray)
            and value.dtype == object
            and value.size == 1
            and isinstance(value.item(), mat_struct)
        ):
            return _V5(value.item())
        return None


class _H5(_Node):
    def __init__(self, group):
        self.obj = group

    def fields(self):
        keys = [k for k in self.obj if not k.startswith("#")]
        order = self.obj.attrs.get("MATLAB_fields")
        if order is not None:  # MATLAB's field order (h5py lists names alphabetically)
            names = [np.asarray(x).tobytes().decode(errors="ignore").rstrip("\x00") for x in order]
            names = [n for n in names if n in keys]
            keys = names + [k for k in keys if k not in names]
        return keys

    def get(self, name):
        return self.obj[name]

    @staticmethod
    def child(value):
        import h5py

        if isinstance(value, h5py.Group) and "MATLAB_sparse" not in value.attrs:
            return _H5(value)
        return None


def _find(node: _Node, names, child) -> tuple[str, object] | None:
    """findField.m: the current level first, then sub-structs in field order."""
    fields = node.fields()
    for name in names:
        if name in fields:
            return name, node.get(name)
    for f in fields:
        sub = child(node.get(f))
        if sub is not None:
            hit = _find(sub, names, child)
            if hit is not None:
                return hit
    return None


# ------------------------------------------------------------------ readers
def read_extract_mat(
    path: str | Path,
    *,
    hw: tuple[int, int] | None = None,
    progress: bool = False,
    movie_shape: tuple[int, int, int] | None = None,
) -> Candidates:
    """Read an EXTRACT (or ActSort-compatible) ``.mat`` file into Candidates; ``movie_shape``
    (when known) bounds the field of view before the footprints are read."""
    import h5py

    path = Path(path)
    if h5py.is_hdf5(path):
        return _read_v73(path, hw, progress, movie_shape)
    return _read_v5(path, hw, progress, movie_shape)


def _missing(path: Path, what: str, names) -> ValueError:
    return ValueError(
        f"{path}: no {what} found: expected a field named "
        f"{' | '.join(names)} anywhere in the file's structs (EXTRACT output "
        f"doesn't contain necessary components)"
    )


def _components(root, child, path: Path):
    """(footprints, traces, summary image) hits of the recursive field search (findField.m);
    the image may be None, missing footprints or traces raise an error naming the file."""
    fp = _find(root, FOOTPRINT_NAMES, child)
    tr = _find(root, TRACE_NAMES, child)
    if fp is None:
        raise _missing(path, "spatial footprints", FOOTPRINT_NAMES)
    if tr is None:
        raise _missing(path, "traces", TRACE_NAMES)
    return fp, tr, _find(root, IMAGE_NAMES, child)


def _cellcheck_metrics(root, child, n: int, path: Path) -> dict:
    """EXTRACT's cellcheck metrics when the file has them, else {}."""
    cc = _find(root, ("cellcheck",), child)
    if cc is None or child(cc[1]) is None:
        return {}
    return _cellcheck(child(cc[1]), n, path)


def _read_v5(path: Path, hw, progress, movie_shape=None) -> Candidates:
    import scipy.io

    try:
        data = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except (ValueError, OSError, TypeError, NotImplementedError, EOFError) as exc:
        raise OSError(
            f"{path}: not a readable MATLAB .mat file (corrupt or truncated?): {exc}"
        ) from exc
    root = _V5(data)
    fp, tr, img = _components(root, _V5.child, path)
    images = {}
    if img is not None and np.ndim(img[1]) == 2:
        images[f"extract_{img[0]}"] = np.asarray(img[1], dtype=np.float32)
    traces = np.asarray(tr[1], dtype=np.float32)
    traces = traces.reshape(-1, 1) if traces.ndim == 1 else traces  # T x N -> (T, 1)
    sw = fp[1]
    image_hw = next(iter(images.values())).shape if images else None
    if sp.issparse(sw):
        check_sparse(sw, str(path), fp[0])
        h, w = _shape_for_sparse(path, sw.shape[0], image_hw, hw, movie_shape)
        footprints = fortran_pixels_to_c(sw, h, w)
    else:
        sw = np.asarray(sw)
        if sw.ndim == 2:  # one candidate squeezed: H x W
            sw = sw[:, :, None]
        if sw.ndim != 3 or sw.dtype.kind not in "biuf":
            raise ValueError(
                f"{path}: {fp[0]} has shape {sw.shape} dtype {sw.dtype}; expected H x W x N numbers"
            )
        h, w, n = sw.shape
        footprints = csr_from_dense_blocks(
            lambda a, b: sw[:, :, a:b].transpose(2, 0, 1), n, h, w, progress=progress
        )
    n = footprints.shape[0]
    traces = _orient_traces(path, traces, n, t_major=True)
    metrics = _cellcheck_metrics(root, _V5.child, n, path)
    return Candidates(footprints, traces, h, w, "extract", path, metrics=metrics, images=images)


def _shape_for_sparse(path, n_pixels, image_hw, hw, movie_shape=None):
    for source, shape in (("summary image", image_hw), ("movie", hw)):
        if shape is not None:
            if shape[0] * shape[1] != n_pixels:
                raise ValueError(
                    f"{path}: sparse spatial weights have {n_pixels} pixel rows but "
                    f"the {source} is {shape[0]} x {shape[1]}"
                )
            return check_fov(shape[0], shape[1], f"{path}: {source}", movie_shape)
    raise MissingShapeError(
        f"{path}: spatial weights are a 2-D sparse ({n_pixels} pixels) x N "
        f"matrix and the file has no summary image: the field of view's "
        f"height and width are needed (from the movie)"
    )


def _orient_traces(path, traces, n, *, t_major: bool) -> np.ndarray:
    """(N, T) from MATLAB's T x N (``t_major``) or h5py's (N, T); the other order if only it
    fits."""
    first, second = (traces.T, traces) if t_major else (traces, traces.T)
    if first.shape[0] == n:
        return np.ascontiguousarray(first)
    if second.shape[0] == n:
        log.info("%s: traces stored as N x T; transposed", path)
        return np.ascontiguousarray(second)
    raise ValueError(
        f"{path}: traces have shape {traces.shape}, expected T x {n} (one column per footprint)"
    )


def _cellcheck(node: _Node, n: int, path: Path) -> dict[str, np.ndarray]:
    out = {}
    fields = node.fields()
    if "is_bad" in fields:
        v = as_metric(np.asarray(node.get("is_bad")), n, "is_bad", str(path))
        if v is not None:
            out["extract_is_bad"] = v
    if "metrics" in fields:
        m = np.asarray(node.get("metrics"), dtype=np.float32)
        m = m.reshape(-1, 1) if m.ndim == 1 else m
        if m.ndim == 2:
            m = m.T if (m.shape[0] == n and m.shape[1] != n) else m  # -> metrics x N
            if m.shape[1] == n:
                for i, row in enumerate(m):
                    out[f"extract_cellcheck_{i}"] = row
    return out


def _v73_traces(path: Path, dataset, n: int):
    """MATLAB's T x N (h5py's (N, T)) read by blocks of rows as ingest writes them; an N x T
    matrix (h5py's (T, N)) by blocks of columns, with a log line; anything else (one trace,
    a non-numeric value) read whole for :func:`_orient_traces` to check. The (N, T) reading
    wins when T == N, as in :func:`_orient_traces`."""
    import h5py

    if not (
        isinstance(dataset, h5py.Dataset) and dataset.dtype.kind in "biuf" and dataset.ndim == 2
    ):
        return np.asarray(dataset, dtype=np.float32)
    rows, cols = dataset.shape
    if rows == n:
        return hdf5_row_traces(path, [dataset.name], (rows, cols))
    if cols == n:
        log.info("%s: traces stored as N x T; read by blocks of columns", path)
        return hdf5_row_traces(path, [dataset.name], (cols, rows), frames_first=True)
    return np.asarray(dataset, dtype=np.float32)


def _read_v73(path: Path, hw, progress, movie_shape=None) -> Candidates:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise OSError(f"{path}: not a readable MATLAB v7.3 (HDF5) file: {exc}") from exc
    with f:
        root = _H5(f)
        fp, tr, img = _components(root, _H5.child, path)
        images = {}
        if img is not None and isinstance(img[1], h5py.Dataset) and img[1].ndim == 2:
            images[f"extract_{img[0]}"] = np.asarray(img[1], dtype=np.float32).T  # (W, H) -> (H, W)
        image_hw = next(iter(images.values())).shape if images else None
        sw = fp[1]
        try:
            if isinstance(sw, h5py.Group) and "MATLAB_sparse" in sw.attrs:
                n_rows = int(sw.attrs["MATLAB_sparse"])
                jc = np.asarray(sw["jc"], dtype=np.int64)
                ir = np.asarray(sw["ir"], dtype=np.int64) if "ir" in sw else np.zeros(0, np.int64)
                vals = (
                    np.asarray(sw["data"], dtype=np.float32)
                    if "data" in sw
                    else np.zeros(0, np.float32)
                )
                h, w = _shape_for_sparse(path, n_rows, image_hw, hw, movie_shape)
                check_compressed(jc, ir, vals, len(jc) - 1, n_rows, str(path), fp[0])
                csc = sp.csc_matrix((vals, ir, jc), shape=(n_rows, len(jc) - 1))
                footprints = fortran_pixels_to_c(csc, h, w)
            elif isinstance(sw, h5py.Dataset) and sw.ndim == 3:  # (N, W, H)
                n = sw.shape[0]
                h, w = check_fov(sw.shape[2], sw.shape[1], f"{path}: {fp[0]}", movie_shape)
                footprints = csr_from_dense_blocks(
                    lambda a, b: np.asarray(sw[a:b]).transpose(0, 2, 1), n, h, w, progress=progress
                )
            elif isinstance(sw, h5py.Dataset) and sw.ndim == 2:
                if image_hw is not None and sw.shape == (image_hw[1], image_hw[0]):  # one cell
                    h, w = image_hw
                    footprints = csr_from_dense_blocks(lambda a, b: np.asarray(sw).T[None], 1, h, w)
                else:  # (N, H*W), column-major pixels
                    h, w = _shape_for_sparse(path, sw.shape[1], image_hw, hw, movie_shape)
                    footprints = fortran_pixels_to_c(sp.csc_matrix(np.asarray(sw).T), h, w)
            else:
                raise ValueError(
                    f"{path}: {fp[0]} is {sw!r}; expected a dense H x W x N array "
                    f"or a sparse matrix"
                )
            n = footprints.shape[0]
            traces = _v73_traces(path, tr[1], n)
        except (OSError, KeyError) as exc:
            raise OSError(
                f"{path}: cannot read {fp[0]}/{tr[0]} (corrupt or truncated file?): {exc}"
            ) from exc
        if not isinstance(traces, RowBlockTraces):
            traces = traces.reshape(1, -1) if traces.ndim == 1 else traces
            traces = _orient_traces(path, traces, n, t_major=False)
        metrics = _cellcheck_metrics(root, _H5.child, n, path)
    return Candidates(footprints, traces, h, w, "extract", path, metrics=metrics, images=images)
