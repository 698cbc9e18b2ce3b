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
    sd, decay 10 frames).
    """
    rng = np.random.default_rng(seed)
    n, t, h, w = n_candidates, n_frames, height, width
    is_cell = np.arange(n) % 2 == 0
    margin = int(np.ceil(3 * radius_px)) + 1
    cy = rng.uniform(margin, h - margin, n)
    cx = rng.uniform(margin, w - margin, n)

    # footprints: Gaussian disks (cells), elongated or two-body blobs (not cells)
    rad = int(np.ceil(3 * radius_px))
    oy, ox = np.mgrid[-rad : rad + 1, -rad : rad + 1]
    indptr, indices, data = [0], [], []
    for i in range(n):
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
    fp = sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.array(indptr)), shape=(n, h * w)
    )

    # traces (generated in float32 blocks: N x T may not fit twice in memory)
    kernel = np.exp(-np.arange(60) / 10.0).astype(np.float32)
    events = np.full((n, n_events), -1, dtype=np.int32)
    lo, hi = half_window + 2, t - half_window - 3 - len(kernel) // 4
    traces = np.empty((n, t), dtype=np.float32)
    for b0 in range(0, n, 4096):
        traces[b0 : b0 + 4096] = rng.standard_normal((min(4096, n - b0), t), dtype=np.float32)
    ramp = np.arange(t, dtype=np.float32)
    for i in range(n):
        if is_cell[i] and hi - lo > n_events:
            onsets = np.sort(rng.choice(np.arange(lo, hi), n_events, replace=False))
            amps = rng.uniform(8, 15, n_events).astype(np.float32)
            for on, a in zip(onsets, amps):
                seg = min(len(kernel), t - on)
                traces[i, on : on + seg] += a * kernel[:seg]
            order = np.argsort(-amps, kind="stable")
            events[i] = onsets[order]
        else:
            period = np.float32(2 * np.pi / rng.uniform(200, 900))
            traces[i] += np.float32(3.0) * np.sin(ramp * period + np.float32(rng.uniform(0, 6)))
            events[i, 0] = int(np.argmax(traces[i, lo:hi])) + lo if hi > lo else -1

    # crops (+-7 px around the footprint), snapshots, snapshot traces
    store = SortStore.create(path, overwrite=overwrite)
    store.update_attrs(n_candidates=n, n_frames=t, height=h, width=w)
    store.write_csr(schema.FOOTPRINTS, fp)
    store.write_array(schema.FOOTPRINT_PEAK, np.ones(n, np.float32))
    store.write_array(schema.TRACES, traces, units="a.u.")
    store.write_array(schema.IS_EMPTY, np.zeros(n, bool))
    store.write_array(schema.SOURCE_INDEX, np.arange(n, dtype=np.int64))
    if source_metrics:
        prob = np.clip(np.where(is_cell, 0.7, 0.3) + rng.normal(0, 0.2, n), 0, 1)
        store.write_source_metric("suite2p_iscell_prob", prob)
    store.write_array(schema.TRUTH_LABELS, np.where(is_cell, 1, -1).astype(np.int8))

    n_fr = 2 * half_window + 1
    crops = np.zeros((n, 4), dtype=np.int32)
    frames = np.full((n, n_events, n_fr), -1, dtype=np.int32)
    snap_traces = np.zeros((n, n_events, n_fr), dtype=np.float32)
    blocks, scales = [], np.zeros((n, 2), np.float32)
    for i in range(n):
        pix = fp.indices[fp.indptr[i] : fp.indptr[i + 1]]
        rr, cc = pix // w, pix % w
        crops[i] = (
            max(int(rr.min()) - 7, 0),
            min(int(rr.max()) + 8, h),
            max(int(cc.min()) - 7, 0),
            min(int(cc.max()) + 8, w),
        )
    crop_fps = crop_footprints(fp, crops, w)
    for i in range(n):
        r0, r1, c0, c1 = (int(v) for v in crops[i])
        img = crop_fps[i]
        snap = rng.normal(10.0, 1.0, (n_events, n_fr, r1 - r0, c1 - c0)).astype(np.float32)
        for e in range(n_events):
            if events[i, e] < 0:
                snap[e] = 0
                continue
            f = np.arange(events[i, e] - half_window, events[i, e] + half_window + 1)
            f = f[(f >= 0) & (f < t)]
            frames[i, e, : len(f)] = f
            snap_traces[i, e, : len(f)] = traces[i, f]
            snap[e, : len(f)] += traces[i, f][:, None, None] * img[None]
            snap[e, len(f) :] = 0
        codes, scales[i] = quantise(snap, snapshot_dtype)
        blocks.append(codes.ravel())
    offsets = np.concatenate([[0], np.cumsum([b.size for b in blocks])]).astype(np.int64)
    store.write_array(schema.CROPS, crops)
    store.write_array(schema.EVENTS, events)
    store.write_array(schema.SNAPSHOT_TRACES, snap_traces, units="a.u.")
    store.write_array(schema.SNAPSHOTS_DATA, np.concatenate(blocks))
    store.write_array(schema.SNAPSHOTS_OFFSETS, offsets)
    store.write_array(schema.SNAPSHOTS_SCALE, scales)
    store.write_array(schema.SNAPSHOTS_FRAMES, frames)
    for stage in ("ingest", "preprocess"):
        store.begin_stage(stage, {"synthetic": True})
        store.finish_stage(stage, 0.0)
    return store
