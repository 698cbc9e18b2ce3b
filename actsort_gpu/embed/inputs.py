"""Encoder inputs per candidate, built from store arrays only (pure NumPy, no torch).

Per candidate the encoder sees
- ``images`` (C=3, S, S): the footprint crop, a mean-of-events summary image and a
  max-over-events image, each padded to a square, resized to S x S (bilinear) and
  percentile-normalised per channel (0.1 and 99.9 percentiles -> 0 and 1, clipped), as
  CytoImageNet normalises its images;
- ``traces`` (n_events * event_frames,): the event snapshot traces, robust-z-scored by the
  candidate's whole trace (median, 1.4826 * MAD) and compressed with arcsinh, or (without trace
  statistics) percentile-normalised per candidate; 0 where an event is missing;
- ``valid`` (n_events,) bool: which events exist (``candidates/events`` >= 0).

The store adapter :func:`store_inputs` reads a block of candidates and calls
:func:`candidate_inputs`; both the training data module and inference use it, so training and
inference see identical inputs.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

__all__ = [
    "CHANNELS",
    "candidate_inputs",
    "event_summaries",
    "square_resize",
    "percentile_normalise",
    "robust_trace_stats",
    "store_inputs",
    "fit_events",
]

#: names of the image channels, in order
CHANNELS = ("footprint", "event_mean_summary", "event_max")
_P_LO, _P_HI = 0.1, 99.9  # CytoImageNet's per-channel normalisation percentiles
_MAD_TO_SD = 1.4826  # MAD of a Gaussian * this = its standard deviation


def event_summaries(snapshots: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two summary images of one candidate's event snapshots.

    snapshots : (n_events, event_frames, h, w), movie units (any real dtype)
    valid : (n_events,) bool, events that exist
    Returns (mean_summary, max_image), each (h, w) float32: mean_summary averages over valid
    events 0.5 * max + 0.3 * median + 0.2 * mean of the event's frames (a peak-weighted image that
    resists single-frame noise); max_image is the maximum over valid events and frames. Both are
    zeros when no event is valid. Both commute with an increasing affine map of the values.
    """
    valid = np.asarray(valid, dtype=bool)[: snapshots.shape[0]]
    h, w = snapshots.shape[2:]
    if not valid.any():
        return np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    ev = snapshots[np.flatnonzero(valid)]
    frames = _sorted_frames(ev)
    f = len(frames)
    if f % 2:
        median = frames[f // 2].astype(np.float32)
    else:
        median = 0.5 * (frames[f // 2 - 1].astype(np.float32) + frames[f // 2].astype(np.float32))
    top = frames[-1].astype(np.float32)
    per_event = 0.5 * top + 0.3 * median + 0.2 * ev.mean(axis=1, dtype=np.float32)
    return per_event.mean(axis=0).astype(np.float32), top.max(axis=0)


@lru_cache(maxsize=8)
def _batcher_network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort for n inputs.

    Built for the next power of two; comparators that touch a padding index are dropped, which
    is exact because padding would hold +inf (a comparator (i, j >= n) never moves x_i).
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return tuple(pairs)


def _sorted_frames(ev: np.ndarray) -> list[np.ndarray]:
    """ev (n_events, n_frames, h, w) -> n_frames arrays (n_events, h, w), sorted per pixel.

    A sorting network of element-wise min / max: 5-10x faster than np.sort / np.median along
    the short, strided frame axis (11 frames), which dominated building the inputs.
    """
    rows = [ev[:, i] for i in range(ev.shape[1])]
    for a, b in _batcher_network(len(rows)):
        lo, hi = np.minimum(rows[a], rows[b]), np.maximum(rows[a], rows[b])
        rows[a], rows[b] = lo, hi
    return rows


def square_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Pad (C, h, w) images to a square (edge values, centred) and resize to (C, size, size).

    Padding first keeps a round cell round when its crop was clipped at the field's border.
    Bilinear interpolation with pixel centres aligned (as ``align_corners=False``).
    """
    c, h, w = images.shape
    if h == 0 or w == 0:
        return np.zeros((c, size, size), np.float32)
    side = max(h, w)
    pad_h, pad_w = side - h, side - w
    if pad_h or pad_w:
        images = np.pad(
            images,
            ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)),
            mode="edge",
        )
    if side == size:
        return images.astype(np.float32, copy=False)
    src = (np.arange(size, dtype=np.float64) + 0.5) * (side / size) - 0.5
    src = np.clip(src, 0, side - 1)
    rr, cc = np.meshgrid(src, src, indexing="ij")
    out = np.empty((c, size, size), np.float32)
    for k in range(c):
        out[k] = ndimage.map_coordinates(
            images[k].astype(np.float32, copy=False), [rr, cc], order=1, mode="nearest"
        )
    return out


def percentile_normalise(
    images: np.ndarray, lo_pct: float = _P_LO, hi_pct: float = _P_HI
) -> np.ndarray:
    """Map each image channel's ``lo_pct`` / ``hi_pct`` percentiles to 0 / 1, clipped to [0, 1].

    images : (n, C, S, S) float32. A flat channel (hi <= lo) becomes zeros.
    """
    n, c = images.shape[:2]
    flat = images.reshape(n, c, -1)
    lo, hi = np.percentile(flat, [lo_pct, hi_pct], axis=2)
    span = hi - lo
    ok = span > 0
    scaled = (flat - lo[..., None]) / np.where(ok, span, 1)[..., None]
    scaled = np.where(ok[..., None], np.clip(scaled, 0, 1), 0)
    return scaled.reshape(images.shape).astype(np.float32)


def candidate_inputs(
    snapshots_list,
    crop_footprints,
    snapshot_traces,
    event_valid,
    image_size: int,
    *,
    trace_center=None,
    trace_scale=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encoder inputs of n candidates.

    Parameters
    ----------
    snapshots_list : list of n arrays (n_events, event_frames, h_i, w_i), movie units (as
        :meth:`SortStore.snapshots_block` returns them) or any increasing affine map of them per
        candidate, such as the stored quantisation codes: summaries, resizing and percentile
        normalisation all commute with it, so the images are the same.
    crop_footprints : list of n arrays (h_i, w_i) float32, the max-normalised footprint in the
        candidate's crop window.
    snapshot_traces : (n, n_events, event_frames) float32, trace values at the snapshot frames.
    event_valid : (n, n_events) bool, events that exist.
    image_size : side S of the output images in pixels.
    trace_center, trace_scale : optional (n,) float, the median and robust SD of each candidate's
        whole trace; given, traces become arcsinh(robust z), else each candidate's valid trace
        values are percentile-normalised to [0, 1].

    Returns
    -------
    images : (n, 3, S, S) float32 in [0, 1], channels :data:`CHANNELS`.
    traces : (n, n_events * event_frames) float32; 0 at missing events.
    """
    n = len(snapshots_list)
    if len(crop_footprints) != n:
        raise ValueError(
            f"crop_footprints: expected {n} crops (one per snapshot block), "
            f"found {len(crop_footprints)}"
        )
    snapshot_traces = np.asarray(snapshot_traces, dtype=np.float32)
    event_valid = np.asarray(event_valid, dtype=bool)
    if snapshot_traces.ndim != 3 or snapshot_traces.shape[0] != n:
        raise ValueError(
            f"snapshot_traces: expected shape ({n}, n_events, event_frames), "
            f"found {snapshot_traces.shape}"
        )
    if event_valid.shape != snapshot_traces.shape[:2]:
        raise ValueError(
            f"event_valid: expected shape {snapshot_traces.shape[:2]}, found {event_valid.shape}"
        )
    if int(image_size) < 4:
        raise ValueError(f"image_size: expected >= 4 px, found {image_size}")
    size = int(image_size)
    images = np.zeros((n, len(CHANNELS), size, size), np.float32)
    for i in range(n):
        fp = np.asarray(crop_footprints[i], dtype=np.float32)
        snaps = np.asarray(snapshots_list[i])
        if snaps.shape[2:] != fp.shape:
            raise ValueError(
                f"candidate {i}: snapshot crop {snaps.shape[2:]} differs from the "
                f"footprint crop {fp.shape}"
            )
        mean_img, max_img = event_summaries(snaps, event_valid[i])
        images[i] = square_resize(np.stack([fp, mean_img, max_img]), size)
    images = percentile_normalise(images)
    traces = _normalise_traces(snapshot_traces, event_valid, trace_center, trace_scale)
    return images, traces.reshape(n, -1)


def _normalise_traces(snapshot_traces, valid, center, scale) -> np.ndarray:
    n = snapshot_traces.shape[0]
    mask = valid[..., None]
    if center is not None:
        center = np.asarray(center, dtype=np.float32).reshape(n, 1, 1)
        scale = np.asarray(scale, dtype=np.float32).reshape(n, 1, 1)
        scale = np.where(scale > 0, scale, 1.0)
        out = np.arcsinh((snapshot_traces - center) / scale)
    else:
        masked = np.where(mask, snapshot_traces, np.nan)
        with np.errstate(all="ignore"), _quiet_nan():
            lo, hi = np.nanpercentile(masked.reshape(n, -1), [_P_LO, _P_HI], axis=1)
        lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)
        span = np.where(hi > lo, hi - lo, 1.0)
        out = np.clip((snapshot_traces - lo[:, None, None]) / span[:, None, None], 0, 1)
    return np.where(mask, out, 0).astype(np.float32)


class _quiet_nan:
    """Silence numpy's 'All-NaN slice' warning for candidates without events (all masked)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def robust_trace_stats(traces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust SD (1.4826 * MAD) of each row of ``traces`` (n, T); (n,) float32 each."""
    traces = np.asarray(traces, dtype=np.float32)
    med = np.median(traces, axis=1)
    mad = np.median(np.abs(traces - med[:, None]), axis=1) * _MAD_TO_SD
    # A trace that is constant most of the time (MAD 0) falls back to the plain SD.
    sd = traces.std(axis=1)
    scale = np.where(mad > 0, mad, sd)
    return med.astype(np.float32), scale.astype(np.float32)


def fit_events(
    snapshot_traces: np.ndarray, valid: np.ndarray, snapshots: list[np.ndarray], n_events: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Truncate or zero-pad the event axis to ``n_events`` (the encoder's trained count)."""
    have = snapshot_traces.shape[1]
    if have == n_events:
        return snapshot_traces, valid, snapshots
    if have > n_events:
        return (
            snapshot_traces[:, :n_events],
            valid[:, :n_events],
            [s[:n_events] for s in snapshots],
        )
    extra = n_events - have
    st = np.concatenate(
        [
            snapshot_traces,
            np.zeros((snapshot_traces.shape[0], extra, snapshot_traces.shape[2]), np.float32),
        ],
        1,
    )
    va = np.concatenate([valid, np.zeros((valid.shape[0], extra), bool)], 1)
    snaps = [np.concatenate([s, np.zeros((extra, *s.shape[1:]), np.float32)], 0) for s in snapshots]
    return st, va, snaps


def store_inputs(
    store,
    rows: slice,
    image_size: int,
    *,
    n_events: int | None = None,
    event_frames: int | None = None,
    keep: np.ndarray | None = None,
):
    """Encoder inputs of a contiguous block of candidates of an open :class:`SortStore`.

    Needs the ``preprocess`` stage. ``n_events`` / ``event_frames``: what the encoder was
    trained on; the event axis is truncated or zero-padded (missing events) to ``n_events``,
    and a different ``event_frames`` is refused (the trace branch's time axis has no meaning
    at another snapshot length).

    ``keep``: indices within the block to build (default all), e.g. a training subsample.

    Returns images (n, 3, S, S) float32, traces (n, n_events * event_frames) float32 and
    valid (n, n_events) bool.
    """
    store.require("preprocess")
    start, stop, _ = rows.indices(store.n_candidates)
    block = slice(start, stop)
    snapshot_traces = store.snapshot_traces(block).astype(np.float32)
    if event_frames is not None and snapshot_traces.shape[2] != event_frames:
        raise ValueError(
            f"{store.path}: snapshots have {snapshot_traces.shape[2]} frames per event, the "
            f"encoder was trained on {event_frames}; re-run preprocess with "
            f"event_half_window_frames={(event_frames - 1) // 2} or train an encoder on it"
        )
    valid = store.events(block) >= 0
    # Codes, not movie units: candidate_inputs normalises per channel by percentiles, which
    # an increasing affine map per candidate leaves unchanged (see its docstring).
    snapshots = store.snapshots_block(slice(start, stop), dequantise=False)
    if n_events is not None:
        snapshot_traces, valid, snapshots = fit_events(snapshot_traces, valid, snapshots, n_events)
    fps = store.footprint_crops(block)
    center, scale = robust_trace_stats(store.traces(block))
    if keep is not None:
        keep = np.asarray(keep, dtype=np.int64)
        snapshots, fps = [snapshots[k] for k in keep], [fps[k] for k in keep]
        snapshot_traces, valid = snapshot_traces[keep], valid[keep]
        center, scale = center[keep], scale[keep]
    images, traces = candidate_inputs(
        snapshots, fps, snapshot_traces, valid, image_size, trace_center=center, trace_scale=scale
    )
    return images, traces, valid
