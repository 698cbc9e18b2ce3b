"""NWB (Neurodata Without Borders) ophys: a ``PlaneSegmentation`` and its ``RoiResponseSeries``.

Needs pynwb (``pip install actsort-gpu[nwb]``).

- footprints: the ``image_mask`` column (N, H, W), read in blocks of candidates, or the
  ``pixel_mask`` column (ragged (x, y, weight) with x = row, y = column, the first and second
  image axes, as the imaging series' (frames, x, y) data and Suite2p's NWB export use);
  H, W for pixel masks come from an imaging series of the same plane, else from ``hw``.
- traces: the ``RoiResponseSeries`` over those ROIs, preferring one inside ``Fluorescence``
  over ``DfOverF``; its data (T, N) is read as (N, T) by blocks of ROIs at ingest (never
  transposed whole); ``rate`` -> fs_hz.
- metrics: every other numeric 1-D column of the table (e.g. ``iscell``, ``accepted``) as
  ``nwb_<column>``.
With several plane segmentations the first (in file order) with a response series is read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ._footprints import MissingShapeError, as_metric, csr_from_dense_blocks, csr_from_pixel_lists
from .candidates import Candidates, hdf5_row_traces

log = logging.getLogger(__name__)

__all__ = ["read_nwb"]


def _import_pynwb():
    try:
        import pynwb
    except ImportError as exc:
        raise RuntimeError(
            "reading NWB files needs pynwb: install actsort-gpu[nwb] "
            "(pip install 'actsort-gpu[nwb]')"
        ) from exc
    return pynwb


def read_nwb(path: str | Path, *, hw: tuple[int, int] | None = None) -> Candidates:
    """Read the ophys segmentation of an NWB file into Candidates (see the module docstring)."""
    pynwb = _import_pynwb()
    from pynwb.ophys import PlaneSegmentation, RoiResponseSeries

    path = Path(path)
    try:
        io = pynwb.NWBHDF5IO(str(path), "r")
        nwbfile = io.read()
    except Exception as exc:  # pynwb/hdmf raise many types for unreadable files
        raise OSError(f"{path}: not a readable NWB file (corrupt or truncated?): {exc}") from exc
    with io:
        objects = list(nwbfile.objects.values())
        series = [o for o in objects if isinstance(o, RoiResponseSeries)]
        planes = [o for o in objects if isinstance(o, PlaneSegmentation)]
        if not planes:
            raise ValueError(f"{path}: no PlaneSegmentation (ophys ROI table) in the file")
        for ps in planes:
            mine = [s for s in series if s.rois.table is ps]
            if mine:
                break
        else:
            raise ValueError(f"{path}: no RoiResponseSeries references a PlaneSegmentation")
        mine.sort(key=lambda s: 0 if type(s.parent).__name__ == "Fluorescence" else 1)
        rrs = mine[0]
        n = len(ps.id)
        columns = set(ps.colnames)
        if "image_mask" in columns:
            masks = ps["image_mask"].data
            _, h, w = masks.shape
            footprints = csr_from_dense_blocks(lambda a, b: np.asarray(masks[a:b]), n, h, w)
        elif "pixel_mask" in columns:
            h, w = _plane_hw(nwbfile, ps, hw, path)
            index = (
                np.asarray(ps["pixel_mask_index"].data[:], dtype=np.int64)
                if "pixel_mask_index" in ps
                else None
            )
            flat = (
                ps["pixel_mask"].target.data[:] if index is not None else ps["pixel_mask"].data[:]
            )
            flat = np.asarray(flat)
            x, y, wt = (flat[k] for k in flat.dtype.names[:3])
            bounds = np.concatenate([[0], index])
            rows = [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            cols = [y[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            weights = [wt[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            footprints = csr_from_pixel_lists(rows, cols, weights, h, w, f"{path}:pixel_mask")
        else:
            raise ValueError(
                f"{path}: PlaneSegmentation {ps.name!r} has neither image_mask "
                f"nor pixel_mask (voxel masks are not supported)"
            )
        traces = _traces(rrs, n, path)
        metrics = {}
        for col in sorted(columns - {"image_mask", "pixel_mask", "voxel_mask"}):
            try:
                values = np.asarray(ps[col].data[:])
            except (TypeError, ValueError, KeyError, AttributeError):
                continue
            if values.ndim == 1 and values.dtype.kind in "biuf":
                v = as_metric(values, n, col, str(path))
                if v is not None:
                    metrics[f"nwb_{col}"] = v
        fs = rrs.rate
    log.info("%s: NWB PlaneSegmentation %r, traces from %s", path, ps.name, rrs.name)
    return Candidates(
        footprints, traces, h, w, "nwb", path, metrics=metrics, fs_hz=float(fs) if fs else None
    )


#: an RoiResponseSeries over ROIs out of table order is read whole up to this many bytes of
#: float32 (and by blocks beyond: bounded memory, several times slower)
OUT_OF_ORDER_WHOLE_BYTES = 256 << 20


def _traces(rrs, n: int, path: Path):
    """(n, T) float32 traces of the ROI table's rows from the series' (T, S) data: read by
    blocks of ROIs at ingest (:func:`~.candidates.hdf5_row_traces`) when the data is an HDF5
    dataset over distinct ROIs (in table order, Suite2p's and pynwb's usual layout, one run of
    columns per block; in another order, each block's columns, when the matrix is larger than
    :data:`OUT_OF_ORDER_WHOLE_BYTES`); read whole otherwise (a series listing an ROI twice:
    the last column wins). Rows the series does not cover are NaN."""
    import h5py

    roi_rows = np.asarray(rrs.rois.data[:], dtype=np.int64)
    data = rrs.data
    shape = tuple(data.shape)
    if len(shape) != 2 and not (len(shape) == 1 and len(roi_rows) == 1):
        raise ValueError(f"{path}: {rrs.name} data has shape {shape}, expected (T, n_rois)")
    n_columns = shape[1] if len(shape) == 2 else 1
    if n_columns != len(roi_rows):
        raise ValueError(
            f"{path}: {rrs.name} data has shape {shape}, expected "
            f"(T, {len(roi_rows)}) for its {len(roi_rows)} rois"
        )
    if np.any((roi_rows < 0) | (roi_rows >= n)):
        raise ValueError(f"{path}: {rrs.name} references ROIs outside its table of {n} rows")
    distinct = len(np.unique(roi_rows)) == len(roi_rows)
    in_order = bool(np.all(np.diff(roi_rows) > 0))
    # ROIs out of table order: each block reads its columns wherever they lie (every chunk of
    # a chunked dataset, once per block: 15-33 s instead of 1.3-1.8 s at 50,000 x 4,000), so a
    # matrix that fits in a few blocks is read whole instead
    small = shape[0] * n_columns * 4 <= OUT_OF_ORDER_WHOLE_BYTES
    if isinstance(data, h5py.Dataset) and len(shape) == 2 and distinct and (in_order or not small):
        return hdf5_row_traces(
            path, [data.name], (n, shape[0]), frames_first=True, source_rows=roi_rows
        )
    values = np.asarray(data[:], dtype=np.float32).reshape(shape[0], n_columns)
    traces = np.full((n, shape[0]), np.nan, np.float32)
    traces[roi_rows] = values.T
    return traces


def _plane_hw(nwbfile, ps, hw, path) -> tuple[int, int]:
    from pynwb.ophys import OnePhotonSeries, TwoPhotonSeries

    for obj in nwbfile.objects.values():
        if (
            isinstance(obj, (TwoPhotonSeries, OnePhotonSeries))
            and obj.imaging_plane is ps.imaging_plane
            and obj.data is not None
            and len(obj.data.shape) >= 3
        ):
            return int(obj.data.shape[1]), int(obj.data.shape[2])
    if hw is not None:
        return int(hw[0]), int(hw[1])
    raise MissingShapeError(
        f"{path}: pixel masks without an imaging series of the same plane: "
        f"the field of view's height and width are needed (from the movie)"
    )
