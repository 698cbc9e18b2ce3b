"""The single sequential pass over the movie.

One background thread reads consecutive chunks of frames into a ring of 3 preallocated
buffers (``Movie.read_into``; the next chunk is read while the current one is processed and a
buffer is reused only after the consumer is done with it); for each chunk

1. the FOV accumulators (:class:`~.kernels.ProjectionAccumulator`) are updated on a thread
   pool (row blocks split over the CPU cores), while
2. the calling thread copies every snapshot *segment* (consecutive frames of one candidate's
   crop around one event) that falls in the chunk into the per-candidate scratch file
   ``<store>/.scratch/preprocess/snapshots.scratch`` (a memory map laid out block by block as
   the store's ``snapshots/data``, in the movie's own dtype when it is a <= 4-byte number,
   else float32: exact, and half the bytes of float32 for uint16 movies). On a GPU the
   segments are gathered by one kernel per batch instead.

After a chunk, when ``CHECKPOINT_S`` seconds passed since the last save (and after the last
chunk), the scratch file is flushed and the accumulators and the next frame to read are saved
atomically (``state.npz``, written to a temporary file then renamed), so a killed pass resumes
from the last checkpoint when run again with the same movie, events and crops (``meta.json``
holds a digest of those; a mismatch restarts from frame 0).

Dask (:func:`run_pass_distributed`): the frames are split into pieces of whole chunks
(:func:`split_pieces`); each piece (:func:`run_piece`, on a worker) reads its frames, writes its
segments into the shared scratch file (disjoint elements) and returns its accumulators, which
the client merges in piece order.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .kernels import ProjectionAccumulator, gather_segments

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
    "check_free_space",
    "disk_error",
    "ChunkReader",
    "CHECKPOINT_S",
    "SCRATCH_NAME",
    "scratch_dtype",
]

_GATHER_BATCH_BYTES = 256 * 2**20
#: default seconds between resume checkpoints (each writes the float64 accumulators, ~48 MB
#: for a 1024 x 1024 movie, and flushes the scratch snapshots)
CHECKPOINT_S = 20.0


@dataclass
class PassPlan:
    """What the pass gathers.

    frames : (N, E, F) int32 movie frame of each snapshot frame, -1 = none.
    crops : (N, 4) int32 (row0, row1, col0, col1).
    block_offsets : (N + 1,) int64 start of each candidate's block in the scratch (elements).
    pairs : (P, 7) int64 one row per (candidate, event) with frames, columns
        (first movie frame, last movie frame, first slot f, row0, col0, h, w) sorted by first
        frame, and ``pair_dst`` (P,) the scratch element offset of the pair's first slot.
    """

    frames: np.ndarray
    crops: np.ndarray
    block_offsets: np.ndarray
    pairs: np.ndarray
    pair_dst: np.ndarray

    @property
    def total_elements(self) -> int:
        return int(self.block_offsets[-1])

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.frames, self.crops, self.block_offsets):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def plan_pass(frames: np.ndarray, crops: np.ndarray) -> PassPlan:
    """Build the gather plan from the snapshot frames (N, E, F) and crops (N, 4)."""
    frames = np.asarray(frames, np.int32)
    crops = np.asarray(crops, np.int32)
    n, e, f = frames.shape
    h = (crops[:, 1] - crops[:, 0]).astype(np.int64)
    w = (crops[:, 3] - crops[:, 2]).astype(np.int64)
    hw = h * w
    block = e * f * hw
    block_offsets = np.concatenate([[0], np.cumsum(block)]).astype(np.int64)
    valid = frames >= 0
    has = valid.any(axis=2) & (hw[:, None] > 0)
    ci, ei = np.nonzero(has)
    v = valid[ci, ei]  # (P, F)
    f_lo = np.argmax(v, axis=1)
    f_hi = f - 1 - np.argmax(v[:, ::-1], axis=1)
    m_lo = frames[ci, ei, f_lo].astype(np.int64)
    m_hi = frames[ci, ei, f_hi].astype(np.int64)
    pairs = np.stack([m_lo, m_hi, f_lo, crops[ci, 0], crops[ci, 2], h[ci], w[ci]], axis=1).astype(
        np.int64
    )
    dst = block_offsets[ci] + (ei * f + f_lo) * hw[ci]
    order = np.argsort(m_lo, kind="stable")
    return PassPlan(frames, crops, block_offsets, pairs[order], dst[order].astype(np.int64))


def _segments_for_chunk(plan: PassPlan, a: int, b: int, max_window: int):
    """Segment table (S, 7) and scratch destinations (S,) of the frames [a, b)."""
    m_lo = plan.pairs[:, 0]
    lo = np.searchsorted(m_lo, a - max_window, side="left")
    hi = np.searchsorted(m_lo, b, side="left")
    p = plan.pairs[lo:hi]
    d = plan.pair_dst[lo:hi]
    s0 = np.maximum(p[:, 0], a)
    s1 = np.minimum(p[:, 1] + 1, b)
    keep = s1 > s0
    p, d, s0, s1 = p[keep], d[keep], s0[keep], s1[keep]
    nf = s1 - s0
    hw = p[:, 5] * p[:, 6]
    dst = d + (s0 - p[:, 0]) * hw
    sizes = nf * hw
    offsets = (np.cumsum(sizes) - sizes).astype(np.int64)
    seg = np.stack([s0 - a, nf, p[:, 3], p[:, 4], p[:, 5], p[:, 6], offsets], axis=1)
    return seg.astype(np.int64), dst, sizes


def default_budget_bytes(gpu: bool = False) -> int:
    """min(2 GiB, 25 % of MemAvailable); on a GPU also at most 25 % of free GPU memory."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    budget = 2 * 2**30 if avail is None else min(2 * 2**30, avail // 4)
    if gpu:
        import cupy as cp

        free, _ = cp.cuda.runtime.memGetInfo()
        budget = min(budget, free // 4)
    return int(max(budget, 64 * 2**20))


def chunk_frames_for(
    budget_bytes: int, height: int, width: int, itemsize: int, n_frames: int
) -> int:
    """Frames per chunk: the budget, after the fixed accumulators and the gather buffer, over
    the per-frame cost (the reader's ring of 3 chunk buffers, plus a float32 copy of the chunk,
    which only the GPU path makes)."""
    px = height * width
    fixed = 8 * px * 8 + gather_batch_bytes(budget_bytes)
    per_frame = 3 * px * itemsize + px * 4
    frames = (int(budget_bytes) - fixed) // per_frame
    return int(max(1, min(frames, n_frames)))


def gather_batch_bytes(budget_bytes: int) -> int:
    """Largest packed snapshot buffer per gather: a quarter of the budget, 1-256 MiB."""
    return int(min(max(budget_bytes // 4, 2**20), _GATHER_BATCH_BYTES))


class ChunkReader:
    """Reads ``movie`` chunks [start, stop) in a background thread; iterate to get
    (first_frame, frames).

    The frames are read with ``movie.read_into`` into a ring of ``depth + 1`` preallocated
    buffers (no allocation per chunk): one being read, up to ``depth - 1`` queued, one held by
    the consumer. A yielded array is valid until the next one is requested (the buffer then
    goes back to the reader), so it is never overwritten while in use.
    """

    def __init__(
        self, movie, chunk_frames: int, start: int = 0, depth: int = 2, stop: int | None = None
    ):
        stop = movie.n_frames if stop is None else int(stop)
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._free: queue.Queue = queue.Queue()
        n = max(1, min(int(chunk_frames), stop - int(start)))
        for _ in range(depth + 1):
            self._free.put(np.empty((n, movie.height, movie.width), movie.dtype))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(movie, int(chunk_frames), int(start), stop),
            daemon=True,
            name="actsort-chunk-reader",
        )
        self._thread.start()

    def _get(self, q: queue.Queue):
        while not self._stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _run(self, movie, chunk_frames, start, stop):
        try:
            for first in range(start, stop, chunk_frames):
                last = min(stop, first + chunk_frames)
                buf = self._get(self._free)
                if buf is None:
                    return
                frames = movie.read_into(first, last, buf[: last - first])
                while not self._stop.is_set():
                    try:
                        self._q.put((first, frames, buf), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._q.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self._q.put(exc)

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            first, frames, buf = item
            yield first, frames
            self._free.put(buf)

    def close(self):
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._q.get(timeout=0.05)


def _save_state(
    scratch: Path, acc: ProjectionAccumulator, next_frame: int, digest: str, name: str = "state"
):
    tmp = scratch / f"{name}.tmp.npz"
    with open(tmp, "wb") as fh:
        np.savez(fh, next_frame=np.array(next_frame), **acc.state())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, scratch / f"{name}.npz")
    _write_json(
        scratch / f"{name}.json" if name != "state" else scratch / "meta.json",
        {"digest": digest, "next_frame": int(next_frame)},
    )


def _state_bytes(height: int, width: int) -> int:
    """Disk bytes of the checkpoints, at most: the saved state (about 8 float64 (H, W)
    accumulators, ``ProjectionAccumulator.state``) and its temporary copy."""
    return 2 * 10 * 8 * int(height) * int(width)


def _write_json(path: Path, obj: dict):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _try_resume(scratch: Path, digest: str, acc: ProjectionAccumulator, name: str = "state") -> int:
    """Load the saved state if it belongs to this plan; return the frame to continue from."""
    meta_p = scratch / ("meta.json" if name == "state" else f"{name}.json")
    state_p = scratch / f"{name}.npz"
    if not (meta_p.is_file() and state_p.is_file()):
        return 0
    try:
        meta = json.loads(meta_p.read_text())
        if meta.get("digest") != digest:
            log.warning(
                "%s: the saved state is for other parameters or another version of the movie "
                "(size / mtime changed); starting the pass from frame 0",
                scratch,
            )
            return 0
        with np.load(state_p) as st:
            state = {k: st[k] for k in st.files}
        acc.load(state)
        return int(state["next_frame"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s: unreadable saved state (%s); starting from frame 0", scratch, exc)
        return 0


def _movie_stamp(path: Path) -> list:
    """[size in bytes, newest mtime] of the movie file or folder; [] for an in-memory movie.

    Part of the pass digest: a movie edited in place (same shape, new content) between a
    killed pass and its resume gives another digest, so the pass restarts instead of mixing
    old and new frames."""
    path = Path(path)
    if not path.exists():
        return []
    files = [q for q in path.rglob("*") if q.is_file()] if path.is_dir() else [path]
    stats = [q.stat() for q in files]
    return [sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0)]


def pass_digest(plan: PassPlan, movie, inputs: str = "") -> str:
    """Identifies a pass: the plan (frames, crops, offsets), the movie's shape, dtype, path,
    size and mtime, and ``inputs`` (the caller's fingerprint of what the plan came from, e.g.
    the store's ingest record)."""
    facts = [list(movie.shape), str(movie.dtype), str(movie.path), _movie_stamp(movie.path)]
    return hashlib.sha256((plan.digest() + json.dumps(facts) + inputs).encode()).hexdigest()


SCRATCH_NAME = "snapshots.scratch"


def scratch_dtype(movie_dtype) -> np.dtype:
    """dtype of the scratch snapshots: the movie's if an integer or float of <= 4 bytes (the
    values are copied exactly), else float32."""
    dt = np.dtype(movie_dtype)
    return dt if dt.kind in "uif" and dt.itemsize <= 4 else np.dtype(np.float32)


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.3g}"


def disk_error(code: int, message: str) -> OSError:
    """An OSError with ``errno`` ``code`` whose text is ``message`` alone (no "[Errno N]"):
    the CLI prints it as the one line it is."""
    err = OSError(message)
    err.errno = code
    return err


def check_free_space(folder: Path, need_bytes: int, what: str) -> None:
    """OSError(ENOSPC) "needs N GB in DIR, M GB free" unless ``folder`` has ``need_bytes``."""
    free = shutil.disk_usage(folder).free
    if need_bytes > free:
        raise disk_error(
            errno.ENOSPC,
            f"{what} needs {_gb(need_bytes)} GB in {folder}, {_gb(free)} GB free; free some "
            f"space (or move the store to a larger disk) and run again",
        )


def _open_scratch(snap_path: Path, nbytes: int, fresh: bool, extra_bytes: int = 0) -> None:
    """Create (or keep, when resuming) the scratch file of ``nbytes`` with its blocks reserved.

    A memory-mapped write to a block the disk cannot provide kills the process with SIGBUS:
    the free space is checked first (plus ``extra_bytes`` for the checkpoints) and the blocks
    are reserved with ``posix_fallocate``, so a full disk is an error message, not a crash.
    """
    keep = not fresh and snap_path.is_file() and snap_path.stat().st_size == nbytes
    held = snap_path.stat().st_blocks * 512 if snap_path.is_file() else 0
    need = max(nbytes + extra_bytes - held, 0)
    check_free_space(snap_path.parent, need, f"{snap_path}: the movie pass")
    if not keep:
        with open(snap_path, "wb") as fh:
            fh.truncate(nbytes)
    fd = os.open(snap_path, os.O_RDWR)
    try:
        if nbytes:
            os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            log.info("%s: cannot reserve the scratch blocks (%s)", snap_path, exc.strerror)
        else:
            raise disk_error(
                exc.errno, f"{snap_path}: cannot reserve {_gb(nbytes)} GB ({exc.strerror})"
            ) from exc
    finally:
        os.close(fd)


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
    after_chunk: Callable[[int, int], None] | None = None,
) -> int:
    """Read frames [start, stop) chunk by chunk (chunks start at ``start``), accumulate them
    and gather their snapshot segments into ``snaps``; ``after_chunk(last, nbytes)`` after
    each chunk. Returns the bytes read."""
    max_window = int(plan.frames.shape[2]) if plan.frames.ndim == 3 else 1
    done_bytes = 0
    reader = ChunkReader(movie, chunk_frames, start, stop=stop)
    # NumPy: the accumulation (its own threads) runs while this thread gathers the snapshots
    side = ThreadPoolExecutor(1, thread_name_prefix="actsort-acc-main") if xp is np else None
    try:
        for first, frames in reader:
            last = first + frames.shape[0]
            dev = xp.asarray(frames) if xp is not np else frames
            job = side.submit(acc.update, dev) if side is not None else acc.update(dev)
            seg, dst, sizes = _segments_for_chunk(plan, first, last, max_window)
            _gather_into(dev, seg, dst, sizes, snaps, xp, gather_bytes)
            if side is not None:
                job.result()
            done_bytes += frames.nbytes
            if after_chunk is not None:
                after_chunk(last, frames.nbytes)
    finally:
        reader.close()
        if side is not None:
            side.shutdown(wait=True)
    return done_bytes


def run_pass(
    movie,
    plan: PassPlan,
    scratch: Path,
    *,
    chunk_frames: int,
    xp=np,
    progress: bool | Callable[[dict], None] = False,
    gather_bytes: int = _GATHER_BATCH_BYTES,
    threads: int | None = None,
    checkpoint_s: float | None = None,
    inputs: str = "",
) -> tuple[dict, dict]:
    """Read ``movie`` once, from the last checkpoint, filling the scratch snapshots.

    Returns (images, info): images max/mean/std/corr (H, W) float32; info with ``seconds``,
    ``resumed_from``, ``chunk_frames``, ``frames_per_s``, ``mb_per_s``, ``scratch_dtype``,
    ``checkpoints`` and ``checkpoint_seconds`` (time spent saving them).
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
    start = _try_resume(scratch, digest, acc)
    snap_path = scratch / SCRATCH_NAME
    n_elem = max(plan.total_elements, 1)
    sdt = scratch_dtype(movie.dtype)
    if start and (not snap_path.is_file() or snap_path.stat().st_size != sdt.itemsize * n_elem):
        log.warning("%s: scratch snapshots missing; starting from frame 0", scratch)
        start = 0
        acc = ProjectionAccumulator(height, width, xp=xp, threads=threads)
    _open_scratch(
        snap_path,
        sdt.itemsize * n_elem,
        fresh=(start == 0),
        extra_bytes=_state_bytes(height, width),
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

    def after_chunk(last: int, nbytes: int):
        now = time.perf_counter()
        state["bytes"] += nbytes
        if last >= t_movie or now - state["saved"] >= every:
            snaps.flush()
            _save_state(scratch, acc, last, digest)
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
        done_bytes = _pass_range(
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
    }
    return acc.images(), info


# ------------------------------------------------------------------ Dask: time pieces
def split_pieces(n_frames: int, chunk_frames: int, n_pieces: int) -> list[tuple[int, int, int]]:
    """(index, start, stop) time ranges made of whole chunks of the single-process pass (so
    every chunk, and every float32 partial sum, is the same as in one process)."""
    n_chunks = -(-int(n_frames) // int(chunk_frames))
    n_pieces = max(1, min(int(n_pieces), n_chunks))
    out = []
    for k in range(n_pieces):
        a = k * n_chunks // n_pieces
        b = (k + 1) * n_chunks // n_pieces
        out.append((k, a * chunk_frames, min(n_frames, b * chunk_frames)))
    return out


def run_piece(piece: tuple[int, int, int], spec: dict) -> dict:
    """One Dask piece: frames [start, stop) of the movie -> accumulator state (host arrays);
    its snapshot segments are written into the shared scratch file (disjoint elements).

    spec : ``movie`` (path), ``dataset``, ``hw``, ``scratch`` (folder visible to the worker,
    holding ``plan.npz`` and the scratch snapshots), ``chunk_frames``, ``gather_bytes``, ``digest``,
    ``ref`` (H, W) float32 centring frame, ``device``.
    A finished piece leaves ``piece_<k>.npz``: a rerun returns it without reading the movie.
    """
    from ..backend import resolve_backend
    from ..io.movies import open_movie

    k, start, stop = piece
    scratch = Path(spec["scratch"])
    backend = resolve_backend(spec.get("device", "cpu"))
    xp = backend.xp
    h, w = spec["hw"]
    acc = ProjectionAccumulator(h, w, xp=xp, ref=spec["ref"], threads=spec.get("threads"))
    name = f"piece_{k}"
    if _try_resume(scratch, spec["digest"], acc, name=name) == stop:
        return acc.state()
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
            spec["movie"], dataset=spec.get("dataset"), expected_hw=tuple(spec["hw"])
        ) as movie:
            _pass_range(
                movie, plan, snaps, acc, start, stop, spec["chunk_frames"], xp, spec["gather_bytes"]
            )
        snaps.flush()
        _save_state(scratch, acc, stop, spec["digest"], name=name)
    finally:
        acc.close()
        del snaps
    return acc.state()


def run_pass_distributed(
    client,
    movie,
    plan: PassPlan,
    scratch: Path,
    *,
    chunk_frames: int,
    device: str = "cpu",
    dataset: str | None = None,
    gather_bytes: int = _GATHER_BATCH_BYTES,
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
    _open_scratch(snap_path, sdt.itemsize * n_elem, fresh=not same)
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
    _write_json(meta_p, {"digest": digest})
    if n_pieces is None:
        n_workers = len(client.scheduler_info().get("workers", {})) if client is not None else 1
        n_pieces = 2 * max(n_workers, 1)
    pieces = split_pieces(t_movie, chunk_frames, n_pieces)
    ref = movie.read(0, 1)[0].astype(np.float32)
    spec = {
        "movie": str(movie.path),
        "dataset": dataset,
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
    }
    return acc.images(), info


def _gather_into(chunk, seg, dst, sizes, snaps, xp, gather_bytes):
    """Copy every segment of the chunk to its place in the scratch map.

    NumPy: one strided copy per segment straight into the map.
    CuPy: batches of bounded size gathered on the device by one kernel, then copied out."""
    if len(seg) == 0:
        return
    if xp is np:
        flat = snaps.view(np.ndarray)
        for (f, nf, r0, c0, h, w, _), d in zip(seg.tolist(), dst.tolist()):
            flat[d : d + nf * h * w].reshape(nf, h, w)[...] = chunk[
                f : f + nf, r0 : r0 + h, c0 : c0 + w
            ]
        return
    from .._xp import to_numpy

    ends = np.cumsum(sizes)
    begin = 0
    while begin < len(seg):
        base = ends[begin] - sizes[begin]
        stop = int(np.searchsorted(ends, base + gather_bytes // 4, side="right"))
        stop = max(stop, begin + 1)
        batch = seg[begin:stop].copy()
        batch[:, 6] -= batch[0, 6]
        packed = to_numpy(gather_segments(chunk, batch, xp=xp))
        for off, d, s in zip(
            batch[:, 6].tolist(), dst[begin:stop].tolist(), sizes[begin:stop].tolist()
        ):
            snaps[d : d + s] = packed[off : off + s]
        begin = stop
