"""``preprocess(store_path, config)``: geometry, events, the movie pass, and the store writes."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import schema
from ..backend import cpu_cores, resolve_backend
from ..config import PreprocessConfig, as_dict
from ..heap import release_free_heap, resident_anon_bytes
from ..io.direct import FileBytes
from ..store import SortStore, code_max, file_fingerprint, quantise_ranges
from . import compiled
from .checkpoint import SCRATCH_NAME, disk_error
from .events import downsample_traces, find_events, snapshot_frames, snapshot_traces
from .geometry import compute_geometry
from .plan import (
    MIN_BUDGET_BYTES,
    PROCESS_TARGET_BYTES,
    chunk_frames_for,
    default_budget_bytes,
    gather_batch_bytes,
    plan_pass,
)
from .stream import run_pass, run_pass_distributed

log = logging.getLogger(__name__)

__all__ = ["preprocess", "resolve_movie_path", "SNAPSHOT_DTYPES"]

SNAPSHOT_DTYPES = schema.SNAPSHOT_DTYPES
_TRACE_BLOCK_BYTES = 256 * 2**20
_WRITE_BLOCK_BYTES = 64 * 2**20


def resolve_movie_path(store: SortStore, movie_path: str | Path | None) -> Path:
    """The movie to read: ``movie_path`` if given, else the resolved path recorded at ingest,
    else the path as given at ingest; FileNotFoundError asking for --movie otherwise."""
    if movie_path is not None:
        p = Path(movie_path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: movie not found (--movie)")
        return p
    movie = store.attrs.get("movie") or {}
    fp = movie.get("fingerprint") or {}
    for cand in (fp.get("resolved"), movie.get("path")):
        if cand and Path(cand).exists():
            return Path(cand)
    raise FileNotFoundError(
        f"{store.path}: the movie recorded at ingest ({movie.get('path')!r}) was not found; "
        f"pass its current location with --movie"
    )


def _open_movie(path: Path, store: SortStore):
    from ..io.movies import Interleave, open_movie

    movie_attrs = store.attrs.get("movie") or {}
    movie = open_movie(
        path,
        dataset=movie_attrs.get("dataset"),
        expected_hw=(store.height, store.width),
        interleave=Interleave.from_dict(movie_attrs.get("interleave")),
    )
    expected = (int(movie_attrs.get("n_frames", movie.n_frames)), store.height, store.width)
    if tuple(movie.shape) != expected:
        movie.close()
        raise ValueError(
            f"{path}: movie has shape {tuple(movie.shape)} but the store {store.path} was "
            f"ingested from a movie of shape {expected} (frames, height, width); the file "
            f"changed or is another recording"
        )
    recorded = movie_attrs.get("signature")  # stores ingested before 2026-12-07 have none
    if recorded and movie.pixel_signature(recorded["frames"]) != recorded:
        movie.close()
        raise ValueError(
            f"{path}: frames {recorded['frames']} differ from those of the movie the store "
            f"{store.path} was ingested from ({movie_attrs.get('path')}): another recording of "
            "the same shape, or the file was edited since; pass the movie it was ingested from "
            "(if it was replaced on purpose, ingest again with an extraction made from it)"
        )
    return movie


def _clims(values: np.ndarray) -> np.ndarray:
    """ActSort compute_clims: min, max, sorted values at 1-based positions max(1, round(0.1 n))
    and min(n, round(0.999 n)) (MATLAB round: half away from zero); float32 (4,).

    Integer values with a range below 2**20 use a histogram (one pass) instead of a partition;
    the result is the same (float32 rounding is monotone)."""
    n = values.size
    if n == 0:
        return np.zeros(4, np.float32)
    k10 = max(1, int(np.floor(0.1 * n + 0.5))) - 1
    k999 = min(n, int(np.floor(0.999 * n + 0.5))) - 1
    if values.dtype.kind in "ui":
        lo, hi = int(values.min()), int(values.max())
        if hi - lo < 2**20:
            cum = np.cumsum(
                np.bincount(
                    (values.astype(np.int64) - lo) if lo or values.dtype.kind == "i" else values,
                    minlength=hi - lo + 1,
                )
            )
            q = np.searchsorted(cum, [k10, k999], side="right") + lo
            return np.array([lo, hi, q[0], q[1]], np.float32)
        values = values.astype(np.float32)
    part = np.partition(values, [k10, k999])
    return np.array([values.min(), values.max(), part[k10], part[k999]], np.float32)


#: threads finding events (each on its own part of the candidates, in blocks of half the
#: trace budget, so together they hold what one did)
_EVENT_THREADS = 2


def _events(store: SortStore, cfg: PreprocessConfig, part: slice) -> np.ndarray:
    """Event frames (len, n_events) of the candidates ``part``, by blocks of traces."""
    t = store.n_frames
    rows = max(1, _TRACE_BLOCK_BYTES // _EVENT_THREADS // max(t * 8 * 4, 1))
    out = np.empty((part.stop - part.start, cfg.n_events), np.int32)
    for lo in range(part.start, part.stop, rows):
        hi = min(part.stop, lo + rows)
        out[lo - part.start : hi - part.start] = find_events(
            store.traces(slice(lo, hi)),
            n_events=cfg.n_events,
            edge=tuple(cfg.edge_exclusion_frames),
            distance_fraction=cfg.min_peak_distance_fraction,
        )
    return out


def _snapshot_traces(store: SortStore, frames: np.ndarray, dt: int) -> np.ndarray:
    n, t = store.n_candidates, store.n_frames
    rows = max(1, _TRACE_BLOCK_BYTES // max(t * 4 * 3, 1))
    out = np.empty(frames.shape, np.float32)
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        out[lo:hi] = snapshot_traces(
            downsample_traces(store.traces(slice(lo, hi)), dt), frames[lo:hi]
        )
    return out


def _quantise_block(raw, bounds, valid, hw, clims, scale, dtype) -> np.ndarray:
    """NumPy twin of :func:`.compiled.quantise_snapshots` (float scratch values, float storage,
    or no Numba): the codes of ``raw``; fills ``clims`` (g, 4) and ``scale`` (g, 2).

    valid : (g, E, F) bool; hw : (g,) crop pixels of each candidate."""
    g, e, f = valid.shape
    for k in range(g):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        if hi > lo:
            vals = raw[lo:hi].reshape(e * f, -1)[valid[k].ravel()]
            clims[k] = _clims(vals.ravel())
    valid_el = np.repeat(valid.reshape(-1), np.repeat(hw, e * f))
    # store.quantise per candidate, vectorised: the invalid frames get code 0 (float
    # storage: 0.0), and each candidate's (lo, hi) is its valid values' (min, max)
    out, scale[:, 0], scale[:, 1] = quantise_ranges(
        raw, clims[:, 0], clims[:, 1], dtype, sizes=np.diff(bounds), invalid=~valid_el
    )
    return out


def _quantise_parts() -> int:
    """How many threads quantise a block of snapshots: the cores, up to 4 (the store's writer
    thread compresses beside them)."""
    return min(4, cpu_cores())


def _quantise_in_parts(helpers, parts, raw, bounds, slots, out, clims, scale) -> None:
    """:func:`.compiled.quantise_snapshots` of a block's g candidates, cut into ``parts`` runs of
    whole candidates holding about equal numbers of values: all but the first on the
    ``helpers`` pool, the first on this thread (the kernel releases the GIL). Each candidate's
    numbers depend on its values only, so the result is that of one call."""
    g = len(bounds) - 1
    cuts = np.searchsorted(bounds, np.linspace(0, bounds[-1], parts + 1)[1:-1])
    edges = np.unique(np.concatenate([[0], np.clip(cuts, 0, g), [g]]))

    def part(a: int, b: int) -> None:
        lo, hi = int(bounds[a]), int(bounds[b])
        compiled.quantise_snapshots(
            raw[lo:hi], bounds[a : b + 1] - lo, slots[a:b], out[lo:hi], clims[a:b], scale[a:b]
        )

    jobs = [helpers.submit(part, a, b) for a, b in zip(edges[1:-1], edges[2:])]
    part(edges[0], edges[1])
    for job in jobs:
        job.result()


def _write_snapshots(
    store: SortStore, scratch_file: Path, plan, dtype: np.dtype, src_dtype: np.dtype
) -> None:
    """Quantise each candidate's block from the scratch file (values of ``src_dtype``) and
    write snapshots/*."""
    n = len(plan.crops)
    frames = plan.frames
    offsets = plan.block_offsets
    total = plan.total_elements
    data = store.create_array(schema.SNAPSHOTS_DATA, (total,), dtype)  # the store's chunks
    scale = np.zeros((n, 2), np.float32)
    clims = np.zeros((n, 4), np.float32)
    itemsize = np.dtype(src_dtype).itemsize
    # read back with pread (into one reused buffer), not through a map: a mapped read-back
    # faults its pages in one by one and makes them resident until released
    buffer = np.empty(0, src_dtype)
    e, f = frames.shape[1], frames.shape[2]
    hw = (plan.crops[:, 1] - plan.crops[:, 0]).astype(np.int64) * (
        plan.crops[:, 3] - plan.crops[:, 2]
    ).astype(np.int64)
    compiled_ok = compiled.quantise_unusable(src_dtype, dtype) is None
    parts = _quantise_parts()
    # The store compresses and writes one block's codes (zstd releases the GIL) while the next
    # block is quantised, by this thread and the helpers (the kernel releases it too): at most
    # two blocks of codes exist at a time.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="actsort-snapshots") as writer,
        ThreadPoolExecutor(parts - 1 or 1, thread_name_prefix="actsort-quantise") as helpers,
        contextlib.closing(FileBytes(scratch_file, total * itemsize)) as src,
    ):
        pending = None
        i = 0
        while i < n:
            j = int(np.searchsorted(offsets, offsets[i] + _WRITE_BLOCK_BYTES // 4, side="right"))
            j = min(max(j - 1, i + 1), n)
            base, stop = int(offsets[i]), int(offsets[j])
            if buffer.size < stop - base:
                buffer = np.empty(stop - base, src_dtype)
            raw = buffer[: stop - base]
            src.read_into(memoryview(raw).cast("B"), base * itemsize, "the snapshot scratch")
            valid = frames[i:j] >= 0  # (g, E, F)
            bounds = offsets[i : j + 1] - base
            if compiled_ok:
                out = np.empty(raw.shape, dtype)
                slots = valid.reshape(j - i, e * f)
                _quantise_in_parts(helpers, parts, raw, bounds, slots, out, clims[i:j], scale[i:j])
            else:
                out = _quantise_block(raw, bounds, valid, hw[i:j], clims[i:j], scale[i:j], dtype)
            if pending is not None:
                pending.result()  # a write error surfaces here, before more work is done
            pending = writer.submit(data.__setitem__, slice(base, stop), out) if out.size else None
            i = j
        if pending is not None:
            pending.result()
    store.write_array(schema.SNAPSHOTS_OFFSETS, offsets)
    store.write_array(
        schema.SNAPSHOTS_SCALE, scale, attrs={"dtype": str(dtype), "code_max": code_max(dtype)}
    )
    store.write_array(
        schema.SNAPSHOTS_CLIMS, clims, attrs={"columns": ["min", "max", "p10", "p99.9"]}
    )
    store.write_array(schema.SNAPSHOTS_FRAMES, frames)


def preprocess(
    store_path: str | Path,
    config: PreprocessConfig = PreprocessConfig(),
    *,
    device: str = "auto",
    progress: bool | Callable[[dict], None] = False,
    movie_path: str | Path | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
) -> dict:
    """Compute geometry, events, FOV images and event snapshots of every candidate of a store.

    store_path : a store with the ``ingest`` stage complete.
    config : :class:`PreprocessConfig` (events, outline threshold, crop margin, snapshot dtype,
        memory budget in MB).
    device : 'auto' | 'cpu' | 'cuda' for the movie pass (:func:`..backend.resolve_backend`:
        'cuda' without a usable CuPy GPU raises ``DeviceError`` before the store is touched).
    progress : True for a progress bar (frames/s, MB/s), or a callable receiving a dict after
        each chunk (``frames_done``, ``n_frames``, ``seconds``, ``frames_per_s``, ``mb_per_s``).
    movie_path : the movie, when it moved since ingest.
    scheduler, workers : run the movie pass on Dask (an existing scheduler's address, or a
        LocalCluster of ``workers`` processes): the movie is split into time pieces made of
        whole chunks, merged in order, so the outputs equal the single-process run (images to
        float rounding, snapshots bit for bit). The movie and the store must be on a filesystem
        every worker sees. An unreachable scheduler raises ``cluster.ClusterError`` before the
        store is touched.

    The stage is marked incomplete while it runs; a killed run resumes the movie pass from the
    last checkpoint (every ``stream.CHECKPOINT_S`` seconds; with Dask: the finished pieces)
    when called again. Returns a summary dict (seconds, chunk frames,
    frames/s, MB/s, resumed_from, snapshot bytes).
    """
    t0 = time.perf_counter()
    if config.snapshot_dtype not in SNAPSHOT_DTYPES:
        raise ValueError(
            f"snapshot_dtype must be one of {SNAPSHOT_DTYPES}, got {config.snapshot_dtype!r}"
        )
    if config.n_events < 1 or config.event_half_window_frames < 0:
        raise ValueError(
            f"n_events must be >= 1 and event_half_window_frames >= 0, got "
            f"{config.n_events} and {config.event_half_window_frames}"
        )
    if config.max_memory_mb is not None and not config.max_memory_mb > 0:
        raise ValueError(f"max_memory_mb must be > 0, got {config.max_memory_mb}")
    store = SortStore.open(store_path, "r+")
    store.require("ingest")
    path = resolve_movie_path(store, movie_path)
    backend = resolve_backend(device)
    dt = int((store.attrs.get("movie") or {}).get("temporal_downsample", 1))
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    from ..cluster import dask_client

    movie = _open_movie(path, store)
    try:
        _check_inputs_unchanged(store, path)
        with dask_client(scheduler, workers) as client, _disk_errors(store):
            store.begin_stage(
                "preprocess", {**as_dict(config), **backend.provenance(), "movie": str(path)}
            )
            images, info, geo, events, plan, chunk, budget, scratch = _compute(
                store, movie, path, config, backend, dt, progress, client
            )
            read_mode = None if client is not None else movie.read_mode  # Dask: per worker
    finally:
        movie.close()
        backend.release()
    t_pass_done = time.perf_counter()
    with _disk_errors(store):
        _write_outputs(store, geo, events, plan, images, config, scratch, dt, info)
    shutil.rmtree(scratch, ignore_errors=True)
    with contextlib.suppress(OSError):
        (store.path / ".scratch").rmdir()
    t_end = time.perf_counter()
    summary = {
        "seconds": t_end - t0,
        "pass_seconds": info["seconds"],
        # before the pass: opening, geometry, events, plan; after it: snapshots and the rest
        "setup_seconds": t_pass_done - t0 - info["seconds"],
        "output_seconds": t_end - t_pass_done,
        "chunk_frames": chunk,
        "budget_mb": budget / 2**20,
        "frames_per_s": info["frames_per_s"],
        "mb_per_s": info["mb_per_s"],
        "resumed_from": info["resumed_from"],
        "device": backend.name,
        "accumulator": info.get("accumulator"),
        "read_mode": read_mode,
        "n_candidates": store.n_candidates,
        "snapshot_values": plan.total_elements,
        "pieces": info.get("pieces", 1),
        "checkpoint_seconds": info.get("checkpoint_seconds", 0.0),
        # NaN / Inf pixel values of the movie read as 0 (resumed runs and Dask pieces included)
        "nonfinite_pixels": info.get("nonfinite_pixels", 0),
    }
    store.finish_stage(
        "preprocess", summary["seconds"], **{k: v for k, v in summary.items() if k != "seconds"}
    )
    log.info(
        "preprocessed %d candidates in %.1f s (setup %.1f s, pass %.1f s, outputs %.1f s, "
        "%.0f MB/s, on %s%s%s)",
        store.n_candidates,
        summary["seconds"],
        summary["setup_seconds"],
        info["seconds"],
        summary["output_seconds"],
        info["mb_per_s"],
        backend.name,
        f", {info['accumulator']} accumulator" if info.get("accumulator") else "",
        f", {read_mode} reads" if read_mode else "",
    )
    return summary


def _ingest_record(store: SortStore) -> str:
    """What the store's candidates came from (ingest's movie and extraction fingerprints and
    its finish time), for the pass digest: a checkpoint of another ingest is not resumed."""
    a = store.attrs
    facts = [
        (a.get("movie") or {}).get("fingerprint"),
        (a.get("extraction") or {}).get("fingerprint"),
        (a.get("stages") or {}).get("ingest", {}).get("finished"),
    ]
    return json.dumps(facts, sort_keys=True, default=str)


def _check_inputs_unchanged(store: SortStore, movie_path: Path) -> None:
    """Warn when the movie's size / mtime differ from ingest's record (``movie.fingerprint``).

    The pass digest holds the movie's current size and mtime (and ingest's record of the
    movie and the extraction), so a pass is never resumed across an edit of the movie; this
    warning tells the user that the store's traces and footprints (from the extraction read at
    ingest) may no longer match the movie. (The extraction folder is not compared: exports
    write iscell.npy into a Suite2p folder.)
    """
    old = (store.attrs.get("movie") or {}).get("fingerprint") or {}
    if not old or not Path(movie_path).exists():
        return
    new = file_fingerprint(movie_path)
    if new["size_bytes"] != old.get("size_bytes") or new["mtime"] != old.get("mtime"):
        log.warning(
            "%s: the movie changed since ingest (size %s -> %s bytes, mtime %s -> %s); the "
            "store's candidates come from the ingested version: ingest again (--overwrite) if "
            "its content changed",
            movie_path,
            old.get("size_bytes"),
            new["size_bytes"],
            old.get("mtime"),
            new["mtime"],
        )


@contextlib.contextmanager
def _disk_errors(store: SortStore):
    """A full or read-only disk while writing the store or its scratch: one message naming the
    file and the free space, and how to go on (a re-run resumes from the last checkpoint)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT) or len(exc.args) == 1:
            raise  # not a disk fault, or already one line of ours (``checkpoint.disk_error``)
        target = exc.filename or store.path
        if exc.errno == errno.EROFS:
            fix = "make it writable"
        else:
            try:
                free = shutil.disk_usage(store.path).free / 1e9
                fix = f"{free:.3g} GB free in {store.path}: free some space"
            except OSError:
                fix = "free some space"
        raise disk_error(
            exc.errno,
            f"{target}: cannot write ({exc.strerror}) while preprocessing {store.path}; {fix}, "
            f"then run `actsort preprocess {store.path}` again (it resumes)",
        ) from exc


def _chunk_budget(config, backend, path) -> tuple[int, int | None]:
    """(chunk budget in bytes, anonymous bytes held before the pass or None). An explicit
    ``max_memory_mb`` is the chunk budget itself; the default is what is left of
    ``plan.PROCESS_TARGET_BYTES`` once the geometry, events and plan are built (their freed
    temporaries given back first), so the whole process stays near the target whatever N is."""
    if config.max_memory_mb:
        return int(config.max_memory_mb * 2**20), None
    release_free_heap()
    held = resident_anon_bytes()
    budget = default_budget_bytes(backend.is_gpu, held_bytes=held or 0)
    if held is not None and PROCESS_TARGET_BYTES - held < MIN_BUDGET_BYTES:
        log.warning(
            "%s: the candidates' geometry, events and gather plan hold %.0f MB before the movie "
            "pass, nearly all of the %.0f MB the stage aims at; its chunks get %.0f MB more "
            "(set the budget with --max-memory MB)",
            path,
            held / 2**20,
            PROCESS_TARGET_BYTES / 2**20,
            budget / 2**20,
        )
    return budget, held


def _compute(store, movie, path, config, backend, dt, progress, client):
    """Geometry, events and the movie pass (in process, or on the Dask ``client``)."""
    h, w = store.height, store.width
    # Events (NumPy and compiled work on blocks of traces, outside the GIL) are found on two
    # threads, each on half of the candidates, while the geometry is computed.
    n = store.n_candidates
    bounds = np.linspace(0, n, _EVENT_THREADS + 1).astype(int)
    with ThreadPoolExecutor(_EVENT_THREADS, thread_name_prefix="actsort-events") as side:
        event_jobs = [
            side.submit(_events, store, config, slice(a, b)) for a, b in zip(bounds, bounds[1:])
        ]
        geo = compute_geometry(
            store.footprints(),
            h,
            w,
            threshold=config.outline_threshold,
            margin=config.crop_margin_px,
        )
        events = np.concatenate([job.result() for job in event_jobs])
    frames = snapshot_frames(
        events, dt=dt, n_movie_frames=movie.n_frames, half_window=config.event_half_window_frames
    )
    plan = plan_pass(frames, geo.crops)
    budget, held = _chunk_budget(config, backend, path)
    chunk = chunk_frames_for(budget, h, w, movie.dtype.itemsize, movie.n_frames)
    log.info(
        "movie pass: %s, %d frames per chunk (budget %.0f MB%s), %s%s",
        path,
        chunk,
        budget / 2**20,
        "" if held is None else f"; {held / 2**20:.0f} MB held before the pass",
        backend.describe(),
        " on Dask" if client else "",
    )
    scratch = store.path / ".scratch" / "preprocess"
    if client is None:
        images, info = run_pass(
            movie,
            plan,
            scratch,
            chunk_frames=chunk,
            xp=backend.xp,
            progress=progress,
            gather_bytes=gather_batch_bytes(budget),
            inputs=_ingest_record(store),
        )
    else:
        images, info = run_pass_distributed(
            client,
            movie,
            plan,
            scratch,
            chunk_frames=chunk,
            device=backend.name,
            dataset=(store.attrs.get("movie") or {}).get("dataset"),
            gather_bytes=gather_batch_bytes(budget),
            inputs=_ingest_record(store),
        )
    return images, info, geo, events, plan, chunk, budget, scratch


def _write_outputs(store, geo, events, plan, images, config, scratch, dt, info):
    for kind, img in images.items():
        store.write_array(schema.FOV_IMAGES[kind], img)
    store.write_array(schema.CENTERS, geo.centers)
    store.write_array(schema.CROPS, geo.crops)
    store.write_ragged(schema.OUTLINES, geo.outlines)
    store.write_ragged(schema.NEIGHBORS, geo.neighbors)
    store.write_array(schema.EVENTS, events)
    store.write_array(schema.SNAPSHOT_TRACES, _snapshot_traces(store, plan.frames, dt))
    _write_snapshots(
        store,
        scratch / SCRATCH_NAME,
        plan,
        np.dtype(config.snapshot_dtype),
        np.dtype(info["scratch_dtype"]),
    )
