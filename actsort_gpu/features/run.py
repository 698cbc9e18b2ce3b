"""Feature stage driver: store in, ``features/matrix`` out (:func:`compute_features`).

Blocks of ``FeatureConfig.batch_candidates`` candidates (on a GPU no more than half its free
memory holds: :func:`device_block`) are read from the store (traces, footprints, snapshots,
snapshot traces); each family (:mod:`.temporal`, :mod:`.spatial`,
:mod:`.spatiotemporal`, :mod:`.extra`) returns :class:`~.columns.NamedColumns`, and every column
is written into the matrix column of its name in :mod:`.registry` order (no column is placed
by position). Feature 35 (trace similarity) is a tiled pass over all traces first. The NaN/Inf
policy runs once (:mod:`.policy`) on the merged matrix.

With a Dask cluster (``scheduler=`` / ``workers=``) the same block function runs as one piece
per block and feature 35 as one piece per tile pair; every piece reads only the store, the
pieces merge in block order and the NaN policy runs once, so the matrix is the in-process one.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .. import schema
from ..backend import cpu_threads, resolve_backend
from ..cluster import map_pieces
from ..config import FeatureConfig, as_dict
from ..heap import release_free_heap
from ..store import SortStore, crop_footprints
from .columns import NamedColumns
from .policy import apply_nan_policy
from .registry import SOURCE_PREFIX, feature_set

log = logging.getLogger(__name__)

__all__ = ["compute_features", "crop_footprints", "read_feature_matrix", "trace_similarity"]


def _families():
    """The spatial and spatiotemporal family functions (imported lazily: heavy modules)."""
    from .spatial import spatial_columns
    from .spatiotemporal import spatiotemporal_columns

    return spatial_columns, spatiotemporal_columns


def _check_config(config: FeatureConfig) -> None:
    for key in ("batch_candidates", "similarity_tile"):
        value = getattr(config, key)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"features.{key}: expected a positive integer, got {value!r}")
    if not 0 < config.suite2p_pixel_fraction <= 1:
        raise ValueError(
            f"features.suite2p_pixel_fraction: expected a value in (0, 1], "
            f"got {config.suite2p_pixel_fraction!r}"
        )
    if config.similarity_method not in SIMILARITY_METHODS:
        raise ValueError(
            f"features.similarity_method: expected one of {SIMILARITY_METHODS}, got "
            f"{config.similarity_method!r}"
        )
    if not isinstance(config.threads, int) or config.threads < 0:
        raise ValueError(
            f"features.threads: expected 0 (one per core) or a positive integer, got "
            f"{config.threads!r}"
        )
    if not isinstance(config.snr_window_frames, int) or config.snr_window_frames < 1:
        raise ValueError(
            f"features.snr_window_frames: expected a positive integer, got "
            f"{config.snr_window_frames!r}"
        )


@dataclass
class _Context:
    """What every block of one run shares (read once per process from the store)."""

    store: SortStore
    config: FeatureConfig
    xp: object
    names: list
    column_of: dict  # feature name -> its matrix column (registry order)
    src: list
    footprints: sp.csr_matrix
    spatial_kw: dict
    npix_median: float
    source: dict
    threads: int  # CPU threads of this process (``feature_threads``)


def feature_threads(config: FeatureConfig, *, piece: bool = False) -> int:
    """CPU threads of the feature stage (``backend.cpu_threads`` of ``config.threads``: for 0
    the cores this process may use, at most 8, or 1 in a Dask piece)."""
    return cpu_threads(config.threads, piece=piece)


def _load_context(
    store: SortStore, config: FeatureConfig, xp, timings, *, piece: bool = False
) -> _Context:
    t0 = time.perf_counter()
    src = store.source_metric_names() if config.include_extra else []
    names = feature_set(src, include_extra=config.include_extra)[0]
    footprints = store.footprints()
    spatial_fn, _ = _families()
    spatial_kw = {}
    if "footprints_t" in inspect.signature(spatial_fn).parameters:
        from .spatial import transpose_footprints

        spatial_kw["footprints_t"] = transpose_footprints(footprints)
    npix_median, source = np.nan, {}
    if config.include_extra:
        n = store.n_candidates
        keep = footprints.data >= config.suite2p_pixel_fraction
        npix_all = np.bincount(
            np.repeat(np.arange(n), np.diff(footprints.indptr))[keep], minlength=n
        )
        nonzero = npix_all[npix_all > 0]
        npix_median = float(np.median(nonzero)) if nonzero.size else np.nan
        source = {name: store.source_metric(name).astype(np.float64) for name in src}
    timings["read_footprints"] += time.perf_counter() - t0
    column_of = {name: j for j, name in enumerate(names)}
    threads = feature_threads(config, piece=piece)
    return _Context(
        store,
        config,
        xp,
        names,
        column_of,
        src,
        footprints,
        spatial_kw,
        npix_median,
        source,
        threads,
    )


#: candidates whose event snapshots are decoded at once (float32: 5 events x 11 frames x the
#: crop each, 140 kB for a 25 x 25 crop): a quarter of a default block, so the decoded
#: snapshots do not add a block's worth (560 MB at 4,096 such candidates) to its traces
SNAPSHOT_ROWS = 1024


def _block_features(ctx: _Context, rows: slice, similarity: np.ndarray, timings) -> np.ndarray:
    """Raw features (n_block, F) float64 of the candidates ``rows`` (NaN/Inf not yet fixed).

    Each family's named columns go to the matrix columns of those names (``ctx.column_of``);
    a matrix column no family filled raises RuntimeError (it would hold garbage). The families
    that read event snapshots run on :data:`SNAPSHOT_ROWS` candidates at a time.
    """
    from .temporal import temporal_columns

    store, xp = ctx.store, ctx.xp
    spatial_fn, _ = _families()
    raw = np.empty((rows.stop - rows.start, len(ctx.names)), dtype=np.float64)
    filled = np.zeros(len(ctx.names), dtype=bool)

    def place(columns: NamedColumns, part: slice = slice(None)) -> None:
        filled[columns.place_into(raw[part], ctx.column_of)] = True

    t0 = time.perf_counter()
    traces = store.traces(rows)
    traces_x = xp.asarray(traces)
    timings["read_traces"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    place(
        temporal_columns(
            traces_x, xp=xp, similarity=similarity, timings=timings, threads=ctx.threads
        )
    )
    release_free_heap()  # what the chunk threads freed stays in their arenas otherwise
    timings["temporal_wall"] += time.perf_counter() - t0  # temporal + peaks, all threads

    t0 = time.perf_counter()
    place(spatial_fn(ctx.footprints, store.height, store.width, rows, xp=xp, **ctx.spatial_kw))
    timings["spatial"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    workers = ctx.threads if xp is np else 1
    step = max(SNAPSHOT_ROWS // workers, 1)  # as much decoded at once as one part of SNAPSHOT_ROWS
    parts = [slice(a, min(a + step, rows.stop)) for a in range(rows.start, rows.stop, step)]
    for part, families in _map_snapshot_parts(ctx, parts, rows, traces_x, workers, timings):
        for columns in families:
            place(columns, slice(part.start - rows.start, part.stop - rows.start))
    timings["snapshot_wall"] += time.perf_counter() - t0  # snapshot families, all threads
    if not filled.all():
        missing = [name for name, ok in zip(ctx.names, filled) if not ok]
        raise RuntimeError(f"feature columns {missing}: no feature family computed them")
    release_free_heap()
    return raw


def _map_snapshot_parts(
    ctx: _Context, parts: list[slice], rows: slice, traces_x, workers: int, timings
):
    """(part, :func:`_snapshot_families` of it) for each part of the block ``rows``, in order.

    The parts run on ``workers`` threads (on the CPU :func:`feature_threads`: their NumPy work
    releases the GIL, two parts at once take ~0.6 of the time of one after the other; the
    extras then run their own chunks on the threads left). On a GPU one part at a time, while
    a host thread reads and decodes the next part's snapshots (:func:`_read_snapshot_inputs`),
    so the store's decoding overlaps the device's work. Each part's columns are the same
    whichever thread computed them. The families' timings are summed over threads, like the
    temporal ones.
    """
    workers = min(workers, len(parts))

    def local(part: slice) -> slice:
        return slice(part.start - rows.start, part.stop - rows.start)

    def one(part: slice, inputs=None, own=None):
        own = defaultdict(float) if own is None else own
        families = _snapshot_families(
            ctx, part, traces_x[local(part)], own, max(1, workers), inputs
        )
        return part, families, own

    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="snapshot-part") as pool:
            results = list(pool.map(one, parts))
    elif ctx.xp is np:
        results = map(one, parts)
    else:
        results = _read_ahead(ctx, parts, one)
    for part, families, own in results:
        for key, value in own.items():
            timings[key] += value
        yield part, families


def _read_ahead(ctx: _Context, parts: list[slice], compute):
    """``compute(part, inputs, timings)`` for each part in order, where a host thread reads
    the next part's :func:`_read_snapshot_inputs` while this one computes (one part ahead)."""

    def read(part: slice):
        own: dict = defaultdict(float)
        return _read_snapshot_inputs(ctx, part, own), own

    with ThreadPoolExecutor(1, thread_name_prefix="snapshot-read") as reader:
        ahead = reader.submit(read, parts[0]) if parts else None
        for k, part in enumerate(parts):
            inputs, own = ahead.result()
            ahead = reader.submit(read, parts[k + 1]) if k + 1 < len(parts) else None
            yield compute(part, inputs, own)


