"""Feature stage: the 76 ActSort features (+ extras) of every candidate, from the store only.

``compute_features(store_path)`` reads blocks of ``FeatureConfig.batch_candidates`` candidates
(traces, footprints, snapshots, snapshot traces), calls the three ActSort families
(:mod:`.temporal` 1-36, :mod:`.spatial` 37-46, :mod:`.spatiotemporal` 47-76) and the extras
(:mod:`.extra`), applies the NaN/Inf policy once (:mod:`.policy`) and writes
``features/matrix`` (N, F) float32 with attrs ``names``, ``groups``, ``version``, ``nan_report``
(:mod:`.registry`). Feature 35 (trace similarity) is a tiled pass over all traces first.
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import time
from collections import defaultdict

import numpy as np
import scipy.sparse as sp

from ..backend import resolve_backend
from ..config import FeatureConfig, as_dict
from ..store import SortStore
from .policy import apply_nan_policy
from .registry import (EXTRA_COMPUTED_NAMES, check_compatible, feature_names,  # noqa: F401
                       feature_set, source_metric_names)

log = logging.getLogger(__name__)

__all__ = ["compute_features", "feature_names", "feature_set", "check_compatible",
           "read_feature_matrix"]


def _families():
    """The spatial and spatiotemporal family functions (imported lazily: heavy modules)."""
    from .spatial import spatial_features
    from .spatiotemporal import spatiotemporal_features

    return spatial_features, spatiotemporal_features


def _check_config(config: FeatureConfig) -> None:
    for key in ("batch_candidates", "similarity_tile"):
        value = getattr(config, key)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"features.{key}: expected a positive integer, got {value!r}")
    if not 0 < config.suite2p_pixel_fraction <= 1:
        raise ValueError(f"features.suite2p_pixel_fraction: expected a value in (0, 1], "
                         f"got {config.suite2p_pixel_fraction!r}")
    if not isinstance(config.snr_window_frames, int) or config.snr_window_frames < 1:
        raise ValueError(f"features.snr_window_frames: expected a positive integer, got "
                         f"{config.snr_window_frames!r}")


def compute_features(store_path, config: FeatureConfig = FeatureConfig(), *,
                     device: str = "auto", progress: bool = False) -> np.ndarray:
    """Compute the feature matrix of the store at ``store_path`` and write ``features/matrix``.

    Parameters
    ----------
    store_path : path of a sort store whose 'ingest' and 'preprocess' stages are complete
    config : FeatureConfig (batch size, similarity tile, extras)
    device : 'auto' | 'cpu' | 'cuda' (array work on CuPy when a GPU is usable)
    progress : show tqdm progress bars

    Returns
    -------
    (N, F) float32 matrix with no NaN or Inf, columns in ``feature_names(store)`` order.
    The stage record (``stages.features`` in the store attrs) holds per-group seconds.
    """
    from tqdm import tqdm

    from .extra import event_snr, footprint_shape, r_values, trace_skew
    from .temporal import temporal_features

    _check_config(config)
    t_start = time.perf_counter()
    store = SortStore.open(store_path, "r+")
    store.require("ingest", "preprocess")
    backend = resolve_backend(device)
    xp = backend.xp
    n, n_t, height, width = store.n_candidates, store.n_frames, store.height, store.width
    src = source_metric_names(store) if config.include_extra else []
    names, groups, version = feature_set(src, include_extra=config.include_extra)
    store.begin_stage("features", {**as_dict(config), "device": backend.name})
    log.info("features: %d candidates x %d frames on %s, %d columns (%s)", n, n_t,
             backend.name, len(names), version)
    spatial_fn, st_fn = _families()
    timings: dict[str, float] = defaultdict(float)
    raw = np.empty((n, len(names)), dtype=np.float64)

    t0 = time.perf_counter()
    footprints = store.footprints()
    spatial_kw = {}
    if "footprints_t" in inspect.signature(spatial_fn).parameters:
        from .spatial import transpose_footprints

        spatial_kw["footprints_t"] = transpose_footprints(footprints)
    timings["read_footprints"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    similarity = trace_similarity(store, config, xp=xp, progress=progress)
    timings["similarity"] += time.perf_counter() - t0

    if config.include_extra:
        keep = footprints.data >= config.suite2p_pixel_fraction
        npix_all = np.bincount(np.repeat(np.arange(n), np.diff(footprints.indptr))[keep],
                               minlength=n)
        nonzero = npix_all[npix_all > 0]
        npix_median = float(np.median(nonzero)) if nonzero.size else np.nan
        source = {name: store.read(f"candidates/source_metrics/{name}").astype(np.float64)
                  for name in src}

    n_temporal, n_spatial, n_st = 36, 10, 30
    block = config.batch_candidates
    for start in tqdm(range(0, n, block), desc="features", disable=not progress):
        rows = slice(start, min(start + block, n))
        t0 = time.perf_counter()
        traces = store.traces(rows)
        traces_x = xp.asarray(traces)
        timings["read_traces"] += time.perf_counter() - t0
        raw[rows, :n_temporal] = temporal_features(
            traces_x, xp=xp, similarity=similarity[rows], timings=timings)

        t0 = time.perf_counter()
        raw[rows, n_temporal:n_temporal + n_spatial] = np.asarray(
            spatial_fn(footprints, height, width, rows, xp=xp, **spatial_kw))
        timings["spatial"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        snapshots = store.snapshots_block(rows)
        crops = store.read("candidates/crops", rows)
        crop_fps = crop_footprints(footprints[rows], crops, width)
        snap_traces = store.read("candidates/snapshot_traces", rows).astype(np.float32)
        event_valid = store.read("candidates/events", rows) >= 0
        timings["read_snapshots"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        raw[rows, n_temporal + n_spatial:76] = np.asarray(
            st_fn(snapshots, crop_fps, snap_traces, event_valid, xp=xp))
        timings["spatiotemporal"] += time.perf_counter() - t0

        if config.include_extra:
            t0 = time.perf_counter()
            from .._xp import to_numpy

            npix, compact, aspect = footprint_shape(
                footprints[rows], height, width, pixel_fraction=config.suite2p_pixel_fraction)
            frames = store.read("snapshots/frames", rows) >= 0
            extra = np.column_stack([
                to_numpy(trace_skew(traces_x, xp=xp)), compact, npix / npix_median, aspect,
                event_snr(traces_x, xp=xp, n_window=config.snr_window_frames),
                r_values(snapshots, crop_fps, frames)])
            cols = 76 + len(EXTRA_COMPUTED_NAMES)
            raw[rows, 76:cols] = extra
            for k, name in enumerate(src):
                raw[rows, cols + k] = source[name][rows]
            timings["extra"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    matrix, report = apply_nan_policy(raw, names)
    del raw
    store.write_array("features/matrix", matrix, dims=["candidates", "features"],
                      units="mixed (see names)", chunks=(min(max(n, 1), 65536), len(names)),
                      attrs={"names": names, "groups": groups, "version": version,
                             "nan_report": report})
    timings["policy_write"] += time.perf_counter() - t0
    seconds = time.perf_counter() - t_start
    n_replaced = int(sum(sum(e.values()) for e in report.values()))
    store.finish_stage("features", seconds, device=backend.name, version=version,
                       n_features=len(names), n_values_replaced=n_replaced,
                       timings_s={k: round(v, 3) for k, v in timings.items()})
    log.info("features: %d x %d in %.1f s; %d NaN/Inf values replaced in %d columns", n,
             len(names), seconds, n_replaced, len(report))
    return matrix


def read_feature_matrix(store_path) -> tuple[np.ndarray, list[str], str]:
    """(matrix (N, F) float32, names, version) of a store whose features stage is complete."""
    store = SortStore.open(store_path, "r")
    store.require("features")
    arr = store.array("features/matrix")
    return np.asarray(arr[...]), list(arr.attrs["names"]), str(arr.attrs["version"])


def crop_footprints(footprints: sp.csr_matrix, crops: np.ndarray, width: int) -> list[np.ndarray]:
    """Footprint rows (n, H*W) CSR cut to their crop windows (n, 4) (row0, row1, col0, col1).

    Returns a list of n (h_i, w_i) float32 arrays (pixels outside the crop are dropped).
    """
    fp = sp.csr_matrix(footprints)
    out = []
    for k in range(fp.shape[0]):
        r0, r1, c0, c1 = (int(v) for v in crops[k])
        img = np.zeros((max(r1 - r0, 0), max(c1 - c0, 0)), dtype=np.float32)
        lo, hi = fp.indptr[k], fp.indptr[k + 1]
        pix = fp.indices[lo:hi].astype(np.int64)
        rr, cc = pix // width, pix % width
        m = (rr >= r0) & (rr < r1) & (cc >= c0) & (cc < c1)
        img[rr[m] - r0, cc[m] - c0] = fp.data[lo:hi][m]
        out.append(img)
    return out


def trace_similarity(store: SortStore, config: FeatureConfig = FeatureConfig(), *, xp=np,
                     progress: bool = False) -> np.ndarray:
    """Feature 35 for every candidate: fraction of other traces correlated > 0.7, (N,) float64.

    The unit-norm rows Z (N, T) float32 are built block by block and kept on the device when
    they fit in half its free memory, else in host memory up to
    ``config.similarity_memory_mb``, else in a temporary file beside the store; then
    :func:`count_similar` multiplies symmetric tiles of ``config.similarity_tile`` rows.
    """
    from .temporal import count_similar, similarity_rows

    n, n_t = store.n_candidates, store.n_frames
    if n < 2:
        return np.full(n, np.nan)
    nbytes = n * n_t * 4
    tmpdir = None
    if xp is not np and nbytes < 0.5 * xp.cuda.runtime.memGetInfo()[0]:
        z_all = xp.empty((n, n_t), dtype=xp.float32)
    elif nbytes <= config.similarity_memory_mb * 2**20:
        z_all = np.empty((n, n_t), dtype=np.float32)
    else:
        tmpdir = tempfile.TemporaryDirectory(prefix="actsort-z-",
                                             dir=os.fspath(store.path.parent))
        z_all = np.lib.format.open_memmap(os.path.join(tmpdir.name, "z.npy"), mode="w+",
                                          dtype=np.float32, shape=(n, n_t))
        log.info("features: similarity rows (%.1f GB) spill to %s", nbytes / 1e9, tmpdir.name)
    try:
        on_device = xp is not np and not isinstance(z_all, np.ndarray)
        for start in range(0, n, config.batch_candidates):
            stop = min(start + config.batch_candidates, n)
            z = similarity_rows(xp.asarray(store.traces(slice(start, stop))), xp=xp)
            z_all[start:stop] = z if on_device else (z if xp is np else z.get())
        counts = count_similar(z_all, xp=xp, tile=config.similarity_tile, progress=progress)
        from .._xp import to_numpy

        return to_numpy(counts).astype(np.float64) / (n - 1)
    finally:
        del z_all
        if tmpdir is not None:
            tmpdir.cleanup()
