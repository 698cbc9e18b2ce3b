"""A small synthetic store holding exactly what the feature stage reads (tests, benchmarks).

It skips the movie: snapshots are rendered directly as footprint x trace + noise around each
candidate's planted events. Half the candidates are "cells" (round footprint, transients), half
"not cells" (elongated or two-body footprint, noise with slow drift). Not a replacement for
:mod:`actsort_gpu.synth` (which renders a whole movie); this one scales to N = 100,000 quickly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import schema
from ..store import SortStore, crop_footprints, quantise

__all__ = ["make_feature_store"]


_BLOCK = 4096  # candidates generated and written at a time (fixed: it names the RNG streams)


def _footprints(cy, cx, is_cell, h: int, w: int, radius_px: float) -> sp.csr_matrix:
    """Gaussian disks (cells), elongated or two-body blobs (not cells): CSR (n, h*w) float32,
    each row max-normalised; pixels below 0.05 of the peak dropped."""
    rad = int(np.ceil(3 * radius_px))
    oy, ox = np.mgrid[-rad : rad + 1, -rad : rad + 1]
    indptr, indices, data = [0], [], []
    for i in range(len(cy)):
        sy = sx = radius_px / 1.5
        if not is_cell[i] and i % 4 == 1:
            sx = radius_px * 1.2
            sy = radius_px / 3.0
        iy, ix = int(round(cy[i])), int(round(cx[i]))
        val = np.exp(-0.5 * ((oy / sy) ** 2 + (ox / sx) ** 2))
        if not is_cell[i] and i % 4 == 3:
            val = np.maximum(
                val, np.exp(-0.5 * (((oy - rad / 2) / sy) ** 2 + ((ox + rad / 2) / sx) ** 2))
            )
        yy, xx = oy + iy, ox + ix
        ok = (val >= 0.05) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        pix = (yy[ok] * w + xx[ok]).astype(np.int64)
        order = np.argsort(pix)
        indices.append(pix[order])
        data.append((val[ok] / val[ok].max())[order].astype(np.float32))
        indptr.append(indptr[-1] + int(ok.sum()))
    return sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.array(indptr)), shape=(len(cy), h * w)
    )


def _crops(fp: sp.csr_matrix, h: int, w: int) -> np.ndarray:
    """(n, 4) int32 windows (row0, row1, col0, col1): the footprint's extent +- 7 px."""
    n = fp.shape[0]
    rows = np.repeat(np.arange(n), np.diff(fp.indptr))
    rr, cc = fp.indices // w, fp.indices % w
    crops = np.empty((n, 4), np.int32)
    crops[:, 0] = np.maximum(_group_extreme(np.minimum, rr, rows, n) - 7, 0)
    crops[:, 1] = np.minimum(_group_extreme(np.maximum, rr, rows, n) + 8, h)
    crops[:, 2] = np.maximum(_group_extreme(np.minimum, cc, rows, n) - 7, 0)
    crops[:, 3] = np.minimum(_group_extreme(np.maximum, cc, rows, n) + 8, w)
    return crops


