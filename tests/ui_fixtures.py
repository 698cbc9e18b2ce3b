"""Small sort stores for the page, export and benchmark tests, written directly with SortStore.

``make_test_store`` fills every array the page reads (docs/store_schema.md: ingest, preprocess,
features, truth) through the store's schema-checked writers, with the schema's dims and units,
for N disc-shaped candidates on a synthetic field of view. Half of them
(truth label +1) have a bright footprint, transient events and a feature vector shifted
along the first features, so a classifier can learn them from a few labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from actsort_gpu import schema
from actsort_gpu.store import SortStore, quantise

__all__ = ["make_test_store"]


def _disc_offsets(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    dr, dc = np.meshgrid(r, r, indexing="ij")
    keep = dr**2 + dc**2 <= radius**2
    return np.stack([dr[keep], dc[keep]], axis=1)


def _circle_outline(center: np.ndarray, radius: float, n_points: int = 16) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, n_points + 1)
    pts = np.stack([center[0] + radius * np.sin(angle), center[1] + radius * np.cos(angle)], 1)
    return np.round(pts).astype(np.float32)


def make_test_store(
    tmp_path: str | Path,
    n: int = 60,
    *,
    height: int = 96,
    width: int = 96,
    n_frames: int = 300,
    radius: int = 3,
    n_features: int = 12,
    seed: int = 0,
    name: str = "test.actsort",
    with_snapshots: bool = True,
) -> Path:
    """Write a complete synthetic store of ``n`` candidates and return its path."""
    rng = np.random.default_rng(seed)
    path = Path(tmp_path) / name
    store = SortStore.create(path, overwrite=True)
    fast = n > 5000  # benchmark stores: vectorised, identical snapshot blocks
    pad = radius + (2 if fast else 7)  # crop half-size (the real crop margin is 7 px)
    margin = pad + 1 if fast else radius + 2
    centers = (
        np.stack(
            [
                rng.uniform(margin, height - margin - 1, n),
                rng.uniform(margin, width - margin - 1, n),
            ],
            1,
        )
        .round()
        .astype(np.float32)
    )
    truth = np.where(np.arange(n) % 2 == 0, 1, -1).astype(np.int8)
    rng.shuffle(truth)

    # Footprints: discs with a radial profile, max-normalised.
    offs = _disc_offsets(radius)
    prof = (1.0 - 0.5 * np.sqrt((offs**2).sum(1)) / radius).astype(np.float32)
    rows = centers[:, 0].astype(np.int64)[:, None] + offs[None, :, 0]
    cols = centers[:, 1].astype(np.int64)[:, None] + offs[None, :, 1]
    pix = (rows * width + cols).ravel()
    data = np.tile(prof, n)
    indptr = np.arange(0, n * len(offs) + 1, len(offs))
    fp = sp.csr_matrix((data, pix, indptr), shape=(n, height * width))
    fp.sum_duplicates()
    store.write_csr(schema.FOOTPRINTS, fp)
    store.write_array(schema.FOOTPRINT_PEAK, np.ones(n, np.float32))
    store.write_array(schema.IS_EMPTY, np.zeros(n, bool))
    store.write_array(schema.SOURCE_INDEX, np.arange(n, dtype=np.int64))

    # Traces: noise plus transients for cells.
    t = np.arange(n_frames)
    traces = rng.normal(0, 0.1, (n, n_frames)).astype(np.float32)
    n_ev = 5
    events = np.full((n, n_ev), -1, np.int32)
    if fast:
        ev = np.sort(rng.integers(10, n_frames - 10, (n, n_ev)), axis=1).astype(np.int32)
        events[:] = ev
        events[truth < 0, 2:] = -1
        for e in range(n_ev):
            amp = np.where((truth > 0) | (e < 2), np.where(truth > 0, 1.5, 0.3), 0.0)
            on = t[None, :] >= ev[:, e : e + 1]
            traces += (
                amp[:, None] * on * np.exp(-np.clip(t[None, :] - ev[:, e : e + 1], 0, None) / 8.0)
            ).astype(np.float32)
    for i in range(0 if fast else n):
        k = n_ev if truth[i] > 0 else 2
        ev = np.sort(rng.choice(np.arange(10, n_frames - 10), k, replace=False))
        for e in ev:
            amp = 1.5 if truth[i] > 0 else 0.3
            traces[i] += amp * np.exp(-np.clip(t - e, 0, None) / 8.0) * (t >= e)
        order = np.argsort(-traces[i, ev])
        events[i, :k] = ev[order]
    store.write_array(schema.TRACES, traces, units="a.u.")

    # Field of view images.
    fov = rng.normal(10, 1, (height, width)).astype(np.float32)
    np.add.at(
        fov,
        (rows.ravel(), cols.ravel()),
        np.tile(prof, n) * np.repeat(np.where(truth > 0, 8.0, 3.0), len(offs)),
    )
    for key, name in schema.FOV_IMAGES.items():
        img = fov if key == "max" else fov * 0.5 if key == "mean" else fov / fov.max()
        store.write_array(name, img.astype(np.float32))

    # Geometry.
    store.write_array(schema.CENTERS, centers)
    crops = np.stack(
        [
            np.clip(centers[:, 0] - pad, 0, height),
            np.clip(centers[:, 0] + pad + 1, 0, height),
            np.clip(centers[:, 1] - pad, 0, width),
            np.clip(centers[:, 1] + pad + 1, 0, width),
        ],
        1,
    ).astype(np.int32)
    store.write_array(schema.CROPS, crops)
    outlines = [_circle_outline(c, radius) for c in centers]
    store.write_ragged(schema.OUTLINES, outlines)
    nbrs = [np.zeros(0, np.int32)] * n if fast else []
    for i in range(0 if fast else n):
        inside = (
            (centers[:, 0] > crops[i, 0])
            & (centers[:, 0] < crops[i, 1] - 1)
            & (centers[:, 1] > crops[i, 2])
            & (centers[:, 1] < crops[i, 3] - 1)
        )
        inside[i] = False
        nbrs.append(np.flatnonzero(inside).astype(np.int32))
    store.write_ragged(schema.NEIGHBORS, nbrs)
    store.write_array(schema.EVENTS, events)
    half = 5
    frames = np.where(events[:, :, None] >= 0, events[:, :, None] + np.arange(-half, half + 1), -1)
    frames = frames.astype(np.int32)
    st = np.where(frames >= 0, traces[np.arange(n)[:, None, None], np.clip(frames, 0, None)], 0)
    store.write_array(schema.SNAPSHOT_TRACES, st.astype(np.float32), units="a.u.")

    if with_snapshots and fast:
        h = w = 2 * pad + 1  # centres keep pad + 1 px from the edges: no clipped crop
        block = (
            np.clip(np.add.outer(np.arange(n_ev * (2 * half + 1)), np.arange(h * w)) % 255, 0, 255)
            .astype(np.uint8)
            .ravel()
        )
        offsets = np.arange(n + 1, dtype=np.int64) * block.size
        data = np.tile(block, n)
        store.write_array(schema.SNAPSHOTS_DATA, data)
        store.write_array(schema.SNAPSHOTS_OFFSETS, offsets)
        store.write_array(schema.SNAPSHOTS_SCALE, np.tile(np.array([0, 2], np.float32), (n, 1)))
        store.write_array(schema.SNAPSHOTS_FRAMES, frames)
        store.write_array(
            schema.SNAPSHOTS_CLIMS, np.tile(np.array([0, 1, 0.1, 0.99], np.float32), (n, 1))
        )
    elif with_snapshots:
        blocks, offsets, scale = [], [0], []
        for i in range(n):
            h = int(crops[i, 1] - crops[i, 0])
            w = int(crops[i, 3] - crops[i, 2])
            rr, cc = np.mgrid[crops[i, 0] : crops[i, 1], crops[i, 2] : crops[i, 3]]
            blob = np.exp(
                -((rr - centers[i, 0]) ** 2 + (cc - centers[i, 1]) ** 2) / (2 * radius**2)
            )
            amp = np.clip(st[i], 0, None)[:, :, None, None]
            block = 0.2 + amp * blob[None, None] + rng.normal(0, 0.05, (n_ev, 2 * half + 1, h, w))
            block[frames[i] < 0] = 0
            codes, lo_hi = quantise(block, np.uint8)
            blocks.append(codes.ravel())
            offsets.append(offsets[-1] + codes.size)
            scale.append(lo_hi)
        store.write_array(schema.SNAPSHOTS_DATA, np.concatenate(blocks))
        store.write_array(schema.SNAPSHOTS_OFFSETS, np.asarray(offsets, np.int64))
        store.write_array(schema.SNAPSHOTS_SCALE, np.asarray(scale, np.float32))
        store.write_array(schema.SNAPSHOTS_FRAMES, frames)
        clims = np.tile(np.array([0, 1, 0.1, 0.99], np.float32), (n, 1))
        store.write_array(schema.SNAPSHOTS_CLIMS, clims)

    feats = rng.normal(0, 1, (n, n_features)).astype(np.float32)
    feats[:, :3] += 2.0 * truth[:, None]
    names = [f"feature_{j}" for j in range(n_features)]
    names[:3] = ["snr", "event_rate", "tqm"]
    store.write_array(
        schema.FEATURE_MATRIX,
        feats,
        attrs={"names": names, "groups": ["synthetic"] * n_features, "version": "test"},
    )
    store.write_array(schema.TRUTH_LABELS, truth)
    store.update_attrs(
        n_candidates=n,
        n_frames=n_frames,
        height=height,
        width=width,
        movie={
            "path": "synthetic",
            "format": "synthetic",
            "n_frames": n_frames,
            "dtype": "float32",
            "fs_hz": 30.0,
            "temporal_downsample": 1,
        },
    )
    for stage in ("ingest", "preprocess", "features"):
        store.begin_stage(stage)
        store.finish_stage(stage, 0.0)
    return path
