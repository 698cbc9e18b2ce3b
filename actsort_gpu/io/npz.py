"""Generic ``.npz`` extraction output (``numpy.savez``), for any extractor without a reader.

Keys
- ``footprints``: (N, H, W) dense float array, **or** CSR parts ``footprints_data`` (nnz,),
  ``footprints_indices`` (nnz,) pixel index = row * W + col, ``footprints_indptr`` (N + 1,)
  together with ``height`` and ``width`` (scalars);
- ``traces``: (N, T) float;
- optional ``fs_hz`` (scalar), ``metric_<name>`` (N,) -> metric ``<name>``,
  ``image_<name>`` (H, W) -> image ``<name>``.
Loaded with ``allow_pickle=False``: the file cannot run code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._footprints import csr_from_dense_blocks
from .candidates import Candidates

__all__ = ["read_npz", "write_npz"]


def read_npz(path: str | Path) -> Candidates:
    """Read a generic ``.npz`` (see the module docstring) into Candidates."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        keys = set(z.files)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise OSError(f"{path}: not a readable .npz file (corrupt or truncated?): {exc}") from exc
    try:
        with z:
            if "traces" not in keys:
                raise KeyError(f"{path}: no 'traces' array; keys found: {sorted(keys)}")
            if "footprints" in keys:
                fp = z["footprints"]
                if fp.ndim != 3:
                    raise ValueError(
                        f"{path}: 'footprints' has shape {fp.shape}, expected (N, H, W)"
                    )
                n, h, w = fp.shape
                footprints = csr_from_dense_blocks(lambda a, b: fp[a:b], n, h, w)
            elif {
                "footprints_data",
                "footprints_indices",
                "footprints_indptr",
                "height",
                "width",
            } <= keys:
                h, w = int(z["height"]), int(z["width"])
                indptr = z["footprints_indptr"]
                footprints = sp.csr_matrix(
                    (z["footprints_data"], z["footprints_indices"], indptr),
                    shape=(len(indptr) - 1, h * w),
                )
            else:
                raise KeyError(
                    f"{path}: no 'footprints' (N, H, W) nor CSR parts footprints_data/"
                    f"indices/indptr + height, width; keys found: {sorted(keys)}"
                )
            traces = z["traces"]
            metrics = {k[len("metric_") :]: z[k] for k in keys if k.startswith("metric_")}
            images = {k[len("image_") :]: z[k] for k in keys if k.startswith("image_")}
            fs = float(z["fs_hz"]) if "fs_hz" in keys else None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise OSError(f"{path}: cannot read an array (corrupt or truncated?): {exc}") from exc
    return Candidates(
        footprints, traces, h, w, "npz", path, metrics=metrics, images=images, fs_hz=fs
    )


def write_npz(
    path: str | Path,
    footprints: sp.csr_matrix,
    traces: np.ndarray,
    height: int,
    width: int,
    *,
    fs_hz: float | None = None,
    metrics: dict | None = None,
    images: dict | None = None,
) -> None:
    """Write the generic layout (CSR parts) that :func:`read_npz` reads."""
    fp = sp.csr_matrix(footprints)
    arrays = {
        "footprints_data": fp.data,
        "footprints_indices": fp.indices,
        "footprints_indptr": fp.indptr,
        "height": np.int64(height),
        "width": np.int64(width),
        "traces": np.asarray(traces),
    }
    if fs_hz is not None:
        arrays["fs_hz"] = np.float64(fs_hz)
    arrays.update({f"metric_{k}": np.asarray(v) for k, v in (metrics or {}).items()})
    arrays.update({f"image_{k}": np.asarray(v) for k, v in (images or {}).items()})
    np.savez(path, **arrays)
