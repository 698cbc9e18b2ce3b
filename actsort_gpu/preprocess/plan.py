"""What the movie pass gathers, and in what pieces it reads the movie.

- :func:`plan_pass`: the gather plan (:class:`PassPlan`) from the snapshot frames and crops:
  one row per (candidate, event) sorted by first movie frame, and where each lands in the
  scratch snapshots (laid out block by block as the store's ``snapshots/data``).
- :func:`segments_for_chunk`: the *segments* (consecutive frames of one candidate's crop around
  one event) that fall in a chunk of frames, as the (S, 7) table the gather kernels take
  (columns :data:`~.kernels.SEGMENT_FIELDS`).
- Memory: :func:`default_budget_bytes`, :func:`chunk_frames_for` (frames per chunk) and
  :func:`gather_batch_bytes` (packed gather buffer).
- Dask: :func:`split_pieces` (time pieces made of whole chunks).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..heap import proc_bytes

__all__ = [
    "PassPlan",
    "plan_pass",
    "segments_for_chunk",
    "split_pieces",
    "default_budget_bytes",
    "chunk_frames_for",
    "gather_batch_bytes",
    "GATHER_BATCH_BYTES",
    "PROCESS_TARGET_BYTES",
    "MIN_BUDGET_BYTES",
]

#: largest packed snapshot buffer of one gather batch
GATHER_BATCH_BYTES = 256 * 2**20
#: resident anonymous memory the whole preprocess process aims to stay under when no budget is
#: given (what it already holds when the pass is planned is taken off the chunk budget)
PROCESS_TARGET_BYTES = 1792 * 2**20
#: smallest automatic chunk budget (when the candidates alone hold nearly the whole target)
MIN_BUDGET_BYTES = 256 * 2**20


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


def segments_for_chunk(
    plan: PassPlan, a: int, b: int, max_window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The segments of the frames [a, b): table (S, 7) int64 (``frame`` relative to ``a``,
    ``offset`` packed in order), scratch destinations (S,) and sizes (S,) in elements."""
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


def mem_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo in bytes, or None where there is none (not Linux)."""
    return proc_bytes("/proc/meminfo", "MemAvailable")


def default_budget_bytes(gpu: bool = False, held_bytes: int = 0) -> int:
    """The chunk budget when none is given: :data:`PROCESS_TARGET_BYTES` less ``held_bytes``
    (the process's resident anonymous memory when the pass is planned: libraries and the
    candidates' geometry, events and gather plan, which grow with N), at least
    :data:`MIN_BUDGET_BYTES`; then at most 25 % of MemAvailable (read with ``held_bytes``
    already allocated) and, on a GPU, 25 % of free GPU memory; never below 64 MiB."""
    avail = mem_available_bytes()
    budget = max(PROCESS_TARGET_BYTES - int(held_bytes), MIN_BUDGET_BYTES)
    if avail is not None:
        budget = min(budget, avail // 4)
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
    return int(min(max(budget_bytes // 4, 2**20), GATHER_BATCH_BYTES))


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
