"""The single sequential pass over the movie.

One background thread (:class:`~.reader.ChunkReader`) reads consecutive chunks of frames into
a ring of preallocated buffers (the next chunk is read while the current one is processed);
for each chunk

1. the FOV accumulators (:class:`~.kernels.ProjectionAccumulator`) are updated: on the CPU on
   a thread pool (row blocks split over the cores), on a GPU by CuPy, while
2. :func:`gather_into` copies every snapshot *segment* (consecutive frames of one candidate's
   crop around one event, :func:`~.plan.segments_for_chunk`) that falls in the chunk into the
   per-candidate scratch file (:mod:`.checkpoint`: in the movie's own dtype when it is a
   <= 4-byte number, else float32; exact). :func:`gather_into` is the same host code on both
   devices (batches of bounded size, offsets rebased per batch, reused buffers, the scatter
   into the scratch file by ``pwrite``); only the launch that packs a batch differs
   (``kernels.HostGather``: NumPy; ``kernels.DeviceGather``: the CuPy RawKernel), so CPU tests
   run every line but that.

After a chunk, when ``CHECKPOINT_S`` seconds passed since the last save (and after the last
chunk), the scratch file is flushed and the accumulators and the next frame to read are saved
atomically (:mod:`.checkpoint`), so a killed pass resumes from the last checkpoint when run
again with the same movie, events and crops (a digest mismatch restarts from frame 0).

Dask (:func:`run_pass_distributed`): the frames are split into pieces of whole chunks
(:func:`~.plan.split_pieces`); each piece (:func:`run_piece`, on a worker) reads its frames,
writes its segments into the shared scratch file (disjoint elements) and returns its
accumulators, which the client merges in piece order.

Modules of the pass: :mod:`.plan` (what is gathered, chunk sizes), :mod:`.reader` (the read-
ahead thread), :mod:`.checkpoint` (scratch, resume state, digest, free space), this one (the
loop), :mod:`.kernels` (per-chunk work on each device). Their public names are importable from
here too.
"""

from __future__ import annotations

import json
import logging
import shutil  # noqa: F401 - part of this module's surface: tests patch stream.shutil.disk_usage
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..io.direct import MappedFileWriter
from .checkpoint import (
    SCRATCH_NAME,
    check_free_space,
    disk_error,
    open_scratch,
    pass_digest,
    save_state,
    scratch_dtype,
    state_bytes,
    try_resume,
    write_json,
)
from .kernels import ProjectionAccumulator, gather_launcher
from .plan import (
    GATHER_BATCH_BYTES,
    PassPlan,
    chunk_frames_for,
    default_budget_bytes,
    gather_batch_bytes,
    plan_pass,
    segments_for_chunk,
    split_pieces,
)
from .reader import ChunkReader, zero_nonfinite

log = logging.getLogger(__name__)

__all__ = [
    "PassPlan",
    "plan_pass",
    "run_pass",
    "run_pass_distributed",
    "run_piece",
    "split_pieces",
    "pass_digest",
    "default_budget_bytes",
    "chunk_frames_for",
    "gather_batch_bytes",
    "gather_into",
    "check_free_space",
    "disk_error",
    "ChunkReader",
    "CHECKPOINT_S",
    "SCRATCH_NAME",
    "scratch_dtype",
]

#: default seconds between resume checkpoints (each writes the float64 accumulators, ~48 MB
#: for a 1024 x 1024 movie, and flushes the scratch snapshots)
CHECKPOINT_S = 20.0
# the free-space check and block reservation of the scratch file (tests call it from here)
_open_scratch = open_scratch


def gather_into(chunk, seg, dst, sizes, snaps, launch, batch_elements: int) -> int:
    """Copy every segment of a chunk to its place in the scratch map; returns the batches.

    The same host code on both devices: the segments are taken in batches of at most
    ``batch_elements`` packed values (a segment larger than that is a batch alone), each
    batch's offsets are rebased to 0, ``launch(chunk, batch, n)`` packs it (the only
    device-specific step: ``kernels.HostGather`` or ``kernels.DeviceGather``, whose buffers are
    reused across batches and chunks) and returns the (n,) values on the host, which are
    copied to their destinations.

    chunk : (t, H, W) frames on the device of ``xp`` (converted here to the scratch dtype when
        it differs: a float64 movie has float32 scratch).
    seg, dst, sizes : :func:`~.plan.segments_for_chunk` of the chunk.
    snaps : (total,) the scratch map (``np.memmap``).
    """
    if len(seg) == 0:
        return 0
    if chunk.dtype != snaps.dtype:
        chunk = chunk.astype(snaps.dtype)
    ends = np.cumsum(sizes)
    begin = n_batches = 0
    # a scratch map is written through its file (pwrite), so no page of it is mapped in
    with MappedFileWriter(snaps) as scratch:
        while begin < len(seg):
            base = int(ends[begin] - sizes[begin])
            stop = int(np.searchsorted(ends, base + batch_elements, side="right"))
            stop = max(stop, begin + 1)
            batch = seg[begin:stop].copy()
            batch[:, 6] -= batch[0, 6]
            packed = launch(chunk, batch, int(ends[stop - 1]) - base)
            for off, d, s in zip(
                batch[:, 6].tolist(), dst[begin:stop].tolist(), sizes[begin:stop].tolist()
            ):
                scratch.write(d, packed[off : off + s])
            begin = stop
            n_batches += 1
    return n_batches


