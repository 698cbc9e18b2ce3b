"""Event ("spike") frames from traces, before the movie pass (reference section 2, step 4),
and the movie frames each event's snapshot needs.

Per trace (full rate, T frames): the first ``edge[0]`` and last ``edge[1]`` frames are set to 0;
MinPeakProminence = std of that trace (ddof 1); the trace is shifted so that its minimum is >= 0;
MATLAB ``findpeaks`` with MinPeakDistance = ``distance_fraction * T``, sorted by height
descending, at most ``n_events`` peaks; no peak -> the arg-max frame (one event).

Movie frames (0-based): the movie frame of trace frame s is ``s // dt`` (ActSort's 1-based
``ceil(s / dt)``). The snapshot window is that frame +/- ``half_window``; frames outside the movie
are -1 (ActSort left-aligns a truncated window instead; see docs/differences.md).
"""

from __future__ import annotations

import logging

import numpy as np

from . import compiled

log = logging.getLogger(__name__)

__all__ = ["find_events", "snapshot_frames", "downsample_traces", "snapshot_traces"]


def find_events(
    traces: np.ndarray,
    *,
    n_events: int = 5,
    edge: tuple[int, int] = (7, 8),
    distance_fraction: float = 0.01,
) -> np.ndarray:
    """Event frames of each trace: (N, n_events) int32, height descending, -1 = none.

    traces : (N, T) float, full-rate trace frames (a block of rows; call per block for big N).
    """
    y = np.array(traces, dtype=np.float64, copy=True)
    if y.ndim != 2:
        raise ValueError(f"traces: expected (N, T), got shape {y.shape}")
    n, t = y.shape
    y[:, : min(edge[0], t)] = 0.0
    if edge[1] > 0:
        y[:, max(t - edge[1], 0) :] = 0.0
    thr = y.std(axis=1, ddof=1) if t > 1 else np.zeros(n)
    y -= np.minimum(0.0, y.min(axis=1))[:, None]
    min_distance = distance_fraction * t
    out = np.full((n, n_events), -1, dtype=np.int32)
    if compiled.peaks_unusable() is None and np.isfinite(y).all() and np.isfinite(thr).all():
        # one compiled pass per trace; the same events as the NumPy / SciPy code below (tested)
        distance = np.floor(min_distance) + 1.0 if min_distance > 0 else 1.0
        none = compiled.top_peaks(y, thr, distance, n_events, out) == 0
    else:
        from ..signal import findpeaks_many  # imports scipy.signal (~0.7 s): only when needed

        rows, locs, _ = findpeaks_many(y, thr, min_distance, n_events, sort_descend=True)
        starts = np.searchsorted(rows, rows, side="left")
        out[rows, np.arange(len(rows)) - starts] = locs
        none = np.ones(n, bool)
        none[rows] = False
    if none.any():
        out[none, 0] = np.argmax(y[none], axis=1)
    return out


def snapshot_frames(
    events: np.ndarray, *, dt: int, n_movie_frames: int, half_window: int = 5
) -> np.ndarray:
    """Movie frame of every snapshot frame: (N, n_events, 2 * half_window + 1) int32, -1 where
    the event is missing or the frame falls outside [0, n_movie_frames)."""
    ev = np.asarray(events, dtype=np.int64)
    centre = np.where(ev >= 0, ev // int(dt), -(10**9))
    frames = centre[:, :, None] + np.arange(-half_window, half_window + 1)[None, None, :]
    ok = (ev[:, :, None] >= 0) & (frames >= 0) & (frames < n_movie_frames)
    return np.where(ok, frames, -1).astype(np.int32)


def downsample_traces(traces: np.ndarray, dt: int) -> np.ndarray:
    """Block means of ``dt`` consecutive frames (a trailing remainder dropped): (N, T // dt)."""
    traces = np.asarray(traces, dtype=np.float32)
    if dt == 1:
        return traces
    n, t = traces.shape
    m = t // dt
    return traces[:, : m * dt].reshape(n, m, dt).mean(axis=2, dtype=np.float64).astype(np.float32)


def snapshot_traces(traces_dt: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Downsampled trace at each snapshot frame, 0 where the frame is -1 (ActSort B6 fixed)."""
    n = len(frames)
    safe = np.maximum(frames, 0).reshape(n, -1)
    vals = np.take_along_axis(np.asarray(traces_dt, np.float32), safe, axis=1)
    return np.where(frames >= 0, vals.reshape(frames.shape), 0.0).astype(np.float32)
