"""The two pieces of per-chunk work of the movie pass, each with a NumPy and a CuPy version.

- :class:`ProjectionAccumulator`: running max, sum, sum of squares and the sums of products
  with the 4 "forward" neighbours (right, down, down-right, down-left) of every pixel, from
  which the max, mean, std and local-correlation images follow. Per chunk the frames are
  centred on a fixed per-pixel reference (the first frame seen) and summed in float32, then
  added to float64 totals, so the raw-moment formulas do not cancel catastrophically. Two
  update methods: ``einsum`` (whole-chunk einsums written once against ``xp``: the reference,
  and the CuPy path), ``blocked`` (NumPy only: cache-sized row blocks over threads, 2x faster
  on a CPU) and ``compiled`` (the same row blocks and arithmetic in one Numba loop,
  :mod:`.compiled`: bit-identical to ``blocked``, about 4x fewer CPU seconds; the CPU default
  when Numba imports); CPU tests check them against each other.
- :func:`gather_segments_numpy` / :func:`gather_segments_cupy`: the batched snapshot gather.
  A *segment* is a run of consecutive frames of one candidate's crop inside the chunk; the
  segments of a batch are copied into one packed buffer (segment after segment, each in
  (frames, rows, cols) C order) in the scratch dtype. The CuPy version is one RawKernel launch
  (one thread per output value, segment found by binary search on the packed offsets) that
  copies the values' bytes (kernels for 1-, 2- and 4-byte values), so it is exact for every
  movie dtype the readers produce (uint8, uint16, int16, int32, float32).
- :class:`HostGather` / :class:`DeviceGather` (:func:`gather_launcher`): a gather launch with
  its reused buffers; ``stream.gather_into`` (segment batching, offset rebasing, the scatter
  into the scratch file) is the same host code on both devices.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import cpu_threads
from . import compiled

log = logging.getLogger(__name__)

__all__ = [
    "ProjectionAccumulator",
    "ACCUMULATOR_METHODS",
    "SEGMENT_FIELDS",
    "gather_segments_numpy",
    "gather_segments_cupy",
    "gather_segments",
    "gather_kernel_source",
    "gather_launcher",
    "HostGather",
    "DeviceGather",
]

#: ProjectionAccumulator update methods (see the module docstring)
ACCUMULATOR_METHODS = ("compiled", "blocked", "einsum")

# columns of the (S, 7) int64 segment table
SEGMENT_FIELDS = ("frame", "n_frames", "row0", "col0", "height", "width", "offset")

# (d_row, d_col) of the 4 forward neighbours; the other 4 are these seen from the other pixel
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
# NumPy path: rows per block ~ this many pixels (float32 block sums stay in the L2 cache);
# float32 block sums are flushed to the float64 totals every _FLUSH_FRAMES frames
_BLOCK_PIXELS = 32 * 1024
_FLUSH_FRAMES = 64


def default_cpu_method() -> str:
    """The accumulator method on NumPy: ``compiled`` when Numba imports, else ``blocked``
    (same numbers, about 4x the CPU time; logged once)."""
    if compiled.available():
        return "compiled"
    if not getattr(default_cpu_method, "_warned", False):
        log.info("preprocess: Numba not importable, the movie pass uses the NumPy accumulator")
        default_cpu_method._warned = True
    return "blocked"


def _pair_slices(h: int, w: int, dr: int, dc: int):
    """Slices (a, b) such that pixel a[...] and b[...] are neighbours at (dr, dc)."""
    ra, rb = slice(0, h - dr), slice(dr, h)
    if dc >= 0:
        ca, cb = slice(0, w - dc), slice(dc, w)
    else:
        ca, cb = slice(-dc, w), slice(0, w + dc)
    return (ra, ca), (rb, cb)


class ProjectionAccumulator:
    """Accumulates FOV statistics over chunks of frames (T, H, W) on ``xp`` (numpy or cupy).

    State (all float64 (H, W) except ``count``): ``ref`` (the centring reference: ``ref`` if
    given, else the first frame seen), ``max``, ``s1`` = sum(x - ref), ``s2`` = sum((x - ref)^2),
    ``p[k]`` = sum of products of centred values with the neighbour at ``_SHIFTS[k]`` (defined
    on the overlapping region, shapes (H - dr, W - |dc|)).

    NumPy path: each chunk is processed per frame on blocks of rows small enough to stay in the
    CPU cache (float32 products added in place into float32 block sums, flushed to the float64
    totals every ``_FLUSH_FRAMES`` frames and at the end of the chunk), the blocks split over
    ``threads`` threads (NumPy releases the GIL in these loops). The result depends only on
    the chunk boundaries, not on the number of threads. CuPy path: whole-chunk einsums.

    method : "compiled" (NumPy only; the default on NumPy when Numba imports), "blocked"
        (NumPy only; the same numbers without Numba, the default on NumPy otherwise) or
        "einsum" (any ``xp``; the default elsewhere, and the reference the other two are
        tested against on the CPU).
    """

    def __init__(
        self,
        height: int,
        width: int,
        xp=np,
        *,
        ref=None,
        threads: int | None = None,
        method: str | None = None,
    ):
        method = method or (default_cpu_method() if xp is np else "einsum")
        if method not in ACCUMULATOR_METHODS or (method != "einsum" and xp is not np):
            raise ValueError(
                f"method must be one of {ACCUMULATOR_METHODS} ('compiled' and 'blocked' with "
                f"NumPy only), got {method!r} with {getattr(xp, '__name__', xp)}"
            )
        if method == "compiled" and not compiled.available():
            raise ValueError("method 'compiled' needs Numba (pip install numba)")
        self.method = method
        self.xp = xp
        self.h, self.w = height, width
        self.count = 0
        self.ref = None if ref is None else xp.asarray(ref, dtype=xp.float32)
        self.max = xp.full((height, width), -np.inf, dtype=xp.float64)
        self.s1 = xp.zeros((height, width), dtype=xp.float64)
        self.s2 = xp.zeros((height, width), dtype=xp.float64)
        # full-frame product sums: P[k][i, j] = sum x[i, j] * x[(i, j) + shift k], 0 where none
        self._P = [xp.zeros((height, width), dtype=xp.float64) for _ in _SHIFTS]
        self.threads = cpu_threads(0) if threads is None else max(1, int(threads))
        self._pool = None

    @property
    def p(self) -> list:
        """Product sums on their overlap regions (see :func:`_pair_slices`)."""
        h, w = self.h, self.w
        P0, P1, P2, P3 = self._P
        return [P0[:, : w - 1], P1[: h - 1], P2[: h - 1, : w - 1], P3[: h - 1, 1:]]

    def update(self, frames) -> None:
        """Add a chunk (t, H, W) of any real dtype (already on this accumulator's device)."""
        xp = self.xp
        if frames.shape[0] == 0:
            return
        if self.ref is None:
            self.ref = frames[0].astype(xp.float32)
        if self.method != "einsum":
            self._update_numpy(np.asarray(frames))
        else:
            self._update_xp(frames)
        self.count += int(frames.shape[0])

    def _update_xp(self, frames) -> None:
        xp = self.xp
        self.max = xp.maximum(self.max, frames.max(axis=0).astype(xp.float64))
        x = frames.astype(xp.float32)
        x -= self.ref
        self.s1 += x.sum(axis=0, dtype=xp.float64)
        self.s2 += xp.einsum("tij,tij->ij", x, x).astype(xp.float64)
        for k, (dr, dc) in enumerate(_SHIFTS):
            (ra, ca), (rb, cb) = _pair_slices(self.h, self.w, dr, dc)
            self._P[k][ra, ca] += xp.einsum("tij,tij->ij", x[:, ra, ca], x[:, rb, cb]).astype(
                xp.float64
            )

    def _update_numpy(self, frames: np.ndarray) -> None:
        if self.method == "compiled" and (why := compiled.unusable(frames.dtype)):
            log.warning(
                "preprocess: the compiled accumulator cannot run on %s frames (%s); using the "
                "NumPy one (same numbers, slower)",
                frames.dtype,
                why,
            )
            self.method = "blocked"
        rows = max(1, _BLOCK_PIXELS // max(self.w, 1))
        blocks = [(a, min(self.h, a + rows)) for a in range(0, self.h, rows)]
        work = self._blocks_compiled if self.method == "compiled" else self._blocks
        n = min(self.threads, len(blocks))
        if n <= 1:
            work(frames, blocks)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="actsort-acc")
        groups = [blocks[i * len(blocks) // n : (i + 1) * len(blocks) // n] for i in range(n)]
        for fut in [self._pool.submit(work, frames, g) for g in groups]:
            fut.result()

    def _blocks_compiled(self, frames: np.ndarray, blocks) -> None:
        """:meth:`_blocks` as one compiled loop per block (:func:`.compiled.accumulate_rows`)."""
        for r0, r1 in blocks:
            compiled.accumulate_rows(
                frames, self.ref, r0, r1, _FLUSH_FRAMES, self.max, self.s1, self.s2, *self._P
            )

    def _blocks(self, frames: np.ndarray, blocks) -> None:
        """Accumulate the rows ``blocks`` [(r0, r1), ...] of ``frames`` (disjoint per thread)."""
        h, w = self.h, self.w
        ref = self.ref
        t_all = frames.shape[0]
        for r0, r1 in blocks:
            re = min(r1 + 1, h)  # one more row: the down neighbours
            n, m = r1 - r0, re - r0 - 1  # rows of the block; rows with a down neighbour
            self.max[r0:r1] = np.maximum(self.max[r0:r1], frames[:, r0:r1].max(axis=0))
            x = np.empty((re - r0, w), np.float32)
            buf = np.empty((n, w), np.float32)
            sums = np.zeros((6, n, w), np.float32)
            s1, s2, p0, p1, p2, p3 = sums
            xa, xn = x[:n], x[1 : m + 1]
            for t0 in range(0, t_all, _FLUSH_FRAMES):
                for t in range(t0, min(t_all, t0 + _FLUSH_FRAMES)):
                    np.subtract(frames[t, r0:re], ref[r0:re], out=x, dtype=np.float32)
                    s1 += xa
                    np.multiply(xa, xa, out=buf)
                    s2 += buf
                    np.multiply(xa[:, :-1], xa[:, 1:], out=buf[:, :-1])
                    p0[:, :-1] += buf[:, :-1]
                    if m:
                        np.multiply(xa[:m], xn, out=buf[:m])
                        p1[:m] += buf[:m]
                        np.multiply(xa[:m, :-1], xn[:, 1:], out=buf[:m, :-1])
                        p2[:m, :-1] += buf[:m, :-1]
                        np.multiply(xa[:m, 1:], xn[:, :-1], out=buf[:m, 1:])
                        p3[:m, 1:] += buf[:m, 1:]
                self.s1[r0:r1] += s1
                self.s2[r0:r1] += s2
                for k in range(4):
                    self._P[k][r0:r1] += sums[2 + k]
                sums[:] = 0.0

    def merge(self, other: ProjectionAccumulator) -> None:
        """Add the statistics of ``other`` (later frames, same ``ref``) to this one."""
        xp = self.xp
        if other.count == 0:
            return
        if self.count == 0 and self.ref is None:
            self.ref = other.ref
        elif other.ref is not None and not bool(xp.array_equal(self.ref, other.ref)):
            raise ValueError(
                "merge: the accumulators were centred on different reference "
                "frames; give every piece the same ref"
            )
        self.max = xp.maximum(self.max, other.max)
        self.s1 += other.s1
        self.s2 += other.s2
        for a, b in zip(self._P, other._P):
            a += b
        self.count += other.count

    def close(self) -> None:
        """Stop the worker threads (the accumulator still works afterwards, restarting them)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_pool"] = None
        return d

    # -------------------------------------------------------------- persistence (resume)
    def state(self) -> dict:
        """Host copies of the state (for the resume file)."""
        from .._xp import to_numpy

        out = {
            "count": np.array(self.count),
            "max": to_numpy(self.max),
            "s1": to_numpy(self.s1),
            "s2": to_numpy(self.s2),
            "ref": (to_numpy(self.ref) if self.ref is not None else np.zeros((0,), np.float32)),
        }
        for k, pk in enumerate(self.p):
            out[f"p{k}"] = to_numpy(pk)
        return out

    def load(self, state: dict) -> None:
        xp = self.xp
        self.count = int(state["count"])
        self.max = xp.asarray(state["max"])
        self.s1 = xp.asarray(state["s1"])
        self.s2 = xp.asarray(state["s2"])
        self.ref = xp.asarray(state["ref"]) if np.size(state["ref"]) else None
        for k, (dr, dc) in enumerate(_SHIFTS):
            (ra, ca), _ = _pair_slices(self.h, self.w, dr, dc)
            self._P[k][...] = 0.0
            self._P[k][ra, ca] = xp.asarray(state[f"p{k}"])

    # -------------------------------------------------------------- results
    def images(self) -> dict[str, np.ndarray]:
        """max, mean, std (ddof 0) and corr images as (H, W) float32 NumPy arrays.

        corr: mean Pearson correlation with the (up to 8) neighbours; a pair with a constant
        pixel has correlation 0 (it still counts as a neighbour)."""
        from .._xp import to_numpy

        xp = self.xp
        n = max(self.count, 1)
        m1 = self.s1 / n  # mean of centred values
        var = xp.maximum(self.s2 / n - m1 * m1, 0.0)
        sd = xp.sqrt(var)
        total = xp.zeros((self.h, self.w), dtype=xp.float64)
        nbrs = xp.zeros((self.h, self.w), dtype=xp.float64)
        for k, (dr, dc) in enumerate(_SHIFTS):
            a, b = _pair_slices(self.h, self.w, dr, dc)
            cov = self.p[k] / n - m1[a] * m1[b]
            den = sd[a] * sd[b]
            r = xp.where(den > 0, cov / xp.where(den > 0, den, 1.0), 0.0)
            r = xp.clip(r, -1.0, 1.0)
            total[a] += r
            total[b] += r
            nbrs[a] += 1
            nbrs[b] += 1
        corr = total / xp.maximum(nbrs, 1)
        ref = self.ref.astype(xp.float64) if self.ref is not None else 0.0
        return {
            "max": to_numpy(self.max).astype(np.float32),
            "mean": to_numpy(m1 + ref).astype(np.float32),
            "std": to_numpy(sd).astype(np.float32),
            "corr": to_numpy(corr).astype(np.float32),
        }


def gather_segments_numpy(chunk: np.ndarray, segments: np.ndarray, out=None) -> np.ndarray:
    """Packed copy of every segment's frames x crop (NumPy twin of the CuPy kernel).

    chunk : (t, H, W) frames of this chunk (any real dtype).
    segments : (S, 7) int64 table, columns ``SEGMENT_FIELDS``; ``frame`` is relative to the
        chunk; ``offset`` is the segment's start in the packed buffer (segments packed in order).
    out : (>= total,) buffer to fill (values cast to its dtype); default a new one of the
        chunk's dtype.
    Returns (total,) with total = last offset + its n_frames * height * width (a view of
    ``out`` when given).
    """
    segments = np.asarray(segments, dtype=np.int64).reshape(-1, 7)
    total = _packed_size(segments)
    out = np.empty(total, dtype=chunk.dtype) if out is None else out[:total]
    for f, nf, r0, c0, h, w, off in segments.tolist():
        dst = out[off : off + nf * h * w].reshape(nf, h, w)
        dst[...] = chunk[f : f + nf, r0 : r0 + h, c0 : c0 + w]
    return out


def _packed_size(segments: np.ndarray) -> int:
    if len(segments) == 0:
        return 0
    last = segments[-1]
    return int(last[6] + last[1] * last[4] * last[5])


# One thread per packed value (grid-stride loop): find its segment by binary search on the
# packed offsets (column 6), then copy the value at (frame, row, col) of the chunk. The values
# are copied as unsigned integers of their size, so every dtype of that size is copied exactly.
_GATHER_TEMPLATE = r"""
extern "C" __global__
void gather_segments_u{bits}(const {ctype}* __restrict__ chunk,
                             const long long* __restrict__ seg,
                             const long long n_seg, const long long H, const long long W,
                             const long long total, {ctype}* __restrict__ out)
{
    long long i = (long long)blockDim.x * blockIdx.x + threadIdx.x;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (; i < total; i += stride) {
        // the last segment whose offset <= i (segments are packed in order, none empty)
        long long lo = 0, hi = n_seg - 1;
        while (lo < hi) {
            const long long mid = (lo + hi + 1) >> 1;
            if (seg[mid * 7 + 6] <= i) lo = mid; else hi = mid - 1;
        }
        const long long* s = seg + lo * 7;  // frame, n_frames, row0, col0, height, width, offset
        const long long local = i - s[6];
        const long long hw = s[4] * s[5];
        const long long k = local / hw;
        const long long rem = local - k * hw;
        const long long y = rem / s[5];
        const long long x = rem - y * s[5];
        out[i] = chunk[((s[0] + k) * H + (s[2] + y)) * W + (s[3] + x)];
    }
}
"""
#: value size in bytes -> (unsigned C type, bits)
_GATHER_TYPES = {1: ("unsigned char", 8), 2: ("unsigned short", 16), 4: ("unsigned int", 32)}
_KERNELS: dict = {}


def gather_kernel_source(itemsize: int) -> tuple[str, str]:
    """(CUDA source, kernel name) of the gather for values of ``itemsize`` bytes (1, 2, 4)."""
    if itemsize not in _GATHER_TYPES:
        raise ValueError(f"itemsize must be one of {sorted(_GATHER_TYPES)}, got {itemsize}")
    ctype, bits = _GATHER_TYPES[itemsize]
    source = _GATHER_TEMPLATE.replace("{ctype}", ctype).replace("{bits}", str(bits))
    return source, f"gather_segments_u{bits}"


def gather_segments_cupy(chunk, segments, out=None):
    """CuPy version of :func:`gather_segments_numpy`: ``chunk`` a CuPy array (t, H, W) of a 1-,
    2- or 4-byte dtype; ``out`` a CuPy buffer of the same dtype (default: a new one). Returns
    the CuPy (total,) packed values, bit for bit the chunk's."""
    import cupy as cp

    seg_host = np.ascontiguousarray(np.asarray(segments, dtype=np.int64).reshape(-1, 7))
    total = _packed_size(seg_host)
    out = cp.empty(total, dtype=chunk.dtype) if out is None else out[:total]
    if out.dtype != chunk.dtype:
        raise ValueError(f"out has dtype {out.dtype}, the chunk {chunk.dtype}: they must match")
    if total == 0:
        return out
    itemsize = chunk.dtype.itemsize
    key = (cp.RawKernel, itemsize)  # one kernel per CuPy module (the tests swap in a stand-in)
    if key not in _KERNELS:
        source, name = gather_kernel_source(itemsize)
        _KERNELS[key] = cp.RawKernel(source, name)
    as_bits = np.dtype(f"u{itemsize}")
    src = cp.ascontiguousarray(chunk).view(as_bits)
    threads = 256
    blocks = int(min((total + threads - 1) // threads, 65535 * 8))
    _KERNELS[key](
        (blocks,),
        (threads,),
        (
            src,
            cp.asarray(seg_host),
            np.int64(len(seg_host)),
            np.int64(src.shape[1]),
            np.int64(src.shape[2]),
            np.int64(total),
            out.view(as_bits),
        ),
    )
    return out


def gather_segments(chunk, segments, xp=np):
    """Dispatch to the NumPy or CuPy gather according to ``xp``."""
    if xp is np:
        return gather_segments_numpy(chunk, segments)
    return gather_segments_cupy(chunk, segments)


def _reserve(buf, n: int, empty):
    """``buf`` if it holds ``n`` values, else a new buffer ``empty(size)`` of at least twice
    the old size (a batch of one segment larger than the batch limit grows it once)."""
    if buf is not None and buf.size >= n:
        return buf
    return empty(max(int(n), 2 * (0 if buf is None else buf.size)))


class HostGather:
    """The gather launch on the CPU: packs a batch into a reused host buffer of ``dtype``.

    ``launch(chunk, segments, total)`` -> (total,) host view of the packed values, valid until
    the next call."""

    def __init__(self, dtype, capacity: int = 0):
        self.dtype = np.dtype(dtype)
        self.host = self._empty(int(capacity))

    def _empty(self, n: int) -> np.ndarray:
        return np.empty(n, self.dtype)

    def __call__(self, chunk, segments, total: int) -> np.ndarray:
        self.host = _reserve(self.host, total, self._empty)
        return gather_segments_numpy(chunk, segments, out=self.host[:total])


class DeviceGather(HostGather):
    """The gather launch on a GPU: the RawKernel into a reused device buffer, then one copy
    into the reused host buffer (the only lines CPU tests cannot run)."""

    def __init__(self, dtype, capacity: int = 0):
        import cupy as cp

        self._cp = cp
        self.device = None
        super().__init__(dtype, capacity)

    def __call__(self, chunk, segments, total: int) -> np.ndarray:
        self.host = _reserve(self.host, total, self._empty)
        self.device = _reserve(self.device, total, lambda n: self._cp.empty(n, self.dtype))
        packed = gather_segments_cupy(chunk, segments, out=self.device[:total])
        return packed.get(out=self.host[:total])


def gather_launcher(xp, dtype, capacity: int = 0) -> HostGather:
    """The gather launch for the array module ``xp`` (values of ``dtype``, buffers sized for
    ``capacity`` values to start with)."""
    return HostGather(dtype, capacity) if xp is np else DeviceGather(dtype, capacity)