def _pass_range(
    movie,
    plan: PassPlan,
    snaps,
    acc: ProjectionAccumulator,
    start: int,
    stop: int,
    chunk_frames: int,
    xp,
    gather_bytes: int,
    after_chunk: Callable[[int, int, int], None] | None = None,
) -> tuple[int, int]:
    """Read frames [start, stop) chunk by chunk (chunks start at ``start``), accumulate them
    and gather their snapshot segments into ``snaps``; ``after_chunk(last, nbytes,
    nonfinite)`` after each chunk (``nonfinite``: pixel values read as 0 so far in this
    range). Returns (bytes read, non-finite pixel values read as 0)."""
    max_window = int(plan.frames.shape[2]) if plan.frames.ndim == 3 else 1
    batch_elements = max(1, int(gather_bytes) // snaps.dtype.itemsize)
    launch = gather_launcher(xp, snaps.dtype)
    done_bytes = 0
    reader = ChunkReader(movie, chunk_frames, start, stop=stop)
    # NumPy: the accumulation (its own threads) runs while this thread gathers the snapshots;
    # on a GPU both are queued on the device
    side = ThreadPoolExecutor(1, thread_name_prefix="actsort-acc-main") if xp is np else None
    try:
        for first, frames in reader:
            last = first + frames.shape[0]
            dev = frames if xp is np else xp.asarray(frames)
            job = side.submit(acc.update, dev) if side is not None else acc.update(dev)
            seg, dst, sizes = segments_for_chunk(plan, first, last, max_window)
            gather_into(dev, seg, dst, sizes, snaps, launch, batch_elements)
            if side is not None:
                job.result()
            done_bytes += frames.nbytes
            if after_chunk is not None:
                after_chunk(last, frames.nbytes, reader.nonfinite)
    finally:
        reader.close()
        if side is not None:
            side.shutdown(wait=True)
    return done_bytes, reader.nonfinite


def run_pass(
    movie,
    plan: PassPlan,
    scratch: Path,
    *,
    chunk_frames: int,
    xp=np,
    progress: bool | Callable[[dict], None] = False,
    gather_bytes: int = GATHER_BATCH_BYTES,
    threads: int | None = None,
    checkpoint_s: float | None = None,
    inputs: str = "",
) -> tuple[dict, dict]:
    """Read ``movie`` once, from the last checkpoint, filling the scratch snapshots.

    Returns (images, info): images max/mean/std/corr (H, W) float32; info with ``seconds``,
    ``resumed_from``, ``chunk_frames``, ``frames_per_s``, ``mb_per_s``, ``scratch_dtype``,
    ``checkpoints``, ``checkpoint_seconds`` (time spent saving them) and ``accumulator`` (the
    :class:`~.kernels.ProjectionAccumulator` method that ran).
    ``progress``: True for a tqdm bar, or a callable getting a dict after every chunk.
    threads : CPU threads of the accumulation (default: min(cores, 8)).
    checkpoint_s : save the resume state after a chunk when at least this many seconds passed
        since the last save (default ``CHECKPOINT_S``; 0 = after every chunk).
    inputs : fingerprint of what the plan came from (see :func:`pass_digest`); a checkpoint
        saved with other inputs, or another movie size / mtime, is not resumed.
    """
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    t_movie, height, width = movie.shape
    digest = pass_digest(plan, movie, inputs)
    acc = ProjectionAccumulator(height, width, xp=xp, threads=threads)
    start, nonfinite_before = try_resume(scratch, digest, acc)
    snap_path = scratch / SCRATCH_NAME
    n_elem = max(plan.total_elements, 1)
    sdt = scratch_dtype(movie.dtype)
    if start and (not snap_path.is_file() or snap_path.stat().st_size != sdt.itemsize * n_elem):
        log.warning("%s: scratch snapshots missing; starting from frame 0", scratch)
        start = nonfinite_before = 0
        acc = ProjectionAccumulator(height, width, xp=xp, threads=threads)
    open_scratch(
        snap_path,
        sdt.itemsize * n_elem,
        fresh=(start == 0),
        extra_bytes=state_bytes(height, width),
    )
    if start:
        log.info("resuming the movie pass at frame %d of %d", start, t_movie)
    snaps = np.memmap(snap_path, dtype=sdt, mode="r+", shape=(n_elem,))
    every = CHECKPOINT_S if checkpoint_s is None else float(checkpoint_s)
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(
            total=t_movie, initial=start, unit="frame", desc="preprocess", dynamic_ncols=True
        )
    callback = progress if callable(progress) else None
    t0 = time.perf_counter()
    state = {"bytes": 0, "saved": t0, "ckpt_s": 0.0, "ckpts": 0}

    def after_chunk(last: int, nbytes: int, nonfinite: int):
        now = time.perf_counter()
        state["bytes"] += nbytes
        if last >= t_movie or now - state["saved"] >= every:
            snaps.flush()
            save_state(scratch, acc, last, digest, nonfinite=nonfinite_before + nonfinite)
            state["saved"] = time.perf_counter()
            state["ckpt_s"] += state["saved"] - now
            state["ckpts"] += 1
        dt = max(now - t0, 1e-9)
        stats = {
            "frames_done": last,
            "n_frames": t_movie,
            "seconds": dt,
            "frames_per_s": (last - start) / dt,
            "mb_per_s": state["bytes"] / dt / 1e6,
        }
        if bar is not None:
            bar.n = last
            bar.set_postfix(fps=f"{stats['frames_per_s']:.0f}", MBps=f"{stats['mb_per_s']:.0f}")
        if callback is not None:
            callback(stats)

    try:
        done_bytes, nonfinite = _pass_range(
            movie, plan, snaps, acc, start, t_movie, chunk_frames, xp, gather_bytes, after_chunk
        )
    finally:
        acc.close()
        if bar is not None:
            bar.close()
        snaps = None  # release the memory map before the caller removes the scratch
    seconds = time.perf_counter() - t0
    info = {
        "seconds": seconds,
        "resumed_from": int(start),
        "chunk_frames": int(chunk_frames),
        "frames_per_s": (t_movie - start) / max(seconds, 1e-9),
        "mb_per_s": done_bytes / max(seconds, 1e-9) / 1e6,
        "scratch_dtype": str(sdt),
        "checkpoints": state["ckpts"],
        "checkpoint_seconds": state["ckpt_s"],
        "accumulator": acc.method,
        "nonfinite_pixels": _said_nonfinite(movie.path, nonfinite_before + nonfinite),
    }
    return acc.images(), info


def _said_nonfinite(path, n: int) -> int:
    """Log how many non-finite pixel values the pass read as 0 (when any); returns ``n``."""
    if n:
        log.warning(
            "%s: %d non-finite pixel values (NaN / Inf, e.g. the borders motion correction "
            "leaves) were read as 0",
            path,
            n,
        )
    return int(n)


# ------------------------------------------------------------------ Dask: time pieces
def run_piece(piece: tuple[int, int, int], spec: dict) -> dict:
    """One Dask piece: frames [start, stop) of the movie -> accumulator state (host arrays);
    its snapshot segments are written into the shared scratch file (disjoint elements).

    spec : ``movie`` (path), ``dataset``, ``hw``, ``scratch`` (folder visible to the worker,
    holding ``plan.npz`` and the scratch snapshots), ``chunk_frames``, ``gather_bytes``, ``digest``,
    ``ref`` (H, W) float32 centring frame, ``device`` (resolved by the client: "cuda" on a
    worker without a usable GPU is an error, not a CPU run).
    A finished piece leaves ``piece_<k>.npz``: a rerun returns it without reading the movie.
    """
    from ..backend import resolve_backend
    from ..io.movies import Interleave, open_movie

    k, start, stop = piece
    scratch = Path(spec["scratch"])
    backend = resolve_backend(spec.get("device", "cpu"))
    xp = backend.xp
    h, w = spec["hw"]
    acc = ProjectionAccumulator(h, w, xp=xp, ref=spec["ref"], threads=spec.get("threads"))
    name = f"piece_{k}"
    done, nonfinite = try_resume(scratch, spec["digest"], acc, name=name)
    if done == stop:  # finished by an earlier run
        return {**acc.state(), "nonfinite": nonfinite}
    acc = ProjectionAccumulator(h, w, xp=xp, ref=spec["ref"], threads=spec.get("threads"))
    with np.load(scratch / "plan.npz") as z:
        plan = PassPlan(
            **{f: z[f] for f in ("frames", "crops", "block_offsets", "pairs", "pair_dst")}
        )
    n_elem = max(plan.total_elements, 1)
    snaps = np.memmap(
        scratch / SCRATCH_NAME, dtype=np.dtype(spec["scratch_dtype"]), mode="r+", shape=(n_elem,)
    )
    try:
        with open_movie(
            spec["movie"],
            dataset=spec.get("dataset"),
            expected_hw=tuple(spec["hw"]),
            interleave=Interleave.from_dict(spec.get("interleave")),
        ) as movie:
            _, nonfinite = _pass_range(
                movie, plan, snaps, acc, start, stop, spec["chunk_frames"], xp, spec["gather_bytes"]
            )
        snaps.flush()
        save_state(scratch, acc, stop, spec["digest"], name=name, nonfinite=nonfinite)
    finally:
        acc.close()
        del snaps
    return {**acc.state(), "nonfinite": nonfinite}


def run_pass_distributed(
    client,
    movie,
    plan: PassPlan,
    scratch: Path,
    *,
    chunk_frames: int,
    device: str = "cpu",
    dataset: str | None = None,
    gather_bytes: int = GATHER_BATCH_BYTES,
    n_pieces: int | None = None,
    threads: int | None = None,
    inputs: str = "",
) -> tuple[dict, dict]:
    """The movie pass split into time pieces run on a Dask ``client`` (see
    :func:`..cluster.map_pieces`); the accumulators are merged in piece order, so the images
    equal :func:`run_pass`'s to rounding and the snapshots are identical. The movie and the
    store must be on a filesystem the workers see. Returns (images, info) like run_pass."""
    from ..cluster import map_pieces

    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    t_movie, height, width = movie.shape
    digest = pass_digest(plan, movie, inputs)
    snap_path = scratch / SCRATCH_NAME
    n_elem = max(plan.total_elements, 1)
    sdt = scratch_dtype(movie.dtype)
    meta_p = scratch / "pieces.json"
    same = meta_p.is_file() and json.loads(meta_p.read_text()).get("digest") == digest
    open_scratch(snap_path, sdt.itemsize * n_elem, fresh=not same)
    if not same:
        for old in scratch.glob("piece_*"):
            old.unlink()
    np.savez(
        scratch / "plan.npz",
        frames=plan.frames,
        crops=plan.crops,
        block_offsets=plan.block_offsets,
        pairs=plan.pairs,
        pair_dst=plan.pair_dst,
    )
    write_json(meta_p, {"digest": digest})
    if n_pieces is None:
        n_workers = len(client.scheduler_info().get("workers", {})) if client is not None else 1
        n_pieces = 2 * max(n_workers, 1)
    pieces = split_pieces(t_movie, chunk_frames, n_pieces)
    ref = movie.read(0, 1)[0].astype(np.float32)
    zero_nonfinite(ref)  # as the pieces read it
    spec = {
        "movie": str(movie.path),
        "dataset": dataset,
        "interleave": movie.describe().get("interleave"),
        "hw": (height, width),
        "scratch": str(scratch.resolve()),
        "chunk_frames": int(chunk_frames),
        "gather_bytes": int(gather_bytes),
        "digest": digest,
        "ref": ref,
        "device": device,
        "threads": threads,
        "scratch_dtype": str(sdt),
    }
    t0 = time.perf_counter()
    states = map_pieces(client, run_piece, pieces, spec)
    acc = ProjectionAccumulator(height, width, ref=ref, threads=1)
    for st in states:
        part = ProjectionAccumulator(height, width, threads=1)
        part.load(st)
        acc.merge(part)
    seconds = time.perf_counter() - t0
    nbytes = movie.nbytes
    info = {
        "seconds": seconds,
        "resumed_from": 0,
        "chunk_frames": int(chunk_frames),
        "frames_per_s": t_movie / max(seconds, 1e-9),
        "mb_per_s": nbytes / max(seconds, 1e-9) / 1e6,
        "pieces": len(pieces),
        "scratch_dtype": str(sdt),
        "nonfinite_pixels": _said_nonfinite(movie.path, sum(s.get("nonfinite", 0) for s in states)),
    }
    return acc.images(), info
