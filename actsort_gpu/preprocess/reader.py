"""The movie pass's reader: consecutive chunks of frames read ahead in a background thread."""

from __future__ import annotations

import contextlib
import queue
import threading

import numpy as np

__all__ = ["ChunkReader", "zero_nonfinite"]


def zero_nonfinite(frames: np.ndarray) -> int:
    """Read NaN / +-Inf pixel values of a float chunk as 0, in place (CaImAn's motion
    correction leaves NaN borders by default; a NaN reaching the projections, snapshots and
    features spreads through them). Returns how many there were; integer chunks: 0."""
    if frames.dtype.kind != "f":
        return 0
    bad = ~np.isfinite(frames)
    n = int(np.count_nonzero(bad))
    if n:
        frames[bad] = 0
    return n


class ChunkReader:
    """Reads ``movie`` chunks [start, stop) in a background thread; iterate to get
    (first_frame, frames).

    Non-finite pixel values of float movies are read as 0 (:func:`zero_nonfinite`; counted in
    ``nonfinite`` when their chunk is handed out, so the count covers exactly the chunks
    yielded so far, not those read ahead). The frames are read with ``movie.read_into`` into
    a ring of ``depth + 1`` preallocated buffers (no allocation per chunk): one being read, up
    to ``depth - 1`` queued, one held by the consumer. A yielded array is valid until the next
    one is requested (the buffer then goes back to the reader), so it is never overwritten
    while in use. Each chunk's array is placed in its buffer by ``movie.placed_window``
    (direct reads then land in place).
    """

    def __init__(
        self, movie, chunk_frames: int, start: int = 0, depth: int = 2, stop: int | None = None
    ):
        stop = movie.n_frames if stop is None else int(stop)
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._free: queue.Queue = queue.Queue()
        n = max(1, min(int(chunk_frames), stop - int(start)))
        for _ in range(depth + 1):
            self._free.put(movie.window_buffer(n))
        self._stop = threading.Event()
        self.nonfinite = 0  # non-finite pixel values read as 0 in the chunks yielded so far
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
                frames = movie.read_into(first, last, movie.placed_window(buf, first, last))
                n_bad = zero_nonfinite(frames)
                while not self._stop.is_set():
                    try:
                        self._q.put((first, frames, buf, n_bad), timeout=0.1)
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
            first, frames, buf, n_bad = item
            self.nonfinite += n_bad
            yield first, frames
            self._free.put(buf)

    def close(self):
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._q.get(timeout=0.05)