def _group_extreme(ufunc, values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Per-row minimum / maximum (``ufunc`` np.minimum / np.maximum) of ``values``, (n,)."""
    out = np.full(n, values.max() if ufunc is np.minimum else values.min(), dtype=np.int64)
    ufunc.at(out, rows, values)
    return out


def _block_traces(rng, is_cell, n_t: int, n_events: int, lo: int, hi: int):
    """Traces (n, T) float32 of one block (noise + planted transients for cells, noise + slow
    sine drift otherwise) and their events (n, n_events) int32 (-1 = none), cells' events
    ordered by decreasing amplitude."""
    n = len(is_cell)
    kernel = np.exp(-np.arange(60) / 10.0).astype(np.float32)
    traces = rng.standard_normal((n, n_t), dtype=np.float32)
    events = np.full((n, n_events), -1, dtype=np.int32)
    ramp = np.arange(n_t, dtype=np.float32)
    for i in range(n):
        if is_cell[i] and hi - lo > n_events:
            onsets = np.sort(rng.choice(np.arange(lo, hi), n_events, replace=False))
            amps = rng.uniform(8, 15, n_events).astype(np.float32)
            for on, a in zip(onsets, amps):
                seg = min(len(kernel), n_t - on)
                traces[i, on : on + seg] += a * kernel[:seg]
            events[i] = onsets[np.argsort(-amps, kind="stable")]
        else:
            period = np.float32(2 * np.pi / rng.uniform(200, 900))
            traces[i] += np.float32(3.0) * np.sin(ramp * period + np.float32(rng.uniform(0, 6)))
            events[i, 0] = int(np.argmax(traces[i, lo:hi])) + lo if hi > lo else -1
    return traces, events


def make_feature_store(
    path,
    n_candidates: int = 200,
    n_frames: int = 1000,
    *,
    height: int = 128,
    width: int = 128,
    n_events: int = 5,
    half_window: int = 5,
    radius_px: float = 3.0,
    seed: int = 0,
    source_metrics: bool = True,
    snapshot_dtype: str = "uint8",
    overwrite: bool = True,
) -> SortStore:
    """Write a store at ``path`` with ingest + preprocess outputs; returns it open (r+).

    ``schema.TRUTH_LABELS`` (+1 cell / -1 not) is written too; every array goes through the
    store's schema-checked writers, so the faker cannot drift from docs/store_schema.md.
    Traces: float32 (N, T), cells carry ``n_events`` planted transients (amplitude 8-15 noise
    sd, decay 10 frames). Traces and snapshots are generated and written in blocks of 4,096
    candidates, each from its own random stream, so memory stays O(block x T) whatever N is
    (100,000 x 10,000 builds in well under 2 GB).
    """
    rng = np.random.default_rng(seed)
    n, t, h, w = n_candidates, n_frames, height, width
    is_cell = np.arange(n) % 2 == 0
    margin = int(np.ceil(3 * radius_px)) + 1
    cy = rng.uniform(margin, h - margin, n)
    cx = rng.uniform(margin, w - margin, n)
    fp = _footprints(cy, cx, is_cell, h, w, radius_px)
    crops = _crops(fp, h, w)

    store = SortStore.create(path, overwrite=overwrite)
    store.update_attrs(n_candidates=n, n_frames=t, height=h, width=w)
    store.write_csr(schema.FOOTPRINTS, fp)
    store.write_array(schema.FOOTPRINT_PEAK, np.ones(n, np.float32))
    store.write_array(schema.IS_EMPTY, np.zeros(n, bool))
    store.write_array(schema.SOURCE_INDEX, np.arange(n, dtype=np.int64))
    if source_metrics:
        prob = np.clip(np.where(is_cell, 0.7, 0.3) + rng.normal(0, 0.2, n), 0, 1)
        store.write_source_metric("suite2p_iscell_prob", prob)
    store.write_array(schema.TRUTH_LABELS, np.where(is_cell, 1, -1).astype(np.int8))
    store.write_array(schema.CROPS, crops)

    n_fr = 2 * half_window + 1
    sizes = n_events * n_fr * (crops[:, 1] - crops[:, 0]) * (crops[:, 3] - crops[:, 2])
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    traces_out = store.create_array(schema.TRACES, (n, t), np.float32, units="a.u.")
    codes_out = store.create_array(schema.SNAPSHOTS_DATA, (int(offsets[-1]),), snapshot_dtype)
    events = np.full((n, n_events), -1, dtype=np.int32)
    frames = np.full((n, n_events, n_fr), -1, dtype=np.int32)
    snap_traces = np.zeros((n, n_events, n_fr), dtype=np.float32)
    scales = np.zeros((n, 2), np.float32)
    lo, hi = half_window + 2, t - half_window - 3 - 60 // 4
    streams = np.random.SeedSequence(seed).spawn(-(-n // _BLOCK))
    for k, b0 in enumerate(range(0, n, _BLOCK)):
        b1 = min(b0 + _BLOCK, n)
        block_rng = np.random.default_rng(streams[k])
        traces, events[b0:b1] = _block_traces(block_rng, is_cell[b0:b1], t, n_events, lo, hi)
        traces_out[b0:b1] = traces
        crop_fps = crop_footprints(fp[b0:b1], crops[b0:b1], w)
        codes = []
        for j, i in enumerate(range(b0, b1)):
            r0, r1, c0, c1 = (int(v) for v in crops[i])
            img = crop_fps[j]
            snap = block_rng.normal(10.0, 1.0, (n_events, n_fr, r1 - r0, c1 - c0))
            snap = snap.astype(np.float32)
            for e in range(n_events):
                if events[i, e] < 0:
                    snap[e] = 0
                    continue
                f = np.arange(events[i, e] - half_window, events[i, e] + half_window + 1)
                f = f[(f >= 0) & (f < t)]
                frames[i, e, : len(f)] = f
                snap_traces[i, e, : len(f)] = traces[j, f]
                snap[e, : len(f)] += traces[j, f][:, None, None] * img[None]
                snap[e, len(f) :] = 0
            block_codes, scales[i] = quantise(snap, snapshot_dtype)
            codes.append(block_codes.ravel())
        codes_out[offsets[b0] : offsets[b1]] = np.concatenate(codes)
    store.write_array(schema.EVENTS, events)
    store.write_array(schema.SNAPSHOT_TRACES, snap_traces, units="a.u.")
    store.write_array(schema.SNAPSHOTS_OFFSETS, offsets)
    store.write_array(schema.SNAPSHOTS_SCALE, scales)
    store.write_array(schema.SNAPSHOTS_FRAMES, frames)
    for stage in ("ingest", "preprocess"):
        store.begin_stage(stage, {"synthetic": True})
        store.finish_stage(stage, 0.0)
    return store
