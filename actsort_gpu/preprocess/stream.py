"""The single sequential pass over the movie.

One background thread reads consecutive chunks of frames (a queue of depth 2, so the next
chunk is read while the current one is processed); for each chunk the main thread

1. updates the FOV accumulators (:class:`~.kernels.ProjectionAccumulator`), and
2. gathers every snapshot *segment* (consecutive frames of one candidate's crop around one
   event) that falls in the chunk into a packed buffer (one batched gather), then copies the
   segments into the per-candidate float32 scratch file ``<store>/.scratch/preprocess/
   snapshots.f32`` (a memory map laid out block by block as the store's ``snapshots/data``).

After every chunk the accumulators and the next frame to read are saved atomically
(``state.npz``, written to a temporary file then renamed) after flushing the scratch file,
so a killed pass resumes from the last completed chunk when run again with the same movie,
events and crops (``meta.json`` holds a digest of those; a mismatch restarts from frame 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .kernels import ProjectionAccumulator, gather_segments

log = logging.getLogger(__name__)

__all__ = ["PassPlan", "plan_pass", "run_pass", "default_budget_bytes", "chunk_frames_for",
           "ChunkReader"]

_GATHER_BATCH_BYTES = 256 * 2**20


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
    v = valid[ci, ei]                                   # (P, F)
    f_lo = np.argmax(v, axis=1)
    f_hi = f - 1 - np.argmax(v[:, ::-1], axis=1)
    m_lo = frames[ci, ei, f_lo].astype(np.int64)
    m_hi = frames[ci, ei, f_hi].astype(np.int64)
    pairs = np.stack([m_lo, m_hi, f_lo, crops[ci, 0], crops[ci, 2], h[ci], w[ci]],
                     axis=1).astype(np.int64)
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


def chunk_frames_for(budget_bytes: int, height: int, width: int, itemsize: int,
                     n_frames: int) -> int:
    """Frames per chunk: the budget over the per-frame cost (3 frames queued or being read, the
    frame being processed, its float32 copy and temporaries) after the fixed accumulators."""
    px = height * width
    fixed = 8 * px * 8 + gather_batch_bytes(budget_bytes)
    per_frame = 4 * px * itemsize + 3 * px * 4
    frames = (int(budget_bytes) - fixed) // per_frame
    return int(max(1, min(frames, n_frames)))


def gather_batch_bytes(budget_bytes: int) -> int:
    """Largest packed snapshot buffer per gather: a quarter of the budget, 1-256 MiB."""
    return int(min(max(budget_bytes // 4, 2**20), _GATHER_BATCH_BYTES))


class ChunkReader:
    """Reads ``movie`` chunks [start, T) in a background thread; iterate to get
    (first_frame, frames). A queue of ``depth`` chunks bounds memory."""

    def __init__(self, movie, chunk_frames: int, start: int = 0, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(movie, chunk_frames, start),
                                        daemon=True, name="actsort-chunk-reader")
        self._thread.start()

    def _run(self, movie, chunk_frames, start):
        try:
            for first, frames in movie.iter_chunks(chunk_frames, start):
                while not self._stop.is_set():
                    try:
                        self._q.put((first, frames), timeout=0.1)
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
            yield item

    def close(self):
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass


def _save_state(scratch: Path, acc: ProjectionAccumulator, next_frame: int, digest: str):
    tmp = scratch / "state.tmp.npz"
    with open(tmp, "wb") as fh:
        np.savez(fh, next_frame=np.array(next_frame), **acc.state())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, scratch / "state.npz")
    _write_json(scratch / "meta.json", {"digest": digest, "next_frame": int(next_frame)})


def _write_json(path: Path, obj: dict):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _try_resume(scratch: Path, digest: str, acc: ProjectionAccumulator) -> int:
    """Load the saved state if it belongs to this plan; return the frame to continue from."""
    meta_p, state_p = scratch / "meta.json", scratch / "state.npz"
    if not (meta_p.is_file() and state_p.is_file()):
        return 0
    try:
        meta = json.loads(meta_p.read_text())
        if meta.get("digest") != digest:
            log.info("%s: saved state is for other parameters; starting from frame 0", scratch)
            return 0
        with np.load(state_p) as st:
            state = {k: st[k] for k in st.files}
        acc.load(state)
        return int(state["next_frame"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s: unreadable saved state (%s); starting from frame 0", scratch, exc)
        return 0


def run_pass(movie, plan: PassPlan, scratch: Path, *, chunk_frames: int, xp=np,
             progress: bool | Callable[[dict], None] = False,
             gather_bytes: int = _GATHER_BATCH_BYTES) -> tuple[dict, dict]:
    """Read ``movie`` once, from the last completed chunk, filling the scratch snapshots.

    Returns (images, info): images max/mean/std/corr (H, W) float32; info with ``seconds``,
    ``resumed_from``, ``chunk_frames``, ``frames_per_s``, ``mb_per_s``.
    ``progress``: True for a tqdm bar, or a callable getting a dict after every chunk.
    """
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    t_movie, height, width = movie.shape
    digest = hashlib.sha256((plan.digest() + json.dumps(
        [list(movie.shape), str(movie.dtype), str(movie.path)])).encode()).hexdigest()
    acc = ProjectionAccumulator(height, width, xp=xp)
    start = _try_resume(scratch, digest, acc)
    snap_path = scratch / "snapshots.f32"
    n_elem = max(plan.total_elements, 1)
    if start == 0 or not snap_path.is_file() or snap_path.stat().st_size != 4 * n_elem:
        if start:
            log.warning("%s: scratch snapshots missing; starting from frame 0", scratch)
            start = 0
            acc = ProjectionAccumulator(height, width, xp=xp)
        with open(snap_path, "wb") as fh:
            fh.truncate(4 * n_elem)
    if start:
        log.info("resuming the movie pass at frame %d of %d", start, t_movie)
    snaps = np.memmap(snap_path, dtype=np.float32, mode="r+", shape=(n_elem,))
    max_window = int(plan.frames.shape[2]) if plan.frames.ndim == 3 else 1
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=t_movie, initial=start, unit="frame", desc="preprocess",
                   dynamic_ncols=True)
    callback = progress if callable(progress) else None
    t0 = time.perf_counter()
    done_bytes = 0
    reader = ChunkReader(movie, chunk_frames, start)
    try:
        for first, frames in reader:
            last = first + frames.shape[0]
            dev = xp.asarray(frames) if xp is not np else frames
            acc.update(dev)
            seg, dst, sizes = _segments_for_chunk(plan, first, last, max_window)
            _gather_into(dev, seg, dst, sizes, snaps, xp, gather_bytes)
            snaps.flush()
            _save_state(scratch, acc, last, digest)
            done_bytes += frames.nbytes
            dt = max(time.perf_counter() - t0, 1e-9)
            stats = {"frames_done": last, "n_frames": t_movie, "seconds": dt,
                     "frames_per_s": (last - start) / dt, "mb_per_s": done_bytes / dt / 1e6}
            if bar is not None:
                bar.update(frames.shape[0])
                bar.set_postfix(fps=f"{stats['frames_per_s']:.0f}",
                                MBps=f"{stats['mb_per_s']:.0f}")
            if callback is not None:
                callback(stats)
    finally:
        reader.close()
        if bar is not None:
            bar.close()
        del snaps
    seconds = time.perf_counter() - t0
    info = {"seconds": seconds, "resumed_from": int(start), "chunk_frames": int(chunk_frames),
            "frames_per_s": (t_movie - start) / max(seconds, 1e-9),
            "mb_per_s": done_bytes / max(seconds, 1e-9) / 1e6}
    return acc.images(), info


def _gather_into(chunk, seg, dst, sizes, snaps, xp, gather_bytes):
    """Gather the segments in batches of bounded size and copy them to the scratch map."""
    if len(seg) == 0:
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
        for (off, d, s) in zip(batch[:, 6].tolist(), dst[begin:stop].tolist(),
                               sizes[begin:stop].tolist()):
            snaps[d:d + s] = packed[off:off + s]
        begin = stop
