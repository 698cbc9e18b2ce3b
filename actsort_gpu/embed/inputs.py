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
import math
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "CHANNELS",
    "candidate_inputs",
    "event_summaries",
    "block_event_summaries",
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
    :func:`block_event_summaries` does the same for many candidates at once.
    """
    means, maxes = block_event_summaries([np.asarray(snapshots)], np.asarray(valid)[None])
    return means[0], maxes[0]


def block_event_summaries(snapshots_list, event_valid) -> tuple[list, list]:
    """:func:`event_summaries` of n candidates, vectorised over candidates.

    snapshots_list : n arrays (n_events_i, event_frames, h_i, w_i), any real dtype (integer
        codes are summarised without a float copy where that is exact)
    event_valid : (n, n_events) bool
    Returns two lists of n (h_i, w_i) float32 images (mean summary, max image).

    The frames of the valid events of candidates with the same dtype and frame count are laid
    side by side as (event_frames, n_pixels) arrays of about :data:`_BATCH_BYTES`, so that the
    per-pixel sort over frames runs as a few large NumPy operations on data that stays in cache
    instead of many small ones per candidate.
    """
    n = len(snapshots_list)
    means, maxes = [None] * n, [None] * n
    groups: dict[tuple, list] = {}
    for i, snaps in enumerate(snapshots_list):
        h, w = snaps.shape[2:]
        events = np.flatnonzero(np.asarray(event_valid[i], dtype=bool)[: snaps.shape[0]])
        if events.size and h * w:
            groups.setdefault((snaps.dtype, snaps.shape[1]), []).append((i, events))
        else:
            means[i], maxes[i] = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    for (dtype, n_frames), members in groups.items():
        budget = _BATCH_BYTES // (n_frames * dtype.itemsize)
        for batch in _batches(snapshots_list, members, budget):
            per_event, top = _pixel_summaries(_event_pixels(snapshots_list, batch))
            p = 0
            for i, events in batch:
                shape = (len(events), *snapshots_list[i].shape[2:])
                stop = p + math.prod(shape)
                # = .mean(axis=0) / .max(axis=0), without their Python wrappers (per candidate)
                means[i] = np.add.reduce(per_event[p:stop].reshape(shape), axis=0) / len(events)
                maxes[i] = np.maximum.reduce(top[p:stop].reshape(shape), axis=0)
                p = stop
    return means, maxes


_BATCH_BYTES = 1 << 20  # snapshot bytes summarised at once (about the size of the L2 cache)


def _batches(snapshots_list, members, budget: int):
    """Split ``members`` ((index, events) pairs) into runs of at most ``budget`` event pixels
    (a larger candidate makes a run of its own)."""
    batch, size = [], 0
    for i, events in members:
        pixels = len(events) * math.prod(snapshots_list[i].shape[2:])
        if batch and size + pixels > budget:
            yield batch
            batch, size = [], 0
        batch.append((i, events))
        size += pixels
    if batch:
        yield batch


def _event_pixels(snapshots_list, members) -> np.ndarray:
    """The valid events' frames of candidates ``members`` ((index, events) pairs) side by side:
    (event_frames, n_pixels), candidate by candidate, event by event, pixels row-major."""
    first = snapshots_list[members[0][0]]
    n_frames = first.shape[1]
    sizes = [len(ev) * math.prod(snapshots_list[i].shape[2:]) for i, ev in members]
    flat = np.empty((n_frames, sum(sizes)), first.dtype)
    p = 0
    for i, events in members:
        snaps = snapshots_list[i]
        hw = math.prod(snaps.shape[2:])
        for e in events:
            flat[:, p : p + hw] = snaps[e].reshape(n_frames, hw)
            p += hw
    return flat


def _pixel_summaries(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """flat (event_frames, n_pixels) -> per pixel (0.5 * max + 0.3 * median + 0.2 * mean, max)
    over frames, each (n_pixels,) float32."""
    f = flat.shape[0]
    frames = [row[0] for row in _sorted_frames(flat[None])]
    if f % 2:
        median = frames[f // 2].astype(np.float32)
    else:
        median = 0.5 * (frames[f // 2 - 1].astype(np.float32) + frames[f // 2].astype(np.float32))
    top = frames[-1].astype(np.float32)
    return 0.5 * top + 0.3 * median + 0.2 * _frame_mean(flat), top


def _frame_mean(flat: np.ndarray) -> np.ndarray:
    """``flat.mean(axis=0, dtype=np.float32)``; uint8 codes are summed in uint16 first (faster,
    and the same values: a float32 sum of up to 257 uint8 values is exact)."""
    f = flat.shape[0]
    if flat.dtype == np.uint8 and f <= 257:
        return np.add.reduce(flat, axis=0, dtype=np.uint16).astype(np.float32) / f
    return flat.mean(axis=0, dtype=np.float32)


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
    Bilinear interpolation with pixel centres aligned (as ``align_corners=False``), computed in
    float64 as two matrix products (rows, then columns) that include the padding, returned as
    float32.
    """
    c, h, w = images.shape
    if h == 0 or w == 0:
        return np.zeros((c, size, size), np.float32)
    side = max(h, w)
    rows, cols = _resize_matrix(h, side, size), _resize_matrix(w, side, size)
    return (rows @ images.astype(np.float64, copy=False) @ cols.T).astype(np.float32)


@lru_cache(maxsize=512)
def _resize_matrix(n: int, side: int, size: int) -> np.ndarray:
    """(size, n) float64 weights: edge-pad n samples to ``side`` (centred), then sample them at
    ``size`` pixel centres with linear interpolation (sample i at ``(i + 0.5) * side / size -
    0.5``, clipped to [0, side - 1]); each row sums to 1. Read-only (cached)."""
    src = np.clip((np.arange(size, dtype=np.float64) + 0.5) * (side / size) - 0.5, 0, side - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, side - 1)
    frac = src - lo
    padded_to_source = np.clip(np.arange(side) - (side - n) // 2, 0, n - 1)
    weights = np.zeros((size, n))
    out_rows = np.arange(size)
    np.add.at(weights, (out_rows, padded_to_source[lo]), 1 - frac)
    np.add.at(weights, (out_rows, padded_to_source[hi]), frac)
    weights.flags.writeable = False
    return weights


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
    snapshots_list = [np.asarray(s) for s in snapshots_list]
    fps = [np.asarray(f, dtype=np.float32) for f in crop_footprints]
    for i, (snaps, fp) in enumerate(zip(snapshots_list, fps)):
        if snaps.shape[2:] != fp.shape:
            raise ValueError(
                f"candidate {i}: snapshot crop {snaps.shape[2:]} differs from the "
                f"footprint crop {fp.shape}"
            )
    means, maxes = block_event_summaries(snapshots_list, event_valid)
    images = np.zeros((n, len(CHANNELS), size, size), np.float32)
    for i in range(n):
        images[i] = square_resize(np.stack([fps[i], means[i], maxes[i]]), size)
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
    snaps = [np.concatenate([s, np.zeros((extra, *s.shape[1:]), s.dtype)], 0) for s in snapshots]
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
    snapshots = store.snapshot_codes_block(block)
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