@dataclass
class _SnapshotInputs:
    """What the snapshot families read from the store for some candidates (host arrays)."""

    snapshots: list  # per candidate (events, frames, h, w) float32, decoded (movie units)
    crop_fps: list  # per candidate (h, w) float32: its footprint on its crop
    snap_traces: np.ndarray  # schema.SNAPSHOT_TRACES of the rows, float32
    event_valid: np.ndarray  # schema.EVENTS >= 0: which event slots hold an event
    frames_valid: np.ndarray | None  # schema.SNAPSHOTS_FRAMES >= 0 (with the extras only)


def _read_snapshot_inputs(ctx: _Context, rows: slice, timings) -> _SnapshotInputs:
    """The store's snapshots of ``rows``, decoded, with their crops' footprints, traces and
    validity masks; adds the seconds to timings['read_snapshots']."""
    store = ctx.store
    t0 = time.perf_counter()
    inputs = _SnapshotInputs(
        snapshots=store.snapshots_block(rows),
        crop_fps=crop_footprints(ctx.footprints[rows], store.read(schema.CROPS, rows), store.width),
        snap_traces=store.read(schema.SNAPSHOT_TRACES, rows).astype(np.float32),
        event_valid=store.read(schema.EVENTS, rows) >= 0,
        frames_valid=(
            store.read(schema.SNAPSHOTS_FRAMES, rows) >= 0 if ctx.config.include_extra else None
        ),
    )
    timings["read_snapshots"] += time.perf_counter() - t0
    return inputs


