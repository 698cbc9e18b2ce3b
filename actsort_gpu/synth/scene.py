"""The planted scene: sources in the movie, extraction candidates, spikes, slow signals.

Everything here is small (no per-pixel-per-frame arrays): footprints are sparse, spikes are
lists of frames, slow signals are sums of sinusoids evaluated on demand, so the movie can be
rendered chunk by chunk (:mod:`.render`).

Coordinates: the *canvas* is the field of view padded by ``pad`` px on each side (``pad`` =
ceil(motion_px)) so that rigid motion never wraps; candidate footprints live on the field of
view (height x width), flattened row-major (index = y * width + x).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .config import FP_KINDS, SynthConfig

log = logging.getLogger(__name__)

__all__ = ["Scene", "build_scene", "KINDS", "slow_signal"]

KINDS = ("cell",) + FP_KINDS
SUPPORT = 0.05  # footprint weights below this (of the max 1) are dropped


@dataclass
class Scene:
    """The planted truth. Shapes: S sources (movie), N candidates (extraction), P patches."""

    height: int
    width: int
    pad: int
    # sources (things that emit light in the movie): true cells, edge somata, dendrites,
    # fragments
    src_footprints: sp.csr_matrix  # (S, Hc*Wc) float32, max 1 per row, on the canvas
    src_brightness: np.ndarray  # (S,) float32 resting counts at the footprint max
    src_kind: np.ndarray  # (S,) str
    src_spike_frames: list  # S arrays of int64 frames (sorted, unique)
    src_spike_amps: list  # S arrays of float32 dF/F jumps
    src_decay_s: np.ndarray  # (S,) float32
    background: np.ndarray  # (Hc*Wc,) float32 counts (vignetted), without cells
    neuropil_fields: np.ndarray  # (P, Hc*Wc) float32, sum over P = 1 everywhere (approx.)
    neuropil_sig: dict  # sinusoid parameters, per patch
    drift_sig: dict  # sinusoid parameters, one signal
    motion: np.ndarray  # (T, 2) float32 (dy, dx) shift of each movie frame
    # candidates (already in the final, shuffled order)
    cand_footprints: sp.csr_matrix  # (N, H*W) float32, max 1 per row, on the field of view
    cand_kind: np.ndarray  # (N,) str
    cand_source: np.ndarray  # (N,) int: source index of cell/edge/dendrite/fragment, else -1
    cand_source_cell: np.ndarray  # (N,) int: candidate index of the true cell a
    #                                    duplicate/split/merged came from, else -1
    cand_source_cell2: np.ndarray  # (N,) int: second cell of a merged candidate, else -1
    cand_spike_frames: list  # N arrays: spikes of the source(s) behind each candidate

    @property
    def canvas_shape(self) -> tuple[int, int]:
        return self.height + 2 * self.pad, self.width + 2 * self.pad


def slow_signal(params: dict, t_s: np.ndarray) -> np.ndarray:
    """Sum of sinusoids. params: freq_hz, phase, amp each (K,) or (P, K). Returns (len(t), [P])."""
    f, ph, a = params["freq_hz"], params["phase"], params["amp"]
    arg = 2 * np.pi * t_s[:, None, None] * f[None] + ph[None]  # (t, P, K)
    return (a[None] * np.sin(arg)).sum(-1).astype(np.float32)


def _sinusoids(rng, shape, lo_hz, hi_hz):
    k = shape[-1]
    return dict(
        freq_hz=np.exp(rng.uniform(np.log(lo_hz), np.log(hi_hz), shape)),
        phase=rng.uniform(0, 2 * np.pi, shape),
        amp=np.full(shape, 1 / math.sqrt(k / 2)),
    )


def _blob(cy, cx, a, b, theta, shape, rng, nucleus=False, irregular=0.08):
    """A soma-like flat-topped ellipse, semi-axes a, b px. Returns (flat_idx, weights)."""
    hh, ww = shape
    r = int(math.ceil(max(a, b) * 1.3)) + 1
    y0, y1 = max(0, int(cy) - r), min(hh, int(cy) + r + 2)
    x0, x1 = max(0, int(cx) - r), min(ww, int(cx) + r + 2)
    if y0 >= y1 or x0 >= x1:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(theta), math.sin(theta)
    u, v = (c * dx + s * dy) / a, (-s * dx + c * dy) / b
    rn = np.hypot(u, v)
    phi = np.arctan2(v, u)
    h = rng.uniform(0, 2 * np.pi, 2)
    rn = rn / (1 + irregular * np.cos(2 * phi + h[0]) + irregular / 2 * np.cos(3 * phi + h[1]))
    w = np.exp(-0.5 * (rn / 0.62) ** 4)
    if nucleus:
        w *= 1 - 0.6 * np.exp(-((rn / 0.35) ** 2))
    return _pack(yy, xx, w, ww)


def _pack(yy, xx, w, width):
    w = w / w.max() if w.size and w.max() > 0 else w
    keep = w >= SUPPORT
    return (yy[keep] * width + xx[keep]).astype(np.int64), w[keep].astype(np.float32)


def _dendrite(cy, cx, length, sigma, shape, rng):
    """A thin curved process (quadratic Bezier), Gaussian cross-section sigma px."""
    ang = rng.uniform(0, np.pi)
    d = np.array([math.sin(ang), math.cos(ang)]) * length / 2
    p0, p2 = np.array([cy, cx]) - d, np.array([cy, cx]) + d
    p1 = np.array([cy, cx]) + rng.normal(0, length / 4, 2)
    t = np.linspace(0, 1, int(length * 2))[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    hh, ww = shape
    m = 3 * sigma + 1
    y0, y1 = max(0, int(pts[:, 0].min() - m)), min(hh, int(pts[:, 0].max() + m) + 1)
    x0, x1 = max(0, int(pts[:, 1].min() - m)), min(ww, int(pts[:, 1].max() + m) + 1)
    if y0 >= y1 or x0 >= x1:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d2 = ((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2).min(-1)
    w = np.exp(-d2 / (2 * sigma**2)) * (1 + 0.3 * rng.standard_normal(d2.shape)).clip(0.5, 1.5)
    return _pack(yy, xx, w, ww)


def _fragment(rng, height, width, pad):
    """A small piece of neurite on the canvas, centred >= 8 px inside the view (less on tiny
    views; pixels that fall outside are dropped with the view): half of the time a short
    curved process (5-14 px long, sigma 0.7-1.2 px), else a bouton-like blob (radius 1.5-3.5
    px). Areas of roughly 5-70 px above the support threshold. Returns (flat_idx, weights)."""
    m = min(8.0, height / 4, width / 4)
    y, x = rng.uniform(m, height - m), rng.uniform(m, width - m)
    shape = (height + 2 * pad, width + 2 * pad)
    if rng.random() < 0.5:
        return _dendrite(y + pad, x + pad, rng.uniform(5, 14), rng.uniform(0.7, 1.2), shape, rng)
    r = rng.uniform(1.5, 3.5)
    th = rng.uniform(0, np.pi)
    return _blob(y + pad, x + pad, r, r * rng.uniform(0.5, 1), th, shape, rng, irregular=0.25)


def _to_fov(idx, w, pad, canvas_w, height, width):
    """Canvas (flat) -> field-of-view (flat) footprint, dropping pixels outside the view."""
    y, x = idx // canvas_w - pad, idx % canvas_w - pad
    keep = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    return (y[keep] * width + x[keep]).astype(np.int64), w[keep]


def _renorm(idx, w):
    if w.size == 0:
        return idx, w
    w = w / w.max()
    keep = w >= SUPPORT
    return idx[keep], w[keep].astype(np.float32)


def _spikes(rng, cfg: SynthConfig, rate_hz, amp):
    n = rng.poisson(rate_hz * cfg.n_frames / cfg.fs_hz)
    frames = rng.integers(0, cfg.n_frames, n)
    amps = (amp * rng.lognormal(0, 0.2, n)).clip(*cfg.amplitude_dff).astype(np.float32)
    uniq, inv = np.unique(frames, return_inverse=True)
    summed = np.zeros(uniq.size, np.float32)
    np.add.at(summed, inv, amps)
    return uniq.astype(np.int64), summed


def _place(rng, n, lo, hi, radii, taken, spacing=0.85, tries=200):
    """Place n centres uniformly in [lo, hi) (y, x) avoiding `taken` [(y, x, r)]."""
    out = []
    for i in range(n):
        r = radii[i]
        for _ in range(tries):
            y, x = rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])
            if all(
                (y - ty) ** 2 + (x - tx) ** 2 >= (spacing * (r + tr)) ** 2 for ty, tx, tr in taken
            ):
                break
        out.append((y, x, r))
        taken.append((y, x, r))
    return out


def build_scene(cfg: SynthConfig) -> Scene:
    """Draw the whole scene from ``cfg.seed`` (deterministic)."""
    rng = np.random.default_rng([cfg.seed, 1])
    H, W, T = cfg.height, cfg.width, cfg.n_frames
    pad = int(math.ceil(cfg.motion_px))
    Hc, Wc = H + 2 * pad, W + 2 * pad
    counts = cfg.fp_counts()
    dmin, dmax = cfg.diameter_px

    src_fp, src_kind, src_bright, src_spk, src_amp, src_decay = [], [], [], [], [], []

    def add_source(kind, idx, w, bright, rate_scale=1.0):
        rate = math.exp(rng.uniform(*np.log(cfg.rate_hz))) * rate_scale
        amp = rng.uniform(*cfg.amplitude_dff)
        f, a = _spikes(rng, cfg, rate, amp)
        src_fp.append((idx, w))
        src_kind.append(kind)
        src_bright.append(bright)
        src_spk.append(f)
        src_amp.append(a)
        src_decay.append(rng.uniform(*cfg.decay_s))
        return len(src_fp) - 1

    # true cells: somata fully inside the view
    taken = []
    radii = rng.uniform(dmin, dmax, cfg.n_cells) / 2
    cells = _place(
        rng,
        cfg.n_cells,
        (dmax / 2 + 1, dmax / 2 + 1),
        (H - dmax / 2 - 1, W - dmax / 2 - 1),
        radii,
        taken,
    )
    cell_geom = []
    for y, x, r in cells:
        e = rng.uniform(0.75, 1.0)
        geom = (
            y,
            x,
            r,
            r * e,
            rng.uniform(0, np.pi),
            rng.random() < cfg.nucleus_fraction,
            int(rng.integers(1 << 31)),
        )
        idx, w = _blob(
            y + pad, x + pad, *geom[2:5], (Hc, Wc), np.random.default_rng(geom[6]), nucleus=geom[5]
        )
        cell_geom.append(geom)
        add_source("cell", idx, w, rng.uniform(*cfg.brightness_counts))
    # edge somata: centre within half a radius of a border (partly outside the view)
    edge_src = []
    for _ in range(counts["edge"]):
        r = rng.uniform(dmin, dmax) / 2
        side = rng.integers(4)
        along = rng.uniform(r, (H if side < 2 else W) - r)
        depth = rng.uniform(-0.3 * r, 0.5 * r)
        y, x = [(depth, along), (H - 1 - depth, along), (along, depth), (along, W - 1 - depth)][
            side
        ]
        idx, w = _blob(
            y + pad, x + pad, r, r * rng.uniform(0.75, 1), rng.uniform(0, np.pi), (Hc, Wc), rng
        )
        taken.append((y, x, r))
        edge_src.append(add_source("edge", idx, w, rng.uniform(*cfg.brightness_counts)))
    # dendrites: long thin processes with their own transients
    dend_src = []
    for _ in range(counts["dendrite"]):
        y, x = rng.uniform(10, H - 10), rng.uniform(10, W - 10)
        idx, w = _dendrite(
            y + pad, x + pad, rng.uniform(25, 60), rng.uniform(0.9, 1.6), (Hc, Wc), rng
        )
        dend_src.append(add_source("dendrite", idx, w, 0.6 * rng.uniform(*cfg.brightness_counts)))
    # fragments: small active pieces of neurite (a short process or a bouton-sized blob)
    frag_src = [
        add_source("fragment", *_fragment(rng, H, W, pad), rng.uniform(*cfg.brightness_counts))
        for _ in range(counts["fragment"])
    ]

    S = len(src_fp)
    rows = np.repeat(np.arange(S), [len(i) for i, _ in src_fp])
    src_csr = sp.csr_matrix(
        (
            np.concatenate([w for _, w in src_fp] + [np.zeros(0, np.float32)]),
            (rows, np.concatenate([i for i, _ in src_fp] + [np.zeros(0, np.int64)])),
        ),
        shape=(S, Hc * Wc),
        dtype=np.float32,
    )

    # candidates in planted order, shuffled at the end
    c_fp, c_kind, c_src, c_cell, c_cell2 = [], [], [], [], []

    def add_cand(kind, idx, w, src=-1, cell=-1, cell2=-1):
        c_fp.append(_renorm(idx, w))
        c_kind.append(kind)
        c_src.append(src)
        c_cell.append(cell)
        c_cell2.append(cell2)

    fov = [_to_fov(i, w, pad, Wc, H, W) for i, w in src_fp]
    for s in range(cfg.n_cells):
        add_cand("cell", *fov[s], src=s)
    for s in edge_src:
        add_cand("edge", *fov[s], src=s)
    for s in dend_src:
        add_cand("dendrite", *fov[s], src=s)
    for s in frag_src:
        add_cand("fragment", *fov[s], src=s)
    if cfg.n_cells == 0:
        for k in ("duplicate", "split", "merged"):
            counts["noise"] += counts[k]
            counts[k] = 0
    for _ in range(counts["duplicate"]):
        c = int(rng.integers(cfg.n_cells))
        y, x, a, b, th, nuc, seed = cell_geom[c]
        sy, sx = rng.choice([-1, 1], 2) * rng.uniform(1, 3, 2)
        sc = rng.uniform(0.85, 1.15)
        idx, w = _blob(
            y + sy, x + sx, a * sc, b * sc, th, (H, W), np.random.default_rng(seed), nucleus=nuc
        )
        add_cand("duplicate", idx, w, cell=c)
    for _ in range(counts["split"]):
        c = int(rng.integers(cfg.n_cells))
        idx, w = fov[c]
        y, x = cell_geom[c][:2]
        ang = rng.uniform(0, 2 * np.pi)
        side = (idx // W - y) * math.sin(ang) + (idx % W - x) * math.cos(ang)
        keep = side > rng.uniform(-1, 1)
        add_cand("split", idx[keep], w[keep], cell=c)
    if counts["merged"]:
        cen = np.array([g[:2] for g in cell_geom])
        d2 = ((cen[:, None] - cen[None]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        nn = d2.argmin(1)
        order = np.argsort(d2[np.arange(len(nn)), nn])  # closest pairs first
        for k in range(counts["merged"]):
            c = int(order[k % len(order)]) if len(order) > 1 else 0
            c2 = int(nn[c]) if len(order) > 1 else 0
            dense = np.zeros(H * W, np.float32)
            for cc in (c, c2):
                np.maximum.at(dense, fov[cc][0], fov[cc][1])
            idx = np.flatnonzero(dense)
            add_cand("merged", idx, dense[idx], cell=c, cell2=c2)
    for _ in range(counts["neuropil"]):
        y, x = rng.uniform(0, H), rng.uniform(0, W)
        sg = rng.uniform(7, 13)
        r = int(3 * sg)
        yy, xx = np.mgrid[
            max(0, int(y) - r) : min(H, int(y) + r + 1), max(0, int(x) - r) : min(W, int(x) + r + 1)
        ]
        wgt = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sg**2))
        wgt *= 1 + 0.2 * rng.standard_normal(wgt.shape)
        add_cand("neuropil", *_pack(yy, xx, wgt, W))
    occupied = np.asarray(src_csr.sum(0)).ravel().reshape(Hc, Wc)[pad : pad + H, pad : pad + W] > 0
    for _ in range(counts["noise"]):
        r = rng.uniform(dmin * 0.7, dmax) / 2
        for _try in range(100):
            y, x = rng.uniform(r + 1, H - r - 1), rng.uniform(r + 1, W - r - 1)
            idx, w = _blob(
                y, x, r, r * rng.uniform(0.6, 1), rng.uniform(0, np.pi), (H, W), rng, irregular=0.25
            )
            if not occupied.ravel()[idx].any():
                break
        add_cand("noise", idx, w)

    N = len(c_fp)
    perm = rng.permutation(N)  # new position -> planted index
    where = np.empty(N, np.int64)
    where[perm] = np.arange(N)  # planted -> new
    cell_cand = where[: cfg.n_cells]  # true cell c -> candidate index
    c_src, c_cell, c_cell2 = np.array(c_src), np.array(c_cell), np.array(c_cell2)
    to_cand = lambda a: np.where(a >= 0, cell_cand[np.maximum(a, 0)] if cfg.n_cells else -1, -1)
    rows = np.repeat(np.arange(N), [len(c_fp[p][0]) for p in perm])
    cand_csr = sp.csr_matrix(
        (
            np.concatenate([c_fp[p][1] for p in perm] + [np.zeros(0, np.float32)]),
            (rows, np.concatenate([c_fp[p][0] for p in perm] + [np.zeros(0, np.int64)])),
        ),
        shape=(N, H * W),
        dtype=np.float32,
    )
    cand_csr.sort_indices()
    kind = np.array(c_kind)[perm]
    src = c_src[perm]
    cell1, cell2 = to_cand(c_cell)[perm], to_cand(c_cell2)[perm]
    spikes = []
    for p in perm:
        if c_src[p] >= 0:
            spikes.append(src_spk[c_src[p]])
        elif c_cell[p] >= 0:
            fr = src_spk[c_cell[p]]
            if c_cell2[p] >= 0 and c_cell2[p] != c_cell[p]:
                fr = np.union1d(fr, src_spk[c_cell2[p]])
            spikes.append(fr)
        else:
            spikes.append(np.zeros(0, np.int64))

    # background (vignetted), neuropil patches, slow signals, motion
    yy, xx = np.mgrid[0:Hc, 0:Wc].astype(np.float32)
    rr = ((yy - Hc / 2) ** 2 + (xx - Wc / 2) ** 2) / ((Hc / 2) ** 2 + (Wc / 2) ** 2)
    background = (cfg.background_counts * (1 - 0.3 * rr)).ravel().astype(np.float32)
    P = max(cfg.n_neuropil_patches, 1)
    g = int(math.ceil(math.sqrt(P)))
    cy = (np.arange(P) // g + 0.5) * Hc / g + rng.normal(0, Hc / g / 6, P)
    cx = (np.arange(P) % g + 0.5) * Wc / g + rng.normal(0, Wc / g / 6, P)
    sig = max(Hc, Wc) / g / 1.5
    fields_ = np.exp(
        -((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / (2 * sig**2)
    )
    fields_ = (fields_ / fields_.sum(0, keepdims=True)).reshape(P, -1).astype(np.float32)
    neuropil_sig = _sinusoids(rng, (P, 6), 1 / 60, 1 / 3)
    drift_sig = _sinusoids(rng, (1, 4), 1 / 600, 1 / 60)
    if cfg.motion_px > 0:
        walk = np.cumsum(rng.standard_normal((T, 2)), 0)
        k = max(1, int(cfg.fs_hz))
        walk = np.apply_along_axis(lambda v: np.convolve(v, np.ones(k) / k, "same"), 0, walk)
        walk -= walk.mean(0)
        walk *= cfg.motion_px / max(np.abs(walk).max(), 1e-9)
        motion = walk if cfg.motion_subpixel else np.rint(walk)
    else:
        motion = np.zeros((T, 2))
    log.debug("scene: %d sources, %d candidates, kinds %s", S, N, counts)
    return Scene(
        H,
        W,
        pad,
        src_csr,
        np.array(src_bright, np.float32),
        np.array(src_kind),
        src_spk,
        src_amp,
        np.array(src_decay, np.float32),
        background,
        fields_,
        neuropil_sig,
        drift_sig,
        motion.astype(np.float32),
        cand_csr,
        kind,
        src,
        cell1,
        cell2,
        spikes,
    )
