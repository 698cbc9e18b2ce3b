"""CaImAn results saved with ``cnm.save('x.hdf5')``.

- ``estimates/A``: CSC group (``data``, ``indices``, ``indptr``, ``shape``) of pixels x
  components, pixels in Fortran order: pixel p is (row p % H, col p // H) for dims (H, W).
- ``estimates/C`` (K, T) denoised traces; ``estimates/YrA`` (K, T) residuals, optional; read
  by blocks of rows when ingest writes them (never held whole).
- ``estimates/dims`` or ``params/data/dims``: (H, W); ``params/data/fr``: frame rate.
- metrics when present: ``SNR_comp`` -> ``caiman_snr``, ``r_values`` -> ``caiman_r_values``,
  ``cnn_preds`` -> ``caiman_cnn_preds``, ``idx_components`` -> ``caiman_accepted`` (0/1).
- image when present: ``estimates/Cn`` -> ``caiman_Cn``.

Trace (``IngestConfig.caiman_trace``): 'C+YrA' (default; C alone when YrA is absent) is
CaImAn's raw trace, noisy like EXTRACT's least-squares traces that ActSort's features were
designed on; 'C' is the denoised (deconvolution-fitted) trace.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..config import IngestConfig
from ._footprints import as_metric, check_compressed, check_fov, fortran_pixels_to_c
from .candidates import Candidates, hdf5_row_traces

log = logging.getLogger(__name__)

__all__ = ["read_caiman", "CAIMAN_TRACES"]

CAIMAN_TRACES = ("C+YrA", "C")


def _numeric(f, name):
    """A numeric dataset's values, or None (CaImAn writes None as the string 'NoneType')."""
    import h5py

    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "biuf":
        return None
    return obj[()]


def read_caiman(
    path: str | Path,
    *,
    config: IngestConfig = IngestConfig(),
    movie_shape: tuple[int, int, int] | None = None,
) -> Candidates:
    """Read a CaImAn HDF5 file into Candidates (see the module docstring); ``movie_shape``
    (when known) bounds the dims before anything of their size is allocated."""
    import h5py

    path = Path(path)
    if config.caiman_trace not in CAIMAN_TRACES:
        raise ValueError(
            f"caiman_trace must be one of {CAIMAN_TRACES}, got {config.caiman_trace!r}"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise OSError(f"{path}: not a readable HDF5 file (corrupt or truncated?): {exc}") from exc
    with f:
        if "estimates/A" not in f or "estimates/C" not in f:
            raise ValueError(
                f"{path}: expected CaImAn groups estimates/A and estimates/C; found "
                f"{sorted(f.get('estimates', f).keys())}"
            )
        dims = _numeric(f, "estimates/dims")
        if dims is None:
            dims = _numeric(f, "params/data/dims")
        if dims is None or len(np.ravel(dims)) != 2:
            raise ValueError(
                f"{path}: need 2-D dims (H, W) in estimates/dims or params/data/dims; "
                f"found {dims!r}"
            )
        h, w = check_fov(*np.ravel(dims), f"{path}: estimates/dims", movie_shape)
        try:
            a = f["estimates/A"]
            if isinstance(a, h5py.Group):
                shape = tuple(int(v) for v in a["shape"][()])
                if len(shape) != 2:
                    raise ValueError(f"estimates/A/shape is {shape}, expected (pixels, components)")
                parts = (a["data"][()], a["indices"][()], a["indptr"][()])
                check_compressed(
                    parts[2], parts[1], parts[0], shape[1], shape[0], str(path), "estimates/A"
                )
                csc = sp.csc_matrix(parts, shape=shape)
            else:
                csc = sp.csc_matrix(a[()])
            c = f["estimates/C"]
            if not isinstance(c, h5py.Dataset) or c.dtype.kind not in "biuf":
                raise ValueError(f"estimates/C is {c!r}, expected a numeric dataset")
            yra = f.get("estimates/YrA")
            yra = yra if isinstance(yra, h5py.Dataset) and yra.dtype.kind in "biuf" else None
        except (OSError, KeyError, ValueError) as exc:
            raise OSError(f"{path}: cannot read estimates/A or C (corrupt file?): {exc}") from exc
        if csc.shape[0] != h * w:
            raise ValueError(
                f"{path}: estimates/A has {csc.shape[0]} pixel rows, expected "
                f"{h} x {w} = {h * w} from dims"
            )
        footprints = fortran_pixels_to_c(csc, h, w)
        n = footprints.shape[0]
        trace_name = "C"
        if config.caiman_trace == "C+YrA" and yra is not None:
            if yra.shape != c.shape:
                raise ValueError(
                    f"{path}: estimates/YrA has shape {yra.shape}, expected "
                    f"{c.shape} like estimates/C"
                )
            trace_name = "C+YrA"
        if c.ndim != 2 or c.shape[0] != n:
            raise ValueError(f"{path}: estimates/C has shape {c.shape}, expected ({n}, T)")
        datasets = ("estimates/C", "estimates/YrA")[: 2 if trace_name == "C+YrA" else 1]
        # read by blocks of rows when ingest writes them: C and YrA are never held whole
        traces = hdf5_row_traces(path, datasets, c.shape)
        metrics = {}
        for src, name in (
            ("SNR_comp", "caiman_snr"),
            ("r_values", "caiman_r_values"),
            ("cnn_preds", "caiman_cnn_preds"),
        ):
            v = _numeric(f, f"estimates/{src}")
            if v is not None:
                v = as_metric(v, n, src, str(path))
                if v is not None:
                    metrics[name] = v
        idx = _numeric(f, "estimates/idx_components")
        if idx is not None:
            accepted = np.zeros(n, np.float32)
            accepted[np.asarray(idx, dtype=np.int64).ravel()] = 1
            metrics["caiman_accepted"] = accepted
        images = {}
        cn = _numeric(f, "estimates/Cn")
        if cn is not None and np.shape(cn) == (h, w):
            images["caiman_Cn"] = np.asarray(cn, dtype=np.float32)
        fr = _numeric(f, "params/data/fr")
    log.info("%s: CaImAn trace %s", path, trace_name)
    return Candidates(
        footprints,
        traces,
        h,
        w,
        "caiman",
        path,
        metrics=metrics,
        images=images,
        fs_hz=float(fr) if fr is not None and float(fr) > 0 else None,
    )