def _snapshot_families(
    ctx: _Context,
    rows: slice,
    traces_x,
    timings,
    sharing: int = 1,
    inputs: _SnapshotInputs | None = None,
) -> list[NamedColumns]:
    """The columns of the families that read event snapshots (spatiotemporal, and with
    ``include_extra`` the extra features and the extractor's own metrics) for the candidates
    ``rows``, whose traces are ``traces_x``; ``sharing``: how many such calls run at once (the
    extras' own threads are the feature threads divided among them); ``inputs``: what
    :func:`_read_snapshot_inputs` gives for ``rows`` (None: read here)."""
    from .extra import extra_columns

    store, config, xp = ctx.store, ctx.config, ctx.xp
    _, st_fn = _families()
    got = _read_snapshot_inputs(ctx, rows, timings) if inputs is None else inputs
    t0 = time.perf_counter()
    out = [st_fn(got.snapshots, got.crop_fps, got.snap_traces, got.event_valid, xp=xp)]
    timings["spatiotemporal"] += time.perf_counter() - t0
    if not config.include_extra:
        return out

    t0 = time.perf_counter()
    out.append(
        extra_columns(
            traces_x,
            ctx.footprints[rows],
            store.height,
            store.width,
            got.snapshots,
            got.crop_fps,
            got.frames_valid,
            npix_median=ctx.npix_median,
            xp=xp,
            pixel_fraction=config.suite2p_pixel_fraction,
            n_window=config.snr_window_frames,
            threads=max(ctx.threads // sharing, 1),
        )
    )
    if ctx.src:  # passed through from the extractor, named by the registry's prefix
        names = [SOURCE_PREFIX + name for name in ctx.src]
        out.append(
            NamedColumns.from_dict(
                {SOURCE_PREFIX + name: ctx.source[name][rows] for name in ctx.src}, names
            )
        )
    timings["extra"] += time.perf_counter() - t0
    return out


_WORKER_CONTEXT: dict = {}


def _block_piece(bounds, store_path, config: FeatureConfig, device: str, similarity):
    """Dask piece: raw features of candidates [start, stop) read from the store, + timings."""
    timings: dict[str, float] = defaultdict(float)
    store = SortStore.open(store_path, "r")
    # one context per worker process and run (the stage's start time names the run)
    key = (
        os.fspath(store_path),
        str(store.attrs["stages"]["features"].get("started")),
        config,
        device,
    )
    ctx = _WORKER_CONTEXT.get(key)
    if ctx is None:
        _WORKER_CONTEXT.clear()
        ctx = _load_context(store, config, resolve_backend(device).xp, timings, piece=True)
        _WORKER_CONTEXT[key] = ctx
    start, stop = bounds
    raw = _block_features(ctx, slice(start, stop), similarity[start:stop], timings)
    return raw, dict(timings)


def _similarity_piece(pair, store_path, tile: int, device: str):
    """Dask piece: feature-35 hit counts of the tile pair (a, b), a <= b, read from the store.

    Returns (a, counts of rows [a, a + tile), b, counts of rows [b, b + tile)); for a == b
    the second part is empty (the diagonal tile counts once, its self-pairs excluded).
    """
    from .._xp import to_numpy
    from .temporal import SIMILARITY_THRESHOLD, similarity_rows

    xp = resolve_backend(device).xp
    store = SortStore.open(store_path, "r")
    a, b = pair
    n = store.n_candidates
    za = similarity_rows(xp.asarray(store.traces(slice(a, min(a + tile, n)))), xp=xp)
    if a == b:
        hit = (za @ za.T) > SIMILARITY_THRESHOLD
        idx = xp.arange(hit.shape[0])
        hit[idx, idx] = False
        return a, to_numpy(hit.sum(axis=1)), b, np.zeros(0, np.int64)
    zb = similarity_rows(xp.asarray(store.traces(slice(b, min(b + tile, n)))), xp=xp)
    hit = (za @ zb.T) > SIMILARITY_THRESHOLD
    return a, to_numpy(hit.sum(axis=1)), b, to_numpy(hit.sum(axis=0))


def _similarity_on_cluster(client, store: SortStore, config: FeatureConfig, device: str):
    """Feature 35 (N,) float64 as a map over tile pairs; equals :func:`trace_similarity`."""
    n, tile = store.n_candidates, similarity_tile_rows(store.n_frames, config)
    if n < 2:
        return np.full(n, np.nan)
    starts = range(0, n, tile)
    pairs = [(a, b) for a in starts for b in starts if b >= a]
    counts = np.zeros(n, dtype=np.int64)
    for a, ca, b, cb in map_pieces(
        client, _similarity_piece, pairs, os.fspath(store.path), tile, device
    ):
        counts[a : a + len(ca)] += ca
        counts[b : b + len(cb)] += cb
    return counts.astype(np.float64) / (n - 1)


def compute_features(
    store_path,
    config: FeatureConfig = FeatureConfig(),
    *,
    device: str = "auto",
    progress: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    connect_timeout_s: float = 10.0,
) -> np.ndarray:
    """Compute the feature matrix of the store at ``store_path`` and write ``features/matrix``.

    Parameters
    ----------
    store_path : path of a sort store whose 'ingest' and 'preprocess' stages are complete
    config : FeatureConfig (batch size, similarity tile, extras, CPU threads)
    device : 'auto' | 'cpu' | 'cuda' (array work on CuPy; see :func:`..backend.resolve_backend`:
        'cuda' without a usable GPU raises ``DeviceError``, 'auto' falls back to the CPU)
    progress : show tqdm progress bars
    scheduler : address of a running Dask scheduler (e.g. ``tcp://host:8786``); the work is
        split into pieces of :func:`device_block` candidates (plus tile pairs for
        feature 35), each reading only the store; results merge in block order and the NaN
        policy runs once on the merged matrix, so the matrix equals the in-process one.
    workers : start a local Dask cluster with this many worker processes instead.
    connect_timeout_s : how long to try to reach ``scheduler``.

    Returns
    -------
    (N, F) float32 matrix with no NaN or Inf, columns in ``feature_names(store)`` order.
    The stage record (``stages.features`` in the store attrs) holds per-group seconds.
    An unreachable scheduler raises :class:`actsort_gpu.cluster.ClusterError` before the
    stage begins (the store is left as it was).
    """
    from tqdm import tqdm

    from ..cluster import dask_client

    _check_config(config)
    t_start = time.perf_counter()
    store = SortStore.open(store_path, "r+")
    store.require("ingest", "preprocess")
    backend = resolve_backend(device)
    xp = backend.xp
    n, n_t = store.n_candidates, store.n_frames
    src = store.source_metric_names() if config.include_extra else []
    names, groups, version = feature_set(src, include_extra=config.include_extra)
    with dask_client(scheduler, workers, timeout_s=connect_timeout_s) as client:
        store.begin_stage(
            "features",
            {
                **as_dict(config),
                **backend.provenance(),
                "scheduler": scheduler,
                "workers": workers,
            },
        )
        where = "in-process" if client is None else f"on Dask ({scheduler or workers})"
        log.info(
            "features: %d candidates x %d frames on %s %s, %d columns (%s)",
            n,
            n_t,
            backend.describe(),
            where,
            len(names),
            version,
        )
        timings: dict[str, float] = defaultdict(float)
        sketch_stats: dict = {}
        block = device_block(config, n_t, xp)
        if block < config.batch_candidates and n > block:
            log.info(
                "features: %d candidates per block (not %d): the GPU's free memory for %d frames",
                block,
                config.batch_candidates,
                n_t,
            )
        bounds = [(a, min(a + block, n)) for a in range(0, n, block)]
        if client is None:
            try:
                t0 = time.perf_counter()
                similarity = trace_similarity(
                    store,
                    config,
                    xp=xp,
                    progress=progress,
                    timings=timings,
                    sketch_stats=sketch_stats,
                )
                timings["similarity"] += time.perf_counter() - t0
                ctx = _load_context(store, config, xp, timings)
                parts = [
                    _block_features(ctx, slice(a, b), similarity[a:b], timings)
                    for a, b in tqdm(bounds, desc="features", disable=not progress)
                ]
                del ctx
            finally:
                backend.release()
        else:
            t0 = time.perf_counter()
            # the workers get the resolved device: "cuda" there fails loudly, never silently
            similarity = _similarity_on_cluster(client, store, config, backend.name)
            timings["similarity"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            results = map_pieces(
                client,
                _block_piece,
                bounds,
                os.fspath(store.path),
                config,
                backend.name,
                similarity,
            )
            timings["blocks_wall"] += time.perf_counter() - t0
            parts = []
            for raw_b, timings_b in results:
                parts.append(raw_b)
                for key, value in timings_b.items():
                    timings[key] += value  # summed over workers (CPU-seconds)
        raw = np.concatenate(parts) if parts else np.empty((0, len(names)))
        del parts

    t0 = time.perf_counter()
    matrix, report = apply_nan_policy(raw, names)
    del raw
    store.write_array(
        schema.FEATURE_MATRIX,
        matrix,
        chunks=(min(max(n, 1), 65536), len(names)),
        attrs={"names": names, "groups": groups, "version": version, "nan_report": report},
    )
    timings["policy_write"] += time.perf_counter() - t0
    seconds = time.perf_counter() - t_start
    n_replaced = int(sum(sum(e.values()) for e in report.values()))
    store.finish_stage(
        "features",
        seconds,
        device=backend.name,
        version=version,
        n_features=len(names),
        n_values_replaced=n_replaced,
        threads=feature_threads(config, piece=client is not None),  # per process
        # feature 35 as it ran: the Dask map computes every tile pair exactly
        similarity_method="exact" if client is not None else similarity_method(n, n_t, config),
        **({"similarity_sketch": sketch_stats} if sketch_stats else {}),
        timings_s={k: round(v, 3) for k, v in timings.items()},
    )
    log.info(
        "features: %d x %d in %.1f s on %s; %d NaN/Inf values replaced in %d columns",
        n,
        len(names),
        seconds,
        backend.name,
        n_replaced,
        len(report),
    )
    return matrix


def read_feature_matrix(store_path) -> tuple[np.ndarray, list[str], str]:
    """(matrix (N, F) float32, names, version) of a store whose features stage is complete."""
    store = SortStore.open(store_path, "r")
    store.require("features")
    arr = store.array(schema.FEATURE_MATRIX)
    return np.asarray(arr[...]), list(arr.attrs["names"]), str(arr.attrs["version"])


SIMILARITY_METHODS = ("auto", "exact", "sketch")
SKETCH_MIN_CANDIDATES = 10_000  # "auto" sketches feature 35 from this many candidates


#: device memory the feature families hold at their peak for one block, per candidate and
#: frame and per candidate (snapshots, crops), with a margin: measured with the CuPy stand-in
#: (tests/fake_cupy.py) at 1,000-2,000 candidates x 1,000-4,000 frames, about 31 B per
#: candidate-frame and 20 kB per candidate
DEVICE_BYTES_PER_VALUE = 48
DEVICE_BYTES_PER_CANDIDATE = 64 * 2**10


def device_block(config: FeatureConfig, n_frames: int, xp) -> int:
    """Candidates per block: ``config.batch_candidates``, and on a GPU no more than fit in half
    its free memory (a block's traces grow with the recording: 4,096 candidates x 1,000,000
    frames are 16 GB per float32 copy, more than a GPU holds)."""
    block = max(int(config.batch_candidates), 1)
    if xp is np:
        return block
    free = int(xp.cuda.runtime.memGetInfo()[0])
    per_candidate = DEVICE_BYTES_PER_VALUE * max(int(n_frames), 1) + DEVICE_BYTES_PER_CANDIDATE
    return max(1, min(block, int(0.5 * free // per_candidate)))


def similarity_tile_rows(n_frames: int, config: FeatureConfig, xp=np) -> int:
    """Rows per feature-35 tile: ``config.similarity_tile``, fewer when two tiles of
    ``n_frames`` float32 columns and their (tile, tile) product would not fit in
    ``config.similarity_memory_mb`` (long recordings), or on a GPU in a quarter of its free
    memory (the rows themselves may take up to half); never fewer than 256 (or the configured
    tile, if smaller)."""
    budget = config.similarity_memory_mb * 2**20
    if xp is not np:
        budget = min(budget, 0.25 * xp.cuda.runtime.memGetInfo()[0])
    # 2 tiles of T float32 + a float32 product and its bool mask: 8 T t + 5 t^2 bytes
    fit = (-8.0 * n_frames + math.sqrt(64.0 * n_frames**2 + 20.0 * budget)) / 10.0
    return int(min(config.similarity_tile, max(256, int(fit) // 256 * 256)))


class _RowFile:
    """(n, T) float32 rows in an unnamed temporary file, written and read back with plain
    file I/O: unlike a memory map, the rows read never count as the process's resident
    memory, so feature 35 runs in O(tile x T) memory whatever N is. The file disappears
    when closed (or when the process dies)."""

    def __init__(self, folder: Path, n: int, n_t: int):
        from ..preprocess.checkpoint import check_free_space

        self.shape = (n, n_t)
        self.dtype = np.dtype(np.float32)
        self._row_bytes = n_t * 4
        check_free_space(folder, n * self._row_bytes, "feature 35 (trace similarity)")
        # closed by close(), which trace_similarity calls in its finally clause
        self._file = tempfile.TemporaryFile(prefix="actsort-z-", dir=os.fspath(folder))  # noqa: SIM115

    def _span(self, rows: slice) -> tuple[int, int]:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("_RowFile: only contiguous row ranges")
        return start, max(stop, start)

    def __setitem__(self, rows: slice, values) -> None:
        start, stop = self._span(rows)
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(stop - start, -1)
        self._file.seek(start * self._row_bytes)
        self._file.write(memoryview(values).cast("B"))

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop = self._span(rows)
        out = np.empty((stop - start, self.shape[1]), np.float32)
        view = memoryview(out).cast("B")
        self._file.seek(start * self._row_bytes)
        got = 0
        while got < len(view):
            n_read = self._file.readinto(view[got:])
            if not n_read:
                raise OSError(f"feature 35 scratch file ended at byte {got} of {len(view)}")
            got += n_read
        return out

    def close(self) -> None:
        self._file.close()


def similarity_method(n: int, n_frames: int, config: FeatureConfig) -> str:
    """``"sketch"`` or ``"exact"``: ``config.similarity_method``, where ``"auto"`` sketches
    (``temporal.count_similar_sketched``) when the recording is long enough for the sketch to
    pay (T >= 4 x its 1,024 columns) and there are enough candidates for feature 35 to matter
    (>= 10,000); the choice depends on the shapes only, never on the device."""
    from .temporal import SKETCH_DIM

    if config.similarity_method != "auto":
        return config.similarity_method
    long_enough = n_frames >= 4 * SKETCH_DIM and n >= SKETCH_MIN_CANDIDATES
    return "sketch" if long_enough else "exact"


def _row_buffer(
    store: SortStore, shape: tuple[int, int], tile: int, config, xp, what: str, share: float = 1.0
):
    """Where (n, width) float32 rows live: on the device when they fit in half its free
    memory, in host memory when they and one tile product fit in ``share`` of
    ``config.similarity_memory_mb``, else in an unnamed temporary file beside the store."""
    nbytes = shape[0] * shape[1] * 4
    if xp is not np and nbytes < 0.5 * xp.cuda.runtime.memGetInfo()[0]:
        return xp.empty(shape, dtype=xp.float32)
    if nbytes + 5 * tile * tile <= share * config.similarity_memory_mb * 2**20:
        return np.empty(shape, dtype=np.float32)
    log.info(
        "features: %s (%.1f GB) spill to a temporary file in %s, %d-row tiles",
        what,
        nbytes / 1e9,
        store.path.parent,
        tile,
    )
    return _RowFile(store.path.parent, *shape)


def trace_similarity(
    store: SortStore,
    config: FeatureConfig = FeatureConfig(),
    *,
    xp=np,
    progress: bool = False,
    timings: dict | None = None,
    sketch_stats: dict | None = None,
) -> np.ndarray:
    """Feature 35 for every candidate: fraction of other traces correlated > 0.7, (N,) float64.

    The unit-norm rows Z (N, T) float32 (and, by :func:`similarity_method`, their sketch
    (N, 1024)) are built block by block and kept where :func:`_row_buffer` puts them (device,
    host, or a file read back one tile at a time: host memory O(tile x T), not O(N x T)); then
    ``count_similar`` multiplies symmetric tiles of :func:`similarity_tile_rows` rows, or
    ``count_similar_sketched`` multiplies only the pairs the sketch cannot rule out (its
    ``stats`` go into ``sketch_stats`` when given).
    """
    from .._xp import to_numpy
    from .temporal import (
        SKETCH_DIM,
        count_similar,
        count_similar_sketched,
        similarity_rows,
        sketch_projection_block,
        sketch_rows,
    )

    n, n_t = store.n_candidates, store.n_frames
    if n < 2:
        return np.full(n, np.nan)
    tile = similarity_tile_rows(n_t, config, xp)
    method = similarity_method(n, n_t, config)
    z_all = _row_buffer(store, (n, n_t), tile, config, xp, "similarity rows")
    sketch = None
    try:
        if method == "sketch":
            # the sketch shares the budget with the row tiles its pairs may need
            shape = (n, SKETCH_DIM)
            sketch = _row_buffer(store, shape, tile, config, xp, "similarity sketch", share=0.5)
            # R drawn once when it is small (T <= 16,384 frames: 64 MB), else per batch
            keep = n_t * SKETCH_DIM * 4 <= 64 * 2**20
            projection = sketch_projection_block(0, n_t, xp=xp) if keep else None
        t0 = time.perf_counter()
        block = device_block(config, n_t, xp)
        for start in range(0, n, block):
            stop = min(start + block, n)
            z = similarity_rows(xp.asarray(store.traces(slice(start, stop))), xp=xp)
            z_all[start:stop] = _to_buffer(z, z_all, xp)
            if sketch is not None:
                rows = sketch_rows(z, projection=projection, xp=xp)
                sketch[start:stop] = _to_buffer(rows, sketch, xp)
            del z
            release_free_heap()  # the block's decoded chunks and filter temporaries
        t1 = time.perf_counter()
        if sketch is None:
            counts = count_similar(z_all, xp=xp, tile=tile, progress=progress)
        else:
            stats = sketch_stats if sketch_stats is not None else {}
            counts = count_similar_sketched(
                z_all, sketch, xp=xp, tile=tile, stats=stats, progress=progress
            )
            log.info(
                "features: similarity by sketch: %d of %d tile pairs ruled out, %d checked "
                "pair by pair (%d pairs), %d by sub-blocks, %d whole; %.0f %% of the exact "
                "products computed",
                stats["tiles_skipped"],
                sum(v for k, v in stats.items() if k.startswith("tiles_")),
                stats["tiles_pairs"],
                stats["pairs_checked"],
                stats["tiles_subblock"],
                stats["tiles_whole"],
                100 * stats["exact_work"],
            )
        result = to_numpy(counts).astype(np.float64) / (n - 1)
        if timings is not None:  # linear (read + unit rows) and quadratic (tiled Z Z^T) parts
            timings["similarity_rows"] = timings.get("similarity_rows", 0.0) + t1 - t0
            timings["similarity_count"] = (
                timings.get("similarity_count", 0.0) + time.perf_counter() - t1
            )
        return result
    finally:
        for buffer in (z_all, sketch):
            if isinstance(buffer, _RowFile):
                buffer.close()
        del z_all, sketch


def _to_buffer(rows, buffer, xp):
    """``rows`` (an ``xp`` array) as what ``buffer`` holds: device rows or host rows."""
    from .._xp import to_numpy

    on_device = xp is not np and not isinstance(buffer, (np.ndarray, _RowFile))
    return rows if on_device else to_numpy(rows)
